//! Process figures from /proc (Linux only): resident memory, open file
//! descriptors and CPU time.

use std::collections::BTreeMap;
use std::time::Duration;

/// `VmRSS` of `pid` in KiB, or `None` if the process is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_number(pid, "VmRSS:")
}

/// Threads of `pid`, or `None` if the process is gone.
pub fn threads(pid: u32) -> Option<u64> {
    status_number(pid, "Threads:")
}

/// The number after `field` in `/proc/PID/status` (units dropped).
fn status_number(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Open file descriptors of `pid` (entries of `/proc/PID/fd`), or `None` if
/// the process is gone or not ours to inspect.
pub fn fd_count(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// User + system CPU time consumed so far by `pid` (all its threads).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    stat_cpu_time(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// CPU time so far of each thread of `pid` still running, summed by thread
/// name (`keyward-worker`, `keyward-audit`, …): which of a server's threads
/// a cost lands on. Empty if the process is gone.
pub fn cpu_time_by_thread(pid: u32) -> BTreeMap<String, Duration> {
    let mut by_name = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        let name = stat.find('(').zip(stat.rfind(')')).map(|(a, b)| stat[a + 1..b].to_string());
        if let (Some(name), Some(cpu)) = (name, stat_cpu_time(&stat)) {
            *by_name.entry(name).or_default() += cpu;
        }
    }
    by_name
}

/// utime + stime of a `/proc/…/stat` line.
fn stat_cpu_time(stat: &str) -> Option<Duration> {
    // The command name may contain spaces: fields start after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat (1-based) are utime and stime; `rest` starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let hz = clock_ticks();
    Some(Duration::from_micros((utime + stime) * 1_000_000 / hz))
}

/// CPU time of this process, at microsecond resolution.
pub fn self_cpu_time() -> Duration {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes into the struct we pass.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

/// Whether any compiler or cargo process is running (other builds on a
/// shared machine make measurements meaningless).
pub fn busy_builders() -> Vec<String> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
            let comm = comm.trim();
            if matches!(comm, "rustc" | "cc1" | "cc1plus" | "ld" | "wasm-ld" | "rust-lld" | "clippy-driver") {
                found.push(format!("{comm}[{pid}]"));
            }
        }
    }
    found
}

/// (busy, total) jiffies over all CPUs since boot, from /proc/stat.
pub fn cpu_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Fraction (0..1) of the machine's CPU time spent busy during `window`.
pub fn machine_busy(window: Duration) -> f64 {
    let Some((b0, t0)) = cpu_jiffies() else { return 0.0 };
    std::thread::sleep(window);
    let Some((b1, t1)) = cpu_jiffies() else { return 0.0 };
    if t1 <= t0 {
        return 0.0;
    }
    (b1 - b0) as f64 / (t1 - t0) as f64
}

/// CPU cores kept busy, machine-wide, between two [`cpu_jiffies`] samples.
pub fn busy_cores(a: Option<(u64, u64)>, b: Option<(u64, u64)>) -> Option<f64> {
    let ((b0, t0), (b1, t1)) = (a?, b?);
    if t1 <= t0 {
        return None;
    }
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    Some((b1 - b0) as f64 / (t1 - t0) as f64 * cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_summed_by_thread_name() {
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let (busy, spun) = std::sync::mpsc::channel::<()>();
        let spinner = std::thread::Builder::new()
            .name("kb-spin".into())
            .spawn(move || {
                let until = std::time::Instant::now() + Duration::from_millis(300);
                while std::time::Instant::now() < until {
                    std::hint::spin_loop();
                }
                busy.send(()).unwrap();
                // Stays alive (idle) until its CPU time has been read.
                let _ = wait.recv();
            })
            .unwrap();
        spun.recv().unwrap();
        let by_thread = cpu_time_by_thread(std::process::id());
        done.send(()).unwrap();
        spinner.join().unwrap();
        let spin = by_thread.get("kb-spin").copied().unwrap_or_default();
        // 300 ms of spinning; CPU time counts in 10 ms ticks and a busy
        // machine may not have run the thread all along.
        assert!(spin >= Duration::from_millis(30), "kb-spin used {spin:?}: {by_thread:?}");
        let total: Duration = by_thread.values().sum();
        assert!(total >= spin);
        assert!(cpu_time_by_thread(u32::MAX).is_empty());
    }
}
