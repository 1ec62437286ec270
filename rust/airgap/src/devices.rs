//! The job's /dev, and the read-only binds of a device's driver files.
//!
//! Threat: the host's /dev holds every device of the machine — every GPU, disks on some
//! hosts, the hospital's other hardware — and a read-only mount does not stop a device
//! from being driven (read-only is about the filesystem, not about the device behind a
//! node). So with `--private-dev` the job gets a small read-only tmpfs at /dev with the
//! nodes any program expects (null, zero, full, random, urandom), the `fd`/`stdin`/...
//! links, an empty `shm` (the view mounts its private tmpfs there), and only the devices
//! named by `--dev-bind`, each at /dev/<its name>. A `--dev-bind` must be a character
//! device (a regular file or a directory there would be a way to smuggle a host path in
//! under /dev) and must not replace a standard node.
//!
//! `--ro-bind` under /proc (the driver's /proc/driver/nvidia) is bound read-only after the
//! job's own proc is mounted; any other `--ro-bind` is bound back like `--expose`.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{symlink, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::sys;
use crate::view::{mount, set_attr};

const O_PATH: i32 = 0o10000000;
pub const STANDARD_NODES: &[&str] = &["null", "zero", "full", "random", "urandom"];
const LINKS: &[(&str, &str)] =
    &[("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")];

/// Each `--dev-bind` checked on the host: a character device (not followed through a
/// link), with a name no other node in the private /dev has.
pub fn check_dev_binds(paths: &[PathBuf]) -> Result<(), String> {
    let mut names: Vec<String> = Vec::new();
    for path in paths {
        let meta = fs::symlink_metadata(path).map_err(|e| format!("--dev-bind {}: {e}", path.display()))?;
        if !meta.file_type().is_char_device() {
            return Err(format!("--dev-bind {}: not a character device", path.display()));
        }
        let name = node_name(path)?;
        if STANDARD_NODES.contains(&name.as_str()) || LINKS.iter().any(|(l, _)| *l == name) || name == "shm" {
            return Err(format!("--dev-bind {}: would replace the standard /dev/{name}", path.display()));
        }
        if names.contains(&name) {
            return Err(format!("--dev-bind {}: a second device named {name}", path.display()));
        }
        names.push(name);
    }
    Ok(())
}

fn node_name(path: &Path) -> Result<String, String> {
    path.file_name().and_then(|n| n.to_str()).map(String::from)
        .ok_or_else(|| format!("--dev-bind {}: no file name", path.display()))
}

/// A node held open (O_PATH: the device's driver is not asked to open it) from before
/// /dev is covered, with the name it gets inside.
pub struct Held {
    file: File,
    name: String,
}

fn hold(path: &Path) -> Result<File, String> {
    OpenOptions::new().read(true).custom_flags(O_PATH | sys::O_CLOEXEC).open(path)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Open the standard nodes the host has and the granted devices. Must run before /dev is
/// covered and before the paths holding fake devices (a test's /tmp) are.
pub fn hold_nodes(dev_binds: &[PathBuf]) -> Result<Vec<Held>, String> {
    let mut held = Vec::new();
    for name in STANDARD_NODES {
        let path = Path::new("/dev").join(name);
        if path.exists() {
            held.push(Held { file: hold(&path)?, name: name.to_string() });
        }
    }
    for path in dev_binds {
        held.push(Held { file: hold(path)?, name: node_name(path)? });
    }
    Ok(held)
}

/// Cover /dev with the job's own and bind the held nodes into it. The tmpfs is made
/// read-only by `seal_private_dev` once /dev/shm is mounted on it.
pub fn build_private_dev(held: &[Held]) -> Result<(), String> {
    let dev = Path::new("/dev");
    mount(Some("tmpfs"), dev, Some("tmpfs"), sys::MS_NOSUID | sys::MS_NOEXEC, Some("mode=0755,size=64k,nr_inodes=256"))?;
    for node in held {
        let target = dev.join(&node.name);
        File::create(&target).map_err(|e| format!("mount point {}: {e}", target.display()))?;
        let source = format!("/proc/self/fd/{}", node.file.as_raw_fd());
        mount(Some(&source), &target, None, sys::MS_BIND, None)?;
        set_attr(&target, false, sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID, 0)?;
    }
    for (name, target) in LINKS {
        symlink(target, dev.join(name)).map_err(|e| format!("/dev/{name}: {e}"))?;
    }
    fs::create_dir(dev.join("shm")).map_err(|e| format!("/dev/shm: {e}"))
}

pub fn seal_private_dev() -> Result<(), String> {
    set_attr(Path::new("/dev"), false, sys::MOUNT_ATTR_RDONLY, 0)
}

/// Bind each path under /proc onto itself, read-only (the job's proc is writable where
/// the kernel allows, and a driver's proc files may take writes). Missing ones are an
/// error: the edge asked for them because the job needs them.
pub fn read_only_proc(paths: &[PathBuf]) -> Result<(), String> {
    for path in paths.iter().filter(|p| p.starts_with("/proc")) {
        let source = path.to_str().ok_or("path is not UTF-8")?;
        mount(Some(source), path, None, sys::MS_BIND | sys::MS_REC, None)?;
        set_attr(path, true, sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID, 0)?;
    }
    Ok(())
}

/// The `--ro-bind` paths that are bound back like `--expose` (all but those under /proc).
pub fn outside_proc(paths: &[PathBuf]) -> Vec<PathBuf> {
    paths.iter().filter(|p| !p.starts_with("/proc")).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_character_device() {
        let dir = std::env::temp_dir().join(format!("rapha-devices-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("nvidia0");
        fs::write(&file, b"").unwrap();
        let link = dir.join("nvidia1");
        let _ = fs::remove_file(&link);
        symlink("/dev/null", &link).unwrap();
        assert!(check_dev_binds(&[file.clone()]).unwrap_err().contains("not a character device"));
        assert!(check_dev_binds(&[link]).unwrap_err().contains("not a character device"));
        assert!(check_dev_binds(&[dir.clone()]).unwrap_err().contains("not a character device"));
        assert!(check_dev_binds(&[dir.join("missing")]).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_a_standard_name_or_a_name_twice() {
        assert!(check_dev_binds(&[PathBuf::from("/dev/null")]).unwrap_err().contains("standard /dev/null"));
        assert!(check_dev_binds(&[PathBuf::from("/dev/tty"), PathBuf::from("/dev/tty")])
            .unwrap_err().contains("second device"));
        assert!(check_dev_binds(&[PathBuf::from("/dev/tty")]).is_ok());
    }

    #[test]
    fn splits_proc_paths_from_the_rest() {
        let paths = [PathBuf::from("/proc/driver/nvidia"), PathBuf::from("/usr/lib/libcuda.so.1")];
        assert_eq!(outside_proc(&paths), vec![PathBuf::from("/usr/lib/libcuda.so.1")]);
    }
}
