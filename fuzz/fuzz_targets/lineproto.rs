//! Fuzzes `fleetscore_codecs::parse_line_protocol`, the body of
//! `POST /write` and `/api/v2/write` (InfluxDB line protocol, from any
//! client on the network).
//!
//! The first byte picks the request's settings (precision, device tag,
//! measurement prefix, booleans, arrival time, all-or-nothing or partial
//! write); the rest is the body.
//! Besides "no panic", every result must keep the invariants of
//! `fleetscore_fuzz` (accepted: every reading passes the one policy and
//! round-trips through all three body formats; refused: at most
//! `MAX_REPORTED_ERRORS` problems, each naming a line of the body).
#![no_main]

use fleetscore_codecs::{
    parse_line_protocol, parse_line_protocol_partial, BoolFields, LineProtocolConfig, Precision,
};
use fleetscore_fuzz::{check_batch, check_heap, check_refusal, check_round_trips, measure, Places};
use libfuzzer_sys::fuzz_target;

const PRECISIONS: [Precision; 6] = [
    Precision::Nanoseconds,
    Precision::Microseconds,
    Precision::Milliseconds,
    Precision::Seconds,
    Precision::Minutes,
    Precision::Hours,
];

fuzz_target!(|data: &[u8]| {
    let Some((&settings, body)) = data.split_first() else {
        return;
    };
    let precision = PRECISIONS[usize::from(settings & 0b111) % PRECISIONS.len()];
    let config = LineProtocolConfig {
        device_tag: if settings & 0b1000 == 0 {
            "device"
        } else {
            "host"
        }
        .into(),
        prefix_measurement: settings & 0b1_0000 != 0,
        booleans: if settings & 0b10_0000 == 0 {
            BoolFields::Number
        } else {
            BoolFields::Skip
        },
    };
    // A line without a timestamp takes the arrival time; one outside the
    // accepted range must refuse such lines, not store them.
    let arrival_ns = if settings & 0b100_0000 == 0 {
        1_535_497_205_000_000_000
    } else {
        i64::MAX
    };
    if settings & 0b1000_0000 != 0 {
        // `[ingest] bad_lines = "skip"`: the good lines kept, the bad ones
        // listed; what is kept meets the same invariants.
        let (partial, heap) =
            measure(|| parse_line_protocol_partial(body, precision, arrival_ns, &config));
        check_heap(heap, body.len());
        check_batch(&partial.batch, body.len());
        check_round_trips(&partial.batch);
        if let Some(bad) = &partial.bad {
            check_refusal(bad, body, Places::Lines);
        }
        return;
    }
    let (result, heap) = measure(|| parse_line_protocol(body, precision, arrival_ns, &config));
    check_heap(heap, body.len());
    match result {
        Ok(batch) => {
            check_batch(&batch, body.len());
            check_round_trips(&batch);
        }
        Err(e) => check_refusal(&e, body, Places::Lines),
    }
});
