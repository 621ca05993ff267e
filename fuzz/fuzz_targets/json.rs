//! Fuzzes `fleetscore_codecs::parse_json`, the body of `POST /v1/ingest`
//! with a JSON, JSON array or NDJSON content type (from any client on the
//! network). The whole input is the body.
//!
//! Besides "no panic", every result must keep the invariants of
//! `fleetscore_fuzz` (accepted: every reading passes the one policy and
//! round-trips through all three body formats; refused: at most
//! `MAX_REPORTED_ERRORS` problems, each naming a line, an array element
//! that exists, or the body).
#![no_main]

use fleetscore_codecs::parse_json;
use fleetscore_core::TsUnit;
use fleetscore_fuzz::{check_batch, check_heap, check_refusal, check_round_trips, measure, Places};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let (result, heap) = measure(|| parse_json(body, TsUnit::Nanos));
    check_heap(heap, body.len());
    match result {
        Ok(batch) => {
            check_batch(&batch, body.len());
            check_round_trips(&batch);
        }
        Err(e) => check_refusal(&e, body, Places::Json),
    }
});
