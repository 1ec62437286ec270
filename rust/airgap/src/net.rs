//! The job's network: a fresh namespace whose only interface is loopback.
//!
//! Loopback is brought up so local IPC libraries that expect it do not fail
//! confusingly; it reaches nothing but the namespace itself, and the seccomp filter
//! refuses AF_INET/AF_INET6 sockets anyway.

use crate::sys;

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

pub fn loopback_up() -> Result<(), String> {
    let fd = unsafe { sys::socket(sys::AF_INET, sys::SOCK_DGRAM | sys::SOCK_CLOEXEC, 0) };
    sys::check(fd as i64, "loopback socket")?;
    let mut req = IfReq { name: [0; 16], flags: 0, _pad: [0; 22] };
    req.name[..2].copy_from_slice(b"lo");
    let result = unsafe {
        let got = sys::ioctl(fd, sys::SIOCGIFFLAGS, &mut req as *mut IfReq);
        req.flags |= sys::IFF_UP;
        if got < 0 { got } else { sys::ioctl(fd, sys::SIOCSIFFLAGS, &mut req as *mut IfReq) }
    };
    unsafe { sys::close(fd) };
    sys::check(result as i64, "bring loopback up").map(|_| ())
}
