//! Which CPUs each process of a benchmark runs on.
//!
//! `keyward-bench vault` compares keyward in front of OpenBao with OpenBao
//! alone. In a deployment Vault or OpenBao runs on machines of its own, so
//! what keyward costs must not be taken out of the backend's CPU: on one
//! small machine every microsecond keyward spends would otherwise slow
//! OpenBao down too, and the comparison would measure how the two share
//! cores rather than whether keyward keeps up with its backend. So the
//! benchmark gives the backend half of the CPUs this process may use and
//! keyward with the load generator the other half, the same in both phases.

use std::process::Command;

/// The CPUs of each side; both empty when there are fewer than two.
#[derive(Debug, Clone, Default)]
pub struct Split {
    /// keyward and the load generator (this process).
    pub front: Vec<usize>,
    /// The backend (OpenBao).
    pub backend: Vec<usize>,
}

impl Split {
    /// Halves of the CPUs this process may run on: the lower half for the
    /// front, the upper for the backend.
    pub fn halves() -> Split {
        let cpus = allowed();
        if cpus.len() < 2 {
            return Split::default();
        }
        let (front, backend) = cpus.split_at(cpus.len() / 2);
        Split { front: front.to_vec(), backend: backend.to_vec() }
    }

    /// One line for the report.
    pub fn describe(&self) -> String {
        if self.front.is_empty() {
            return "one CPU: keyward, the load generator and OpenBao share it".into();
        }
        format!("keyward and the load generator on CPUs {:?}, OpenBao on CPUs {:?}", self.front, self.backend)
    }
}

/// The CPUs this process may run on.
fn allowed() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above; pid 0 is this thread.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    // SAFETY: CPU_ISSET reads the set we own, for indices below its capacity.
    (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect()
}

fn set_of(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: CPU_SET writes bit `c` of the set we own; `c` came from CPU_ISSET's range.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    set
}

/// Keeps the calling thread, and every thread it starts afterwards, on
/// `cpus` (call before starting the async runtime). No-op when empty.
pub fn pin_this_thread(cpus: &[usize]) -> std::io::Result<()> {
    if cpus.is_empty() {
        return Ok(());
    }
    let set = set_of(cpus);
    // SAFETY: the set lives across the call; pid 0 is this thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Starts `cmd`'s process on `cpus`. No-op when empty.
pub fn pin_command(cmd: &mut Command, cpus: &[usize]) {
    if cpus.is_empty() {
        return;
    }
    use std::os::unix::process::CommandExt;
    let set = set_of(cpus);
    // SAFETY: sched_setaffinity is async-signal-safe and reads only the
    // set, which the closure owns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}
