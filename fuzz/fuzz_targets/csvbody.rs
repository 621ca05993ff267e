//! Fuzzes `fleetscore_codecs::parse_csv_body`, the body of `POST
//! /v1/ingest` with a CSV content type (from any client on the network).
//!
//! The first byte picks the `[ingest.csv]` column mapping (header or not,
//! columns by name or position and in which order, a fixed device or tag,
//! extra columns refused or ignored); the rest is the body. Besides "no
//! panic", every result must keep the invariants of `fleetscore_fuzz`
//! (accepted: every reading passes the one policy and round-trips through
//! all three body formats; refused: at most `MAX_REPORTED_ERRORS` problems,
//! each naming a line of the body or the body).
#![no_main]

use fleetscore_codecs::{parse_csv_body, Column, CsvBodyConfig, ExtraColumns};
use fleetscore_fuzz::{check_batch, check_heap, check_refusal, check_round_trips, measure, Places};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&settings, body)) = data.split_first() else {
        return;
    };
    let mut config = CsvBodyConfig {
        header: settings & 1 == 0,
        extra_columns: if settings & 0b10 == 0 {
            ExtraColumns::Refuse
        } else {
            ExtraColumns::Ignore
        },
        fixed_device: (settings & 0b100 != 0).then(|| "pump-1".to_owned()),
        fixed_tag: (settings & 0b1000 != 0).then(|| "temp".to_owned()),
        ..CsvBodyConfig::default()
    };
    if settings & 0b1_0000 != 0 {
        // By position, in one of four rotations of TS, Device, Tag, Value.
        let r = usize::from(settings >> 5) % 4;
        let at = |i: usize| Column::Index((i + r) % 4);
        (config.ts, config.device, config.tag, config.value) = (at(0), at(1), at(2), at(3));
    }
    let (result, heap) = measure(|| parse_csv_body(body, &config));
    check_heap(heap, body.len());
    match result {
        Ok(batch) => {
            check_batch(&batch, body.len());
            check_round_trips(&batch);
        }
        Err(e) => check_refusal(&e, body, Places::LinesOrBody),
    }
});
