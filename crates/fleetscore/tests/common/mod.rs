//! Helpers shared by the integration tests that run the real binary.
#![allow(dead_code)] // each test file uses a subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `fleetscore` binary under test.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fleetscore"))
}

/// Runs `fleetscore --data DATA --quiet ARGS…`, echoing what it printed.
pub fn run(data: &Path, args: &[&str]) -> Output {
    let out = bin()
        .arg("--data")
        .arg(data)
        .arg("--quiet")
        .args(args)
        .output()
        .unwrap();
    eprintln!(
        "$ fleetscore {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Appends every `.parquet` file under `dir` (recursively) to `out`.
pub fn parquet_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            parquet_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
}
