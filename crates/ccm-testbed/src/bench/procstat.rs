//! This process's memory and CPU time, from `/proc/self` (Linux).

/// Clock ticks per second of `/proc/*/stat` times: `USER_HZ`, fixed at 100 by the Linux ABI on
/// every architecture ccm runs on (reading it with `sysconf` would need `unsafe`).
const USER_HZ: f64 = 100.0;

/// A `kB` line of `/proc/self/status` (`VmHWM`, `VmRSS`), in MiB.
fn status_mib(key: &str) -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: f64 = line
        .trim_start_matches(key)
        .trim_start_matches(':')
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Peak resident memory of this process so far (`VmHWM`), in MiB.
pub(super) fn peak_rss_mib() -> Option<f64> {
    status_mib("VmHWM")
}

/// Resident memory of this process now (`VmRSS`), in MiB.
pub(super) fn rss_mib() -> Option<f64> {
    status_mib("VmRSS")
}

/// Open file descriptors of this process now (sockets included).
pub(super) fn open_fds() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

/// User plus system CPU time of this process (all threads) so far, in seconds.
pub(super) fn cpu_seconds() -> Option<f64> {
    cpu_seconds_at("/proc/self/stat")
}

/// User plus system CPU time of process `pid` and its descendants so far, in seconds (0 for
/// processes that are gone).
pub(super) fn tree_cpu_seconds(pid: u32) -> f64 {
    let own = cpu_seconds_at(&format!("/proc/{pid}/stat")).unwrap_or(0.0);
    let mut children = 0.0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in list
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok())
            {
                children += tree_cpu_seconds(child);
            }
        }
    }
    own + children
}

fn cpu_seconds_at(path: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_should_report_memory_and_cpu() {
        // Now first: the peak read after it can only be as high or higher.
        let now = rss_mib().unwrap();
        let peak = peak_rss_mib().unwrap();
        assert!(now > 0.5 && peak >= now, "peak {peak} now {now}");
        // Burn a little CPU so the counter moves off zero on a fast machine.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(cpu_seconds().unwrap() > 0.0);
    }
}
