//! Regression tests for importer bugs, named after the bug. The inputs were
//! written by `fuzz/review_findings.py` (found by reading the code during
//! the first fuzz campaign); each must be refused quickly, never panic.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fleetscore_models::import_sklearn;

fn refused(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/regression")
        .join(name);
    let bytes = std::fs::read(&p).unwrap();
    let t = Instant::now();
    let e = import_sklearn(&bytes).expect_err(name).to_string();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "{name} took {:?}",
        t.elapsed()
    );
    e
}

#[test]
fn dtype_wider_than_8_bytes_is_refused_not_a_panic() {
    let e = refused("f16.pkl");
    assert!(e.contains("not a supported numeric type"), "{e}");
}

#[test]
fn zero_width_fortran_array_is_refused_not_a_panic() {
    let e = refused("s0_fortran.pkl");
    assert!(e.contains("not a supported numeric type"), "{e}");
}

#[test]
fn shared_sub_pipelines_do_not_explode_the_walk() {
    let e = refused("fanout_8.pkl");
    assert!(e.contains("pipeline steps"), "{e}");
}

#[test]
fn repeated_copies_of_a_memoised_tuple_are_bounded() {
    let e = refused("copies_20k.pkl");
    assert!(e.contains("memory bomb"), "{e}");
}
