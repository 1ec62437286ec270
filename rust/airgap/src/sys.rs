//! The few C library functions and kernel constants this crate needs.
//!
//! Declared by hand so the crate builds with the standard library alone. Only
//! x86_64 and aarch64 are supported; constants that differ between them are `cfg`d.

#![allow(dead_code)]

use std::ffi::{c_char, c_int, c_long, c_uint, c_ulong, c_void, CString};
use std::io;

pub type Pid = i32;

#[repr(C)]
pub struct SigSet {
    bits: [u64; 16],
}

#[repr(C)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: i64,
}

#[repr(C)]
pub struct PollFd {
    pub fd: c_int,
    pub events: i16,
    pub revents: i16,
}

#[repr(C)]
pub struct Rlimit {
    pub cur: u64,
    pub max: u64,
}

#[repr(C)]
pub struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}

extern "C" {
    pub fn fork() -> Pid;
    pub fn unshare(flags: c_int) -> c_int;
    pub fn mount(
        src: *const c_char,
        target: *const c_char,
        fstype: *const c_char,
        flags: c_ulong,
        data: *const c_void,
    ) -> c_int;
    pub fn prctl(option: c_int, a2: c_ulong, a3: c_ulong, a4: c_ulong, a5: c_ulong) -> c_int;
    pub fn setresuid(r: u32, e: u32, s: u32) -> c_int;
    pub fn setresgid(r: u32, e: u32, s: u32) -> c_int;
    pub fn setgroups(size: usize, list: *const u32) -> c_int;
    pub fn setrlimit(resource: c_int, limit: *const Rlimit) -> c_int;
    pub fn waitpid(pid: Pid, status: *mut c_int, options: c_int) -> Pid;
    pub fn kill(pid: Pid, sig: c_int) -> c_int;
    pub fn syscall(nr: c_long, ...) -> c_long;
    pub fn ioctl(fd: c_int, request: c_ulong, ...) -> c_int;
    pub fn socket(domain: c_int, kind: c_int, protocol: c_int) -> c_int;
    pub fn connect(fd: c_int, addr: *const c_void, len: u32) -> c_int;
    pub fn sendto(fd: c_int, buf: *const c_void, len: usize, flags: c_int, addr: *const c_void, alen: u32) -> isize;
    pub fn setsockopt(fd: c_int, level: c_int, name: c_int, value: *const c_void, len: u32) -> c_int;
    pub fn recv(fd: c_int, buf: *mut c_void, len: usize, flags: c_int) -> isize;
    pub fn close(fd: c_int) -> c_int;
    pub fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
    pub fn pipe2(fds: *mut c_int, flags: c_int) -> c_int;
    pub fn read(fd: c_int, buf: *mut c_void, len: usize) -> isize;
    pub fn write(fd: c_int, buf: *const c_void, len: usize) -> isize;
    pub fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int;
    pub fn setsid() -> Pid;
    pub fn sethostname(name: *const c_char, len: usize) -> c_int;
    pub fn sigprocmask(how: c_int, set: *const SigSet, old: *mut SigSet) -> c_int;
    pub fn sigtimedwait(set: *const SigSet, info: *mut c_void, timeout: *const Timespec) -> c_int;
    pub fn sigemptyset(set: *mut SigSet) -> c_int;
    pub fn sigaddset(set: *mut SigSet, sig: c_int) -> c_int;
    pub fn signal(sig: c_int, handler: usize) -> usize;
    pub fn _exit(code: c_int) -> !;
    pub fn if_nametoindex(name: *const c_char) -> c_uint;
    pub fn getppid() -> Pid;
    pub fn poll(fds: *mut PollFd, nfds: c_ulong, timeout: c_int) -> c_int;
    pub fn geteuid() -> u32;
    pub fn getuid() -> u32;
    pub fn getgid() -> u32;
}

#[cfg(target_arch = "x86_64")]
pub mod nr {
    pub const CAPSET: i64 = 126;
    pub const IO_URING_SETUP: i64 = 425;
    pub const SOCKET: i64 = 41;
}
#[cfg(target_arch = "aarch64")]
pub mod nr {
    pub const CAPSET: i64 = 91;
    pub const IO_URING_SETUP: i64 = 425;
    pub const SOCKET: i64 = 198;
}
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("rapha-airgap supports x86_64 and aarch64 only");

pub const NR_CLOSE_RANGE: i64 = 436;
pub const NR_MOUNT_SETATTR: i64 = 442;

pub const CLONE_NEWNS: c_int = 0x0002_0000;
pub const CLONE_NEWCGROUP: c_int = 0x0200_0000;
pub const CLONE_NEWUTS: c_int = 0x0400_0000;
pub const CLONE_NEWIPC: c_int = 0x0800_0000;
pub const CLONE_NEWUSER: c_int = 0x1000_0000;
pub const CLONE_NEWPID: c_int = 0x2000_0000;
pub const CLONE_NEWNET: c_int = 0x4000_0000;

pub const MS_RDONLY: c_ulong = 1;
pub const MS_NOSUID: c_ulong = 2;
pub const MS_NODEV: c_ulong = 4;
pub const MS_NOEXEC: c_ulong = 8;
pub const MS_REMOUNT: c_ulong = 32;
pub const MS_BIND: c_ulong = 4096;
pub const MS_REC: c_ulong = 16384;
pub const MS_PRIVATE: c_ulong = 1 << 18;
pub const MOUNT_ATTR_RDONLY: u64 = 1;
pub const MOUNT_ATTR_NOSUID: u64 = 2;
pub const AT_FDCWD: c_int = -100;
pub const AT_RECURSIVE: c_uint = 0x8000;

pub const PR_SET_PDEATHSIG: c_int = 1;
pub const PR_SET_SECCOMP: c_int = 22;
pub const PR_CAPBSET_DROP: c_int = 24;
pub const PR_SET_NO_NEW_PRIVS: c_int = 38;
pub const PR_CAP_AMBIENT: c_int = 47;
pub const PR_CAP_AMBIENT_CLEAR_ALL: c_ulong = 4;
pub const SECCOMP_MODE_FILTER: c_ulong = 2;

pub const RLIMIT_CPU: c_int = 0;
pub const RLIMIT_FSIZE: c_int = 1;
pub const RLIMIT_CORE: c_int = 4;
pub const RLIMIT_NPROC: c_int = 6;
pub const RLIMIT_NOFILE: c_int = 7;
pub const RLIMIT_AS: c_int = 9;

pub const SIGHUP: c_int = 1;
pub const SIGINT: c_int = 2;
pub const SIGKILL: c_int = 9;
pub const SIGPIPE: c_int = 13;
pub const SIGTERM: c_int = 15;
pub const SIGCHLD: c_int = 17;
pub const SIG_BLOCK: c_int = 0;
pub const SIG_SETMASK: c_int = 2;
pub const WNOHANG: c_int = 1;
pub const POLLERR: i16 = 0x008;

pub const AF_UNIX: c_int = 1;
pub const AF_INET: c_int = 2;
pub const AF_INET6: c_int = 10;
pub const AF_NETLINK: c_int = 16;
pub const AF_PACKET: c_int = 17;
pub const SOCK_STREAM: c_int = 1;
pub const SOCK_DGRAM: c_int = 2;
pub const SOCK_RAW: c_int = 3;
pub const SOCK_CLOEXEC: c_int = 0o2000000;
pub const O_CLOEXEC: c_int = 0o2000000;
pub const F_GETFD: c_int = 1;
pub const F_SETFD: c_int = 2;
pub const CLOSE_RANGE_CLOEXEC: c_uint = 4;

pub const SIOCGIFFLAGS: c_ulong = 0x8913;
pub const SIOCSIFFLAGS: c_ulong = 0x8914;
pub const IFF_UP: i16 = 1;

pub const EPERM: i32 = 1;
pub const EINTR: i32 = 4;
pub const EAGAIN: i32 = 11;
pub const ENOENT: i32 = 2;
pub const EACCES: i32 = 13;
pub const ECHILD: i32 = 10;
pub const ENOSYS: i32 = 38;

/// Turn a C return value into a Result, naming the call that failed.
pub fn check(ret: c_long, what: &str) -> Result<c_long, String> {
    if ret < 0 {
        Err(format!("{what}: {}", io::Error::last_os_error()))
    } else {
        Ok(ret)
    }
}

pub fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub fn cstr(text: &str) -> Result<CString, String> {
    CString::new(text).map_err(|_| format!("argument contains a NUL byte: {text:?}"))
}

pub fn signal_set(signals: &[c_int]) -> SigSet {
    let mut set = SigSet { bits: [0; 16] };
    unsafe {
        sigemptyset(&mut set);
        for sig in signals {
            sigaddset(&mut set, *sig);
        }
    }
    set
}

pub fn empty_signal_set() -> SigSet {
    signal_set(&[])
}

/// Decoded `waitpid` status: `Ok(code)` for an exit, `Err(signal)` for a death by signal.
pub fn decode_status(status: c_int) -> Result<i32, i32> {
    let low = status & 0x7f;
    if low == 0 {
        Ok((status >> 8) & 0xff)
    } else {
        Err(low)
    }
}

pub fn errno_name(code: i32) -> String {
    let name = match code {
        1 => "EPERM",
        2 => "ENOENT",
        13 => "EACCES",
        22 => "EINVAL",
        38 => "ENOSYS",
        93 => "EPROTONOSUPPORT",
        94 => "ESOCKTNOSUPPORT",
        97 => "EAFNOSUPPORT",
        99 => "EADDRNOTAVAIL",
        101 => "ENETUNREACH",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        113 => "EHOSTUNREACH",
        115 => "EINPROGRESS",
        _ => return format!("errno {code}"),
    };
    name.to_string()
}

pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => "signal",
    }
}
