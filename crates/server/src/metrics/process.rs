//! The `process_*` figures that Prometheus clients export for their
//! process, named and typed as client_golang's process collector does, so
//! that the usual dashboards and alerts work unchanged. Read from
//! `/proc/self` at each scrape (Linux; elsewhere none are reported, and a
//! file that cannot be read leaves its figures out of that scrape).

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// Reports this process's CPU time, memory, file descriptors and start.
#[derive(Debug)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let Some(p) = Process::read() else {
            return Ok(());
        };
        ConstCounter::new(p.cpu_seconds).encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            None,
            MetricType::Counter,
        )?)?;
        let gauges: [(&str, &str, Option<u64>); 4] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                Some(p.resident_bytes),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                Some(p.virtual_bytes),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                p.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                p.max_fds,
            ),
        ];
        for (name, help, v) in gauges {
            if let Some(v) = v {
                ConstGauge::new(v).encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    MetricType::Gauge,
                )?)?;
            }
        }
        if let Some(t) = p.start_time_seconds {
            ConstGauge::new(t).encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                None,
                MetricType::Gauge,
            )?)?;
        }
        Ok(())
    }
}

/// One reading of the process's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Process {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    start_time_seconds: Option<f64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
}

impl Process {
    /// This process now; `None` where `/proc/self/stat` cannot be read.
    #[cfg(target_os = "linux")]
    fn read() -> Option<Process> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // SAFETY: sysconf only reads a system constant.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let (ticks, page) = (u64::try_from(ticks).ok()?, u64::try_from(page).ok()?);
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| boot_time(&s));
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|s| max_open_files(&s));
        let mut p = parse_stat(&stat, ticks, page, boot)?;
        p.open_fds = open_fds;
        p.max_fds = max_fds;
        Some(p)
    }

    #[cfg(not(target_os = "linux"))]
    fn read() -> Option<Process> {
        None
    }
}

/// The figures of a `/proc/PID/stat` line (`proc(5)`), with `ticks` clock
/// ticks a second, pages of `page` bytes and the system booted at `boot`
/// (Unix seconds; the start time is left out without it).
fn parse_stat(stat: &str, ticks: u64, page: u64, boot: Option<u64>) -> Option<Process> {
    if ticks == 0 {
        return None;
    }
    // The command name (field 2) is in parentheses and may hold spaces and
    // parentheses itself: the fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state): field n is fields[n - 3].
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let (utime, stime) = (field(14)?, field(15)?);
    let start_ticks = field(22)?;
    let ticks_f = ticks as f64;
    Some(Process {
        cpu_seconds: (utime + stime) as f64 / ticks_f,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)?.saturating_mul(page),
        start_time_seconds: boot.map(|b| b as f64 + start_ticks as f64 / ticks_f),
        open_fds: None,
        max_fds: None,
    })
}

/// The boot time (`btime`, Unix seconds) of `/proc/stat`.
fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit on open files of `/proc/PID/limits` (`None` when
/// unlimited or unreadable).
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stat line of a process whose name holds a space and a ')'.
    const STAT: &str = "4242 (fleet score)) S 1 4242 4242 0 -1 4194560 1200 0 3 0 \
        250 50 0 0 20 0 9 0 1000 123456789 2048 18446744073709551615 1 1 0 0 0 0 0 4096 17475 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        let p = parse_stat(STAT, 100, 4096, Some(1_700_000_000)).unwrap();
        assert_eq!(
            p,
            Process {
                cpu_seconds: 3.0,
                resident_bytes: 2048 * 4096,
                virtual_bytes: 123_456_789,
                start_time_seconds: Some(1_700_000_010.0),
                open_fds: None,
                max_fds: None,
            }
        );
        assert_eq!(
            parse_stat(STAT, 100, 4096, None)
                .unwrap()
                .start_time_seconds,
            None
        );
        assert_eq!(parse_stat("4242 (x) S 1 2", 100, 4096, None), None);
        assert_eq!(parse_stat(STAT, 0, 4096, None), None);
    }

    #[test]
    fn boot_time_and_open_file_limit() {
        assert_eq!(
            boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
        assert_eq!(boot_time("cpu  1 2 3\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(
            max_open_files(
                "Max open files            unlimited            unlimited            files\n"
            ),
            None
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_read_from_proc() {
        let p = Process::read().expect("/proc/self/stat");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = p.start_time_seconds.expect("btime in /proc/stat");
        assert!(start <= now + 1.0 && start > now - 86_400.0, "{p:?}");
        assert!(p.cpu_seconds >= 0.0, "{p:?}");
        assert!(
            p.resident_bytes > 0 && p.virtual_bytes >= p.resident_bytes,
            "{p:?}"
        );
        assert!(p.open_fds.unwrap() >= 3, "{p:?}");
        assert!(p.max_fds.unwrap() >= p.open_fds.unwrap(), "{p:?}");
    }
}
