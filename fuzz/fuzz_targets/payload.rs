//! Fuzzes `fleetscore_codecs::decode_payload`, the payload of an MQTT (or
//! Kafka) message: bytes from any device that can publish to the broker.
//!
//! The first byte picks the settings (format, timestamp unit, whether the
//! topic names a device and a tag); the rest is the payload. Besides "no
//! panic": a message is all or nothing (nothing pushed on an error), and
//! what is pushed meets the invariants of `fleetscore_fuzz`.
#![no_main]

use fleetscore_codecs::{
    decode_payload, Batch, CsvBodyConfig, LineProtocolConfig, MessageMeta, PayloadConfig,
    PayloadFormat,
};
use fleetscore_core::{ReadingsBuilder, TsUnit};
use fleetscore_fuzz::{check_batch, check_heap, measure};
use libfuzzer_sys::fuzz_target;

const FORMATS: [PayloadFormat; 5] = [
    PayloadFormat::Auto,
    PayloadFormat::Json,
    PayloadFormat::Number,
    PayloadFormat::LineProtocol,
    PayloadFormat::Csv,
];
const UNITS: [TsUnit; 5] = [
    TsUnit::Auto,
    TsUnit::Seconds,
    TsUnit::Millis,
    TsUnit::Micros,
    TsUnit::Nanos,
];

fuzz_target!(|data: &[u8]| {
    let Some((&settings, payload)) = data.split_first() else {
        return;
    };
    let config = PayloadConfig {
        format: FORMATS[usize::from(settings & 0b111) % FORMATS.len()],
        ts_unit: UNITS[usize::from((settings >> 3) & 0b111) % UNITS.len()],
        ..PayloadConfig::default()
    };
    let meta = MessageMeta {
        device: (settings & 0b0100_0000 != 0).then_some("d"),
        tag: (settings & 0b1000_0000 != 0).then_some("t"),
        arrival_ns: 1_535_497_205_000_000_000,
    };
    let mut out = ReadingsBuilder::new();
    let (result, heap) = measure(|| {
        decode_payload(
            payload,
            &meta,
            &config,
            &LineProtocolConfig::default(),
            &CsvBodyConfig::default(),
            &mut out,
        )
    });
    check_heap(heap, payload.len());
    let readings = out.finish();
    match result {
        Ok(n) => {
            assert!(n > 0, "a message read as no reading was not refused");
            assert_eq!(readings.len(), n, "readings pushed vs counted");
            let batch = Batch {
                readings,
                ..Batch::default()
            };
            check_batch(&batch, payload.len().max(1));
        }
        Err(e) => {
            assert!(
                readings.is_empty(),
                "a refused message pushed {} readings",
                readings.len()
            );
            assert!(!e.message.trim().is_empty(), "a refusal without a reason");
        }
    }
});
