//! The job's view of the filesystem, built inside a fresh mount namespace.
//!
//! Threats: a job that writes outside its directory (to plant code for the next job or
//! stash data), or that reads what the edge keeps beside it — the dataset storage, the
//! edge keys, the job database, host sockets (a Docker or D-Bus socket is a way out).
//! So: everything read-only, a private `/tmp` and `/dev/shm`, the job directory the one
//! writable place, and each hidden path covered by an empty read-only tmpfs (or, for a
//! file, by `/dev/null`). An exposed path is bound back, read-only, inside a hidden one
//! (for example the Python installation inside a hidden `/root`).

use std::ffi::CString;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr;

use crate::{devices, sys};

pub struct View<'a> {
    pub workdir: Option<&'a Path>,
    pub hidden: &'a [PathBuf],
    pub exposed: &'a [PathBuf],
    pub tmp_bytes: u64,
    pub private_dev: bool,
    pub dev_binds: &'a [PathBuf],
    pub ro_binds: &'a [PathBuf],
}

fn c(path: &Path) -> Result<CString, String> {
    sys::cstr(path.to_str().ok_or("path is not UTF-8")?)
}

pub(crate) fn mount(src: Option<&str>, target: &Path, fstype: Option<&str>, flags: u64, data: Option<&str>) -> Result<(), String> {
    let src_c = src.map(sys::cstr).transpose()?;
    let fstype_c = fstype.map(sys::cstr).transpose()?;
    let data_c = data.map(sys::cstr).transpose()?;
    let target_c = c(target)?;
    let ret = unsafe {
        sys::mount(
            src_c.as_ref().map_or(ptr::null(), |s| s.as_ptr()),
            target_c.as_ptr(),
            fstype_c.as_ref().map_or(ptr::null(), |s| s.as_ptr()),
            flags,
            data_c.as_ref().map_or(ptr::null(), |s| s.as_ptr() as *const _),
        )
    };
    sys::check(ret as i64, &format!("mount on {}", target.display())).map(|_| ())
}

pub(crate) fn set_attr(target: &Path, recursive: bool, set: u64, clear: u64) -> Result<(), String> {
    let attr = sys::MountAttr { attr_set: set, attr_clr: clear, propagation: 0, userns_fd: 0 };
    let target_c = c(target)?;
    let flags = if recursive { sys::AT_RECURSIVE } else { 0 };
    let ret = unsafe {
        sys::syscall(
            sys::NR_MOUNT_SETATTR,
            sys::AT_FDCWD,
            target_c.as_ptr(),
            flags,
            &attr as *const sys::MountAttr,
            std::mem::size_of::<sys::MountAttr>(),
        )
    };
    sys::check(ret, &format!("mount_setattr on {}", target.display())).map(|_| ())
}

/// Make every mount read-only. mount_setattr (Linux 5.12) does it in one call; older
/// kernels get a bind-remount of each mount listed in mountinfo, deepest last.
fn read_only_everywhere() -> Result<(), String> {
    match set_attr(Path::new("/"), true, sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID, 0) {
        Err(_) if sys::errno() == sys::ENOSYS => {}
        other => return other,
    }
    let table = fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("mountinfo: {e}"))?;
    for line in table.lines() {
        let Some(point) = line.split(' ').nth(4) else { continue };
        let point = unescape(point);
        let flags = sys::MS_BIND | sys::MS_REMOUNT | sys::MS_RDONLY | sys::MS_NOSUID | mount_flags(line);
        // Mount points that vanished or cannot be remounted must not stay writable.
        mount(None, Path::new(&point), None, flags, None)?;
    }
    Ok(())
}

/// Per-mount flags a remount must keep (dropping nodev or noexec is refused).
fn mount_flags(line: &str) -> u64 {
    let options = line.split(' ').nth(5).unwrap_or("");
    options.split(',').fold(0, |acc, opt| match opt {
        "nodev" => acc | sys::MS_NODEV,
        "noexec" => acc | sys::MS_NOEXEC,
        _ => acc,
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(text: &str) -> String {
    text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

fn tmpfs(target: &Path, options: &str) -> Result<(), String> {
    mount(Some("tmpfs"), target, Some("tmpfs"), sys::MS_NOSUID | sys::MS_NODEV, Some(options))
}

/// Cover one path. Returns true if it was covered (it may not exist: nothing to hide).
fn hide(path: &Path) -> Result<bool, String> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => tmpfs(path, "mode=0755,size=64k,nr_inodes=256").map(|_| true),
        Ok(_) => mount(Some("/dev/null"), path, None, sys::MS_BIND, None).map(|_| true),
        Err(_) => Ok(false),
    }
}

/// Bind a path (held open from before the hiding) back at its own place, creating the
/// mount point inside a covering tmpfs if one hides it.
fn bind_back(source: &File, path: &Path, writable: bool) -> Result<(), String> {
    let is_dir = source.metadata().map_err(|e| format!("{}: {e}", path.display()))?.is_dir();
    if is_dir && !path.is_dir() {
        fs::create_dir_all(path).map_err(|e| format!("mount point {}: {e}", path.display()))?;
    } else if !is_dir && !path.exists() {
        let parent = path.parent().unwrap_or(Path::new("/"));
        fs::create_dir_all(parent).map_err(|e| format!("mount point {}: {e}", parent.display()))?;
        File::create(path).map_err(|e| format!("mount point {}: {e}", path.display()))?;
    }
    let source = format!("/proc/self/fd/{}", source.as_raw_fd());
    mount(Some(&source), path, None, sys::MS_BIND | sys::MS_REC, None)?;
    if writable {
        set_attr(path, false, 0, sys::MOUNT_ATTR_RDONLY)
    } else {
        set_attr(path, true, sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID, 0)
    }
}

fn open_all(paths: &[PathBuf]) -> Result<Vec<(File, &PathBuf)>, String> {
    paths.iter().map(|p| File::open(p).map(|f| (f, p)).map_err(|e| format!("{}: {e}", p.display()))).collect()
}

fn under(path: &Path, dir: Option<&Path>) -> bool {
    dir.is_some_and(|d| path.starts_with(d))
}

/// Build the view. Must run in a new mount namespace, as root, before privileges drop.
pub fn build(view: &View) -> Result<(), String> {
    let root = Path::new("/");
    // Nothing we mount may propagate back to the host.
    mount(None, root, None, sys::MS_REC | sys::MS_PRIVATE, None)?;
    let workdir = match view.workdir {
        Some(path) => Some(File::open(path).map_err(|e| format!("job directory: {e}"))?),
        None => None,
    };
    let exposed = open_all(view.exposed)?;
    let held = if view.private_dev { devices::hold_nodes(view.dev_binds)? } else { Vec::new() };
    read_only_everywhere()?;
    if view.private_dev {
        devices::build_private_dev(&held)?;
    }
    let tmp_options = format!("mode=1777,size={}", view.tmp_bytes.max(4096));
    tmpfs(Path::new("/tmp"), &tmp_options)?;
    if Path::new("/dev/shm").is_dir() {
        tmpfs(Path::new("/dev/shm"), &tmp_options)?;
    }
    // Paths inside the job directory are hidden after it is bound, the rest before, so
    // that neither mount uncovers the other.
    let (inner, outer): (Vec<&PathBuf>, Vec<&PathBuf>) =
        view.hidden.iter().partition(|p| under(p, view.workdir));
    let mut covered = Vec::new();
    for path in outer {
        if hide(path)? {
            covered.push(path);
        }
    }
    if let (Some(dir), Some(path)) = (&workdir, view.workdir) {
        bind_back(dir, path, true)?;
    }
    for (file, path) in &exposed {
        bind_back(file, path, false)?;
    }
    for path in inner {
        if hide(path)? {
            covered.push(path);
        }
    }
    for path in covered {
        set_attr(path, false, sys::MOUNT_ATTR_RDONLY, 0)?;
    }
    if view.private_dev {
        devices::seal_private_dev()?;
    }
    // A proc of the new PID namespace: the job sees only its own processes.
    mount(Some("proc"), Path::new("/proc"), Some("proc"), sys::MS_NOSUID | sys::MS_NODEV | sys::MS_NOEXEC, None)?;
    devices::read_only_proc(view.ro_binds)
}

/// Canonical, existing paths for the hidden list (symlinks like /var/run resolved, so
/// the cover lands on what the link points at). Missing paths have nothing to hide.
pub fn resolve_hidden(paths: &[PathBuf]) -> Vec<PathBuf> {
    paths.iter().filter_map(|p| fs::canonicalize(p).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_fields() {
        let line = "36 35 98:0 /mnt1 /mnt\\040point rw,nodev,noexec master:1 - ext3 /dev/root rw";
        assert_eq!(unescape(line.split(' ').nth(4).unwrap()), "/mnt point");
        assert_eq!(mount_flags(line), sys::MS_NODEV | sys::MS_NOEXEC);
    }
}
