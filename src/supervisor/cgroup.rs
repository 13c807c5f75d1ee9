//! Per-worker cgroups (cgroup v2, under `Delegate=yes`) and per-worker
//! memory figures.
//!
//! With a delegated subtree the supervisor moves itself into a leaf
//! (`supervisor/`, since v2 allows processes only in leaves once
//! controllers are enabled), enables the memory controller for its
//! children, and starts each worker in a cgroup of its own
//! (`worker-<slot>`), joined in `pre_exec` by writing `0` to an
//! already-open `cgroup.procs`. Then `memory_max` is a kernel limit per
//! worker and `memory.current` its exact usage. Without delegation (or
//! without controllers) it says so once and measures RSS from `/proc`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The delegated subtree the supervisor manages.
#[derive(Debug)]
pub struct Subtree {
    base: PathBuf,
    /// Whether `memory` is enabled for the worker cgroups.
    memory: bool,
}

/// A worker's own cgroup, created before spawn.
#[derive(Debug)]
pub struct WorkerCgroup {
    pub path: PathBuf,
    /// Open for writing, so the child joins with one `write` in `pre_exec`.
    pub procs: File,
}

/// The cgroup2 mount point, from /proc/self/mountinfo.
fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

/// This process's cgroup v2 path ("0::/path" in /proc/self/cgroup).
fn own_cgroup() -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// Whether systemd delegated `dir` to us: it marks delegated cgroups with
/// the `trusted.delegate` attribute (readable by root) and hands them to the
/// service's `User=` (so a non-root owner that is us means delegation too).
/// A root process outside systemd finds every cgroup writable, which is not
/// permission to reorganise someone else's tree.
fn delegated(dir: &Path) -> bool {
    let mut value = [0u8; 8];
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: path is NUL-terminated; value is a live buffer of the given size.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"trusted.delegate".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    if n > 0 && value[..n as usize].starts_with(b"1") {
        return true;
    }
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    euid != 0 && std::fs::metadata(dir).is_ok_and(|m| m.uid() == euid)
}

/// Takes the delegated cgroup subtree if there is one, and says once in the
/// log what memory limits can and cannot do here.
pub fn take_subtree(config: &crate::config::Config) -> Option<Subtree> {
    let (high, max) = (config.memory_high.0, config.memory_max.0);
    match Subtree::setup() {
        Ok(subtree) => {
            tracing::info!(
                memory_controller = subtree.has_memory(),
                "workers run in cgroups of their own (worker-<slot>)"
            );
            if !subtree.has_memory() && (high > 0 || max > 0) {
                tracing::warn!("no memory controller delegated: memory_max is not enforced, memory_high uses RSS from /proc");
            }
            Some(subtree)
        }
        Err(why) => {
            if max > 0 {
                tracing::warn!(reason = %why, "no per-worker cgroups ({why}): memory_max is not enforced; memory_high uses RSS from /proc");
            } else {
                tracing::info!(reason = %why, "no per-worker cgroups ({why}); worker memory measured from /proc");
            }
            None
        }
    }
}

impl Subtree {
    /// Takes over the delegated subtree, or says why not.
    ///
    /// # Errors
    /// A sentence for the log: no cgroup v2, not delegated, or a step that
    /// failed.
    fn setup() -> Result<Subtree, String> {
        let mount = cgroup2_mount().ok_or("no cgroup v2 hierarchy mounted")?;
        let own = own_cgroup().ok_or("not in a cgroup v2 cgroup")?;
        let base = mount.join(own.trim_start_matches('/'));
        if !delegated(&base) {
            return Err(format!(
                "{} is not delegated to ferricorn (Delegate=yes in the unit)",
                base.display()
            ));
        }
        let leaf = base.join("supervisor");
        match std::fs::create_dir(&leaf) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", leaf.display())),
        }
        std::fs::write(leaf.join("cgroup.procs"), std::process::id().to_string())
            .map_err(|e| format!("cannot move into {}: {e}", leaf.display()))?;
        let available =
            std::fs::read_to_string(base.join("cgroup.controllers")).unwrap_or_default();
        // Enabled whether or not limits are set: it also gives each worker
        // an exact `memory.current`.
        let memory = available.split_whitespace().any(|c| c == "memory")
            && std::fs::write(base.join("cgroup.subtree_control"), "+memory").is_ok();
        Ok(Subtree { base, memory })
    }

    /// Whether worker cgroups have the memory controller.
    pub fn has_memory(&self) -> bool {
        self.memory
    }

    /// Creates an empty cgroup for a worker of `slot`: `worker-<slot>`, or
    /// `worker-<slot>.<n>` while a predecessor still occupies it (a reload
    /// or recycle overlaps old and new), so limits are never shared.
    ///
    /// # Errors
    /// mkdir, the limit write, or opening `cgroup.procs` failing.
    pub fn worker(&self, slot: usize, memory_max: u64) -> io::Result<WorkerCgroup> {
        let mut n = 0u32;
        let path = loop {
            let name = match n {
                0 => format!("worker-{slot}"),
                _ => format!("worker-{slot}.{n}"),
            };
            let path = self.base.join(name);
            match std::fs::create_dir(&path) {
                Ok(()) => break path,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    // Left empty by a worker that exited: reuse it.
                    let procs = std::fs::read_to_string(path.join("cgroup.procs"))?;
                    if procs.trim().is_empty() {
                        break path;
                    }
                }
                Err(e) => return Err(e),
            }
            n += 1;
        };
        if self.memory {
            let limit = match memory_max {
                0 => "max".to_owned(),
                bytes => bytes.to_string(),
            };
            std::fs::write(path.join("memory.max"), limit)?;
        }
        let procs = OpenOptions::new()
            .write(true)
            .open(path.join("cgroup.procs"))?;
        Ok(WorkerCgroup { path, procs })
    }
}

/// Removes a worker's cgroup once it is empty; a busy one stays for reuse.
pub fn remove(path: &Path) {
    let _ = std::fs::remove_dir(path);
}

/// Memory a worker uses: its cgroup's `memory.current` when it has one with
/// the memory controller, else its resident set from `/proc/<pid>/statm`.
pub fn memory_usage(cgroup: Option<&Path>, pid: u32) -> Option<u64> {
    if let Some(dir) = cgroup {
        if let Ok(text) = std::fs::read_to_string(dir.join("memory.current")) {
            return text.trim().parse().ok();
        }
    }
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let resident: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf cannot fail for _SC_PAGESIZE.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    Some(resident * page)
}

/// How many times the kernel's OOM killer struck in `cgroup`.
pub fn oom_kills(cgroup: &Path) -> u64 {
    std::fs::read_to_string(cgroup.join("memory.events"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("oom_kill "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_memory_is_measurable_without_cgroup() {
        let rss = memory_usage(None, std::process::id()).expect("statm readable");
        assert!(rss > 0);
    }
}
