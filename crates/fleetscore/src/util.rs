//! Shared plumbing of the commands: logging, the store, progress, time.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use fleetscore_core::format_ts;
use fleetscore_store::{Registry, Store};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::Global;

/// The object-store root: `--store`, else `DATA/store`.
pub fn store_url(g: &Global) -> String {
    match &g.store {
        Some(s) => s.clone(),
        None => g.data.join("store").to_string_lossy().into_owned(),
    }
}

/// The object store, its retries from the config's `[store]` (overridden
/// by `FLEETSCORE_STORE_…` variables, as the store reads them).
pub fn store(g: &Global) -> anyhow::Result<Store> {
    let url = store_url(g);
    let retry = crate::config::load(g.config.as_deref())?
        .store
        .retry_settings();
    Store::open_with(&url, &retry).with_context(|| format!("opening the store {url}"))
}

pub fn registry(g: &Global) -> anyhow::Result<Registry> {
    Ok(Registry::new(store(g)?))
}

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

pub fn now_rfc3339() -> String {
    format_ts(now_ns())
}

/// A progress bar on stderr (hidden when stderr is not a terminal or with
/// --quiet).
pub fn progress(g: &Global, len: u64, what: &str) -> ProgressBar {
    if g.quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {human_pos}/{human_len} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Seconds with millisecond precision, for summaries.
pub fn secs(d: std::time::Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

/// The job store: `--db`, else the config's `[jobs] db`, else
/// `sqlite://DATA/fleetscore.db`.
pub async fn job_store(
    g: &Global,
) -> anyhow::Result<std::sync::Arc<dyn fleetscore_jobs::db::JobStore>> {
    job_store_with(g, fleetscore_jobs::db::Commits::Durable).await
}

/// [`job_store`] whose PostgreSQL commits wait for the disk or not (see
/// [`fleetscore_jobs::db::Commits`]).
pub async fn job_store_with(
    g: &Global,
    commits: fleetscore_jobs::db::Commits,
) -> anyhow::Result<std::sync::Arc<dyn fleetscore_jobs::db::JobStore>> {
    let url = match &g.db {
        Some(u) => u.clone(),
        None => match crate::config::load(g.config.as_deref())?.jobs.db {
            Some(u) => u,
            None => format!("sqlite://{}", g.data.join("fleetscore.db").display()),
        },
    };
    // The error names the store and says why.
    let db = fleetscore_jobs::db::SqlStore::open_with(&url, commits).await?;
    Ok(std::sync::Arc::new(db))
}

/// CPU numbers `--cpus` can name: Linux's `CPU_SETSIZE`.
const MAX_CPUS: usize = 1024;

/// The CPU numbers of a list such as `0`, `0,2` or `0-3,6`.
pub fn parse_cpus(list: &str) -> anyhow::Result<Vec<usize>> {
    let bad = |part: &str, why: &str| {
        anyhow::anyhow!("--cpus {list:?}: {part:?} {why} (expected CPU numbers like 0, 0,2 or 0-3)")
    };
    let num = |s: &str, part: &str| match s.trim().parse::<usize>() {
        Ok(n) if n < MAX_CPUS => Ok(n),
        Ok(_) => Err(bad(part, "names a CPU beyond the 1024 a CPU set can hold")),
        Err(_) => Err(bad(part, "is not a CPU number")),
    };
    let mut cpus = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a, part)?, num(b, part)?);
                if a > b {
                    return Err(bad(part, "is a range that ends before it starts"));
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(num(part, part)?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// Confines this process to the CPUs of `list` ([`parse_cpus`]). Called
/// before any other thread starts, so every thread it starts later (the
/// runtime's, the scoring threads) inherits the set.
#[cfg(target_os = "linux")]
pub fn pin_to_cpus(list: &str) -> anyhow::Result<()> {
    let cpus = parse_cpus(list)?;
    // SAFETY: `set` is a plain bitmask, zeroed, then filled with CPU_SET
    // within its size; sched_setaffinity reads it for this thread (0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let room = 8 * std::mem::size_of::<libc::cpu_set_t>();
        for &c in &cpus {
            anyhow::ensure!(
                c < room,
                "--cpus {list:?}: CPU {c} is beyond the {room} this build can address"
            );
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            let e = std::io::Error::last_os_error();
            anyhow::bail!(
                "--cpus {list:?}: the system refused ({e}); this process may run on CPU(s) {}",
                allowed_cpus().unwrap_or_else(|| "(unknown)".into())
            );
        }
    }
    Ok(())
}

/// The CPUs this process may run on, as the kernel lists them
/// (`Cpus_allowed_list` of /proc/self/status, e.g. `0-1`).
#[cfg(target_os = "linux")]
fn allowed_cpus() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|l| l.trim().to_string())
}

/// See the Linux version: elsewhere `--cpus` is refused.
#[cfg(not(target_os = "linux"))]
pub fn pin_to_cpus(list: &str) -> anyhow::Result<()> {
    parse_cpus(list)?;
    anyhow::bail!("--cpus is only supported on Linux")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpus("0").unwrap(), vec![0]);
        assert_eq!(parse_cpus("3,1, 1").unwrap(), vec![1, 3]);
        assert_eq!(parse_cpus("0-2,6").unwrap(), vec![0, 1, 2, 6]);
        let e = parse_cpus("0,x").unwrap_err().to_string();
        assert!(e.contains("\"x\" is not a CPU number"), "{e}");
        let e = parse_cpus("3-1").unwrap_err().to_string();
        assert!(e.contains("ends before it starts"), "{e}");
        let e = parse_cpus("0-4000000000").unwrap_err().to_string();
        assert!(e.contains("beyond the 1024"), "{e}");
        assert!(parse_cpus("").is_err());
        assert!(parse_cpus("-1").is_err());
    }
}

/// An error and its causes as one line, `outer: inner: …`, like `{:#}`,
/// but without repeating a cause its outer message already ends with
/// (errors such as `missing.csv: No such file or directory` show their
/// source in their own message, and `{:#}` would print it twice).
pub fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod chain_tests {
    use super::*;

    #[test]
    fn a_cause_already_in_its_message_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = anyhow::Error::new(fleetscore_codecs::CodecError::Io {
            path: "missing.csv".into(),
            source: io,
        })
        .context("--input");
        assert_eq!(chain(&e), "--input: missing.csv: No such file");
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(chain(&e), "outer: inner");
    }
}
