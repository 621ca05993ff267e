//! Records the version of the Rust compiler that builds fleetscore, for the
//! `rustc` label of `fleetscore_build_info` on `/metrics`.

use std::process::Command;

fn main() {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    // `rustc 1.94.0 (4a4ef493e 2026-03-02)`: the version is the second word.
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=FLEETSCORE_RUSTC_VERSION={version}");
    // A new compiler rebuilds everything anyway; the commit label comes
    // from FLEETSCORE_COMMIT (read with option_env!, which cargo tracks).
    println!("cargo:rerun-if-changed=build.rs");
}
