//! Dropping to an unprivileged uid and gid with no capabilities.
//!
//! Threat: a job that keeps any root power can undo the namespaces, the read-only view
//! or the filter. The bounding set goes first (dropping it needs CAP_SETPCAP), then the
//! supplementary groups, gid and uid; the uid change clears the permitted and effective
//! sets, and an explicit capset clears the inheritable set, which a uid change keeps.

use crate::sys;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;
const CAP_LAST_POSSIBLE: u64 = 63;

fn drop_bounding_set() -> Result<(), String> {
    for cap in 0..=CAP_LAST_POSSIBLE {
        let ret = unsafe { sys::prctl(sys::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        // EINVAL marks capabilities past the kernel's last one.
        if ret < 0 && sys::errno() != 22 {
            return Err(format!("drop capability {cap} from the bounding set: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

fn clear_capability_sets() -> Result<(), String> {
    let header = CapHeader { version: CAP_VERSION_3, pid: 0 };
    let data = [CapData { effective: 0, permitted: 0, inheritable: 0 }; 2];
    let ret = unsafe { sys::syscall(sys::nr::CAPSET, &header as *const CapHeader, data.as_ptr()) };
    sys::check(ret, "clear capabilities")?;
    let ret = unsafe { sys::prctl(sys::PR_CAP_AMBIENT, sys::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) };
    sys::check(ret as i64, "clear ambient capabilities").map(|_| ())
}

pub fn drop_to(uid: u32, gid: u32) -> Result<(), String> {
    drop_bounding_set()?;
    sys::check(unsafe { sys::setgroups(0, std::ptr::null()) } as i64, "setgroups")?;
    sys::check(unsafe { sys::setresgid(gid, gid, gid) } as i64, "setresgid")?;
    sys::check(unsafe { sys::setresuid(uid, uid, uid) } as i64, "setresuid")?;
    clear_capability_sets()?;
    // no_new_privs: no setuid binary or file capability can give anything back.
    let ret = unsafe { sys::prctl(sys::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    sys::check(ret as i64, "no_new_privs")?;
    if unsafe { sys::getuid() } != uid || unsafe { sys::getgid() } != gid {
        return Err("uid or gid did not change".into());
    }
    Ok(())
}
