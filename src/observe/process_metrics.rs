//! The standard process series (`process_resident_memory_bytes`, `process_open_fds`,
//! `process_cpu_seconds_total`, `process_start_time_seconds`), read from `/proc/self` at each
//! scrape. prometheus-client has no process collector; elsewhere than Linux these are left out.

use std::fmt::Write;

/// Appends the process series to `text` (nothing when `/proc/self` cannot be read).
pub fn append(text: &mut String) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // The fields after the command name, which is in parentheses and may hold spaces.
    let Some(after) = stat.rfind(')').map(|at| &stat[at + 1..]) else {
        return;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    let number = |n: usize| fields.get(n).and_then(|f| f.parse::<f64>().ok());
    // utime and stime (fields 14 and 15 of stat, 11 and 12 here) and starttime (22, here 19)
    // are in clock ticks, which Linux fixes at 100 a second for user space.
    const TICKS: f64 = 100.0;
    if let (Some(user), Some(system)) = (number(11), number(12)) {
        series(
            text,
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent, in seconds",
            (user + system) / TICKS,
        );
    }
    // VmRSS in kB, which needs no page size.
    let rss_kb = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        });
    if let Some(kb) = rss_kb {
        series(
            text,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size, in bytes",
            kb * 1024.0,
        );
    }
    if let Ok(open) = std::fs::read_dir("/proc/self/fd") {
        series(
            text,
            "process_open_fds",
            "gauge",
            "Open file descriptors",
            open.count() as f64,
        );
    }
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    if let (Some(boot), Some(start)) = (boot, number(19)) {
        series(
            text,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch, in seconds",
            boot + start / TICKS,
        );
    }
}

/// One series in OpenMetrics text: a counter's metadata names it without `_total`.
fn series(text: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    let family = name.strip_suffix("_total").unwrap_or(name);
    let _ = writeln!(text, "# HELP {family} {help}.");
    let _ = writeln!(text, "# TYPE {family} {kind}");
    let _ = writeln!(text, "{name} {value}");
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_process_series_are_read_from_proc() {
        let mut text = String::new();
        super::append(&mut text);
        if std::path::Path::new("/proc/self/stat").exists() {
            for name in [
                "process_cpu_seconds_total ",
                "process_resident_memory_bytes ",
                "process_open_fds ",
            ] {
                assert!(text.contains(name), "{name} missing from\n{text}");
            }
            let rss: f64 = text
                .lines()
                .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
                .unwrap()
                .parse()
                .unwrap();
            assert!(rss > 1_000_000.0, "{rss}");
        }
    }
}
