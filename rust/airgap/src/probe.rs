//! `rapha-airgap probe`: evidence that the sandbox it runs in is sealed.
//!
//! Run it *inside* the sandbox (`rapha-airgap exec ... -- rapha-airgap probe`): it
//! tries each way out and prints one JSON record of what it found. It never sandboxes
//! itself, so the record describes the real job environment, not a copy of it.
//!
//! Probes aimed at outside addresses (192.0.2.1, TEST-NET-1, never routed) only run
//! when the process is already sealed (a seccomp filter active and only loopback
//! visible); otherwise they are reported as not blocked without sending anything, so a
//! probe run outside a sandbox can neither pass nor emit a packet.
//!
//! `--inet-loopback` says the sandbox was built for a distributed job (`exec
//! --allow-inet-loopback`): the record then names that filter variant and its digest, and
//! the loopback probes find their sockets created but nothing to reach, because the
//! host's 127.0.0.1 is another namespace's. Whether AF_INET sockets are in fact allowed
//! is measured, not taken from the flag (`af_inet`, `seccomp.filter_matches`).

use std::ffi::c_int;
use std::fs;
use std::ptr;

use crate::json::{quote, Object};
use crate::{seccomp, sys};

pub struct Ports {
    pub tcp: u16,
    pub udp: u16,
    pub dns: u16,
}

struct Outcome {
    target: String,
    blocked: bool,
    detail: String,
}

fn blocked(target: &str, errno: i32) -> Outcome {
    Outcome { target: target.into(), blocked: true, detail: format!("blocked: {}", sys::errno_name(errno)) }
}

fn open(target: &str, detail: &str) -> Outcome {
    Outcome { target: target.into(), blocked: false, detail: format!("open: {detail}") }
}

fn new_socket(domain: c_int, kind: c_int, protocol: c_int) -> Result<c_int, i32> {
    let fd = unsafe { sys::socket(domain, kind | sys::SOCK_CLOEXEC, protocol) };
    if fd < 0 { Err(sys::errno()) } else { Ok(fd) }
}

fn sockaddr_v4(ip: [u8; 4], port: u16) -> [u8; 16] {
    let mut addr = [0u8; 16];
    addr[..2].copy_from_slice(&(sys::AF_INET as u16).to_ne_bytes());
    addr[2..4].copy_from_slice(&port.to_be_bytes());
    addr[4..8].copy_from_slice(&ip);
    addr
}

fn sockaddr_v6_loopback(port: u16) -> [u8; 28] {
    let mut addr = [0u8; 28];
    addr[..2].copy_from_slice(&(sys::AF_INET6 as u16).to_ne_bytes());
    addr[2..4].copy_from_slice(&port.to_be_bytes());
    addr[23] = 1;
    addr
}

/// A failed connect is "blocked" only when it failed before leaving the namespace; a
/// timeout means a route existed and a packet may have gone out.
fn tcp(target: &str, domain: c_int, addr: &[u8]) -> Outcome {
    let fd = match new_socket(domain, sys::SOCK_STREAM, 0) {
        Ok(fd) => fd,
        Err(errno) => return blocked(target, errno),
    };
    let timeout: [i64; 2] = [1, 0];
    let ret = unsafe {
        sys::setsockopt(fd, 1, 21, timeout.as_ptr() as *const _, 16); // SOL_SOCKET, SO_SNDTIMEO
        sys::connect(fd, addr.as_ptr() as *const _, addr.len() as u32)
    };
    let errno = sys::errno();
    unsafe { sys::close(fd) };
    match (ret, errno) {
        (0, _) => open(target, "connected"),
        (_, 110) | (_, 115) | (_, 11) => open(target, "connect timed out after sending"),
        (_, errno) => Outcome {
            target: target.into(),
            blocked: true,
            detail: format!("blocked: socket created, connect failed with {}", sys::errno_name(errno)),
        },
    }
}

fn udp(target: &str, addr: &[u8], payload: &[u8]) -> Outcome {
    let fd = match new_socket(sys::AF_INET, sys::SOCK_DGRAM, 0) {
        Ok(fd) => fd,
        Err(errno) => return blocked(target, errno),
    };
    let sent = unsafe {
        sys::sendto(fd, payload.as_ptr() as *const _, payload.len(), 0, addr.as_ptr() as *const _, addr.len() as u32)
    };
    let errno = sys::errno();
    unsafe { sys::close(fd) };
    if sent >= 0 {
        open(target, "datagram sent")
    } else {
        Outcome {
            target: target.into(),
            blocked: true,
            detail: format!("blocked: socket created, send failed with {}", sys::errno_name(errno)),
        }
    }
}

/// UDP to the loopback when AF_INET sockets are allowed: a datagram to 127.0.0.1 is then
/// always "sent", so what counts is where it went. On a connected socket the kernel reports
/// ECONNREFUSED when the loopback it reached had nobody at that port: the sandbox's own,
/// since the host has a listener there. No answer at all is counted as open.
fn udp_own_loopback(target: &str, addr: &[u8], payload: &[u8]) -> Outcome {
    let fd = match new_socket(sys::AF_INET, sys::SOCK_DGRAM, 0) {
        Ok(fd) => fd,
        Err(errno) => return blocked(target, errno),
    };
    let timeout: [i64; 2] = [1, 0];
    let mut answer = [0u8; 512];
    let (sent, received) = unsafe {
        sys::setsockopt(fd, 1, 20, timeout.as_ptr() as *const _, 16); // SOL_SOCKET, SO_RCVTIMEO
        let connected = sys::connect(fd, addr.as_ptr() as *const _, addr.len() as u32);
        let sent = if connected < 0 { -1 } else { sys::sendto(fd, payload.as_ptr() as *const _, payload.len(), 0, ptr::null(), 0) };
        (sent, if sent < 0 { -1 } else { sys::recv(fd, answer.as_mut_ptr() as *mut _, answer.len(), 0) })
    };
    let errno = sys::errno();
    unsafe { sys::close(fd) };
    match (sent, received, errno) {
        (s, _, _) if s < 0 => Outcome { target: target.into(), blocked: true,
                                        detail: format!("blocked: socket created, send failed with {}", sys::errno_name(errno)) },
        (_, r, 111) if r < 0 => Outcome { target: target.into(), blocked: true,
                                          detail: "blocked: reached only the sandbox's own loopback (ECONNREFUSED)".into() },
        (_, r, _) if r >= 0 => open(target, "answered"),
        _ => open(target, "datagram sent, no answer"),
    }
}

/// NETLINK_ROUTE where the distributed filter allows it (interface listings): the probe
/// asks the kernel to add an address to `lo` and counts it blocked only when that change
/// is refused (EPERM: the job has no CAP_NET_ADMIN), never when the socket merely opens.
fn netlink_route_change(target: &str) -> Outcome {
    let fd = match new_socket(sys::AF_NETLINK, sys::SOCK_RAW, 0) {
        Ok(fd) => fd,
        Err(errno) => return blocked(target, errno),
    };
    // nlmsghdr (RTM_NEWADDR, REQUEST|ACK|EXCL|CREATE), ifaddrmsg (AF_INET /8 on ifindex 1),
    // rtattr IFA_LOCAL 10.0.0.1
    let mut request = Vec::with_capacity(32);
    request.extend_from_slice(&32u32.to_ne_bytes());
    request.extend_from_slice(&20u16.to_ne_bytes());
    request.extend_from_slice(&(0x1u16 | 0x4 | 0x200 | 0x400).to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes());
    request.extend_from_slice(&0u32.to_ne_bytes());
    request.extend_from_slice(&[sys::AF_INET as u8, 8, 0, 0]);
    request.extend_from_slice(&1u32.to_ne_bytes());
    request.extend_from_slice(&8u16.to_ne_bytes());
    request.extend_from_slice(&2u16.to_ne_bytes());
    request.extend_from_slice(&[10, 0, 0, 1]);
    let timeout: [i64; 2] = [1, 0];
    let mut answer = [0u8; 256];
    let received = unsafe {
        sys::setsockopt(fd, 1, 20, timeout.as_ptr() as *const _, 16); // SOL_SOCKET, SO_RCVTIMEO
        let kernel = [sys::AF_NETLINK as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        if sys::sendto(fd, request.as_ptr() as *const _, request.len(), 0, kernel.as_ptr() as *const _, 12) < 0 {
            -1
        } else {
            sys::recv(fd, answer.as_mut_ptr() as *mut _, answer.len(), 0)
        }
    };
    unsafe { sys::close(fd) };
    // an NLMSG_ERROR (type 2) reply carries the negated errno after the 16-byte header
    let kind = u16::from_ne_bytes([answer[4], answer[5]]);
    let error = i32::from_ne_bytes([answer[16], answer[17], answer[18], answer[19]]);
    if received >= 20 && kind == 2 && error == -sys::EPERM {
        Outcome { target: target.into(), blocked: true, detail: "blocked: socket created, changes refused with EPERM".into() }
    } else {
        open(target, "a change to the job's interfaces was not refused")
    }
}

fn socket_only(target: &str, domain: c_int, kind: c_int, protocol: c_int) -> Outcome {
    match new_socket(domain, kind, protocol) {
        Ok(fd) => {
            unsafe { sys::close(fd) };
            open(target, "socket created")
        }
        Err(errno) => blocked(target, errno),
    }
}

fn syscall_refused(target: &str, ret: i64) -> Outcome {
    if ret < 0 { blocked(target, sys::errno()) } else { open(target, "call succeeded") }
}

/// A DNS query for "rapha-probe.invalid", type A.
fn dns_query() -> Vec<u8> {
    let mut packet = vec![0x52, 0x41, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["rapha-probe", "invalid"] {
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.extend_from_slice(&[0, 0, 1, 0, 1]);
    packet
}

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

/// "65534\t65534\t..." as a JSON list of numbers (real, effective, saved, filesystem).
fn id_list(field: &str) -> String {
    let ids: Vec<String> = field.split_whitespace().filter(|v| v.parse::<u64>().is_ok()).map(String::from).collect();
    format!("[{}]", ids.join(","))
}

fn interfaces() -> Vec<String> {
    let text = fs::read_to_string("/proc/self/net/dev").unwrap_or_default();
    text.lines().skip(2).filter_map(|l| l.split(':').next()).map(|n| n.trim().to_string()).collect()
}

/// The device nodes in the job's /dev (names only, sorted): with --private-dev the
/// standard ones and those granted, which the edge checks.
fn device_nodes() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir("/dev").map(|entries| {
        entries.filter_map(|e| e.ok()).filter_map(|e| e.file_name().to_str().map(String::from)).collect()
    }).unwrap_or_default();
    names.sort();
    names
}

fn namespace(kind: &str) -> String {
    let link = fs::read_link(format!("/proc/self/ns/{kind}")).map(|p| p.display().to_string()).unwrap_or_default();
    let inode = link.trim_start_matches(&format!("{kind}:[")).trim_end_matches(']');
    match inode.parse::<u64>() {
        Ok(number) => number.to_string(),
        Err(_) => "null".to_string(),
    }
}

fn run_probes(ports: &Ports, sealed: bool, mode: seccomp::Mode) -> Vec<(&'static str, Outcome)> {
    let lo = [127, 0, 0, 1];
    let udp = if mode == seccomp::Mode::InetLoopback { udp_own_loopback } else { udp };
    let outside = [192, 0, 2, 1];
    let mut probes = vec![
        ("tcp_host_loopback", tcp(&format!("127.0.0.1:{}", ports.tcp), sys::AF_INET, &sockaddr_v4(lo, ports.tcp))),
        ("tcp6_host_loopback", tcp(&format!("[::1]:{}", ports.tcp), sys::AF_INET6, &sockaddr_v6_loopback(ports.tcp))),
        ("udp_host_loopback", udp(&format!("127.0.0.1:{}", ports.udp), &sockaddr_v4(lo, ports.udp), b"rapha-probe")),
        ("dns_host_resolver", udp(&format!("127.0.0.1:{}", ports.dns), &sockaddr_v4(lo, ports.dns), &dns_query())),
        ("raw_icmp", socket_only("AF_INET/SOCK_RAW/ICMP", sys::AF_INET, sys::SOCK_RAW, 1)),
        ("raw_icmp6", socket_only("AF_INET6/SOCK_RAW/ICMPV6", sys::AF_INET6, sys::SOCK_RAW, 58)),
        ("icmp_datagram", socket_only("AF_INET/SOCK_DGRAM/ICMP", sys::AF_INET, sys::SOCK_DGRAM, 1)),
        ("packet", socket_only("AF_PACKET/SOCK_RAW", sys::AF_PACKET, sys::SOCK_RAW, 0x0300)),
        ("netlink_route", if mode == seccomp::Mode::InetLoopback {
            netlink_route_change("AF_NETLINK/NETLINK_ROUTE")
        } else {
            socket_only("AF_NETLINK/NETLINK_ROUTE", sys::AF_NETLINK, sys::SOCK_RAW, 0)
        }),
        ("netlink_sock_diag", socket_only("AF_NETLINK/NETLINK_SOCK_DIAG", sys::AF_NETLINK, sys::SOCK_RAW, 4)),
        ("io_uring", syscall_refused("io_uring_setup", unsafe { sys::syscall(sys::nr::IO_URING_SETUP, 1u32, [0u8; 120].as_mut_ptr()) })),
        ("unshare_net", syscall_refused("unshare(CLONE_NEWUSER|CLONE_NEWNET)", unsafe { sys::unshare(sys::CLONE_NEWUSER | sys::CLONE_NEWNET) } as i64)),
    ];
    #[cfg(target_arch = "x86_64")]
    probes.push(("x32_socket", syscall_refused("x32 socket(AF_INET)", unsafe {
        sys::syscall(0x4000_0000 | sys::nr::SOCKET, sys::AF_INET, sys::SOCK_STREAM, 0)
    })));
    if sealed {
        probes.push(("tcp_outside", tcp("192.0.2.1:443", sys::AF_INET, &sockaddr_v4(outside, 443))));
        probes.push(("udp_outside", udp("192.0.2.1:53", &sockaddr_v4(outside, 53), &dns_query())));
    } else {
        for name in ["tcp_outside", "udp_outside"] {
            probes.push((name, Outcome { target: "192.0.2.1".into(), blocked: false, detail: "skipped: not sealed".into() }));
        }
    }
    probes
}

pub fn run(ports: &Ports, mode: seccomp::Mode) -> i32 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let seccomp_mode = status_field(&status, "Seccomp:");
    let interfaces = interfaces();
    let sealed = seccomp_mode == "2" && interfaces == ["lo"];
    let af_unix = socket_only("AF_UNIX/SOCK_STREAM", sys::AF_UNIX, sys::SOCK_STREAM, 0);
    let af_inet = socket_only("AF_INET/SOCK_STREAM", sys::AF_INET, sys::SOCK_STREAM, 0);
    let filter_matches = af_inet.blocked != (mode == seccomp::Mode::InetLoopback);
    let probes = run_probes(ports, sealed, mode);
    let mut ns = Object::new();
    for kind in ["net", "mnt", "pid", "ipc", "uts", "user", "cgroup"] {
        ns.raw(kind, &namespace(kind));
    }
    let mut outcomes = Object::new();
    for (name, outcome) in &probes {
        let mut one = Object::new();
        one.string("target", &outcome.target).raw("blocked", &outcome.blocked.to_string()).string("outcome", &outcome.detail);
        outcomes.raw(name, &one.finish());
    }
    let mut filter = Object::new();
    filter.string("mode", &seccomp_mode).string("filters", &status_field(&status, "Seccomp_filters:"))
        .string("filter_sha256", &seccomp::digest_for(mode)).string("filter", mode.name())
        .raw("filter_matches", &filter_matches.to_string());
    let mut caps = Object::new();
    for key in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        caps.string(key, &status_field(&status, &format!("{key}:")));
    }
    let list = |items: &[String]| format!("[{}]", items.iter().map(|i| quote(i)).collect::<Vec<_>>().join(","));
    let mut record = Object::new();
    record
        .string("tool", "rapha-airgap").string("version", env!("CARGO_PKG_VERSION"))
        .string("arch", std::env::consts::ARCH).raw("pid", &std::process::id().to_string())
        .raw("namespaces", &ns.finish()).raw("interfaces", &list(&interfaces)).raw("dev", &list(&device_nodes()))
        .raw("seccomp", &filter.finish())
        .raw("no_new_privs", &(status_field(&status, "NoNewPrivs:") == "1").to_string())
        .raw("uid", &id_list(&status_field(&status, "Uid:"))).raw("gid", &id_list(&status_field(&status, "Gid:")))
        .raw("groups", &id_list(&status_field(&status, "Groups:"))).raw("capabilities", &caps.finish())
        .raw("sealed", &sealed.to_string()).string("af_unix", &af_unix.detail)
        .string("af_inet", &af_inet.detail)
        .raw("probes", &outcomes.finish())
        .raw("all_blocked", &probes.iter().all(|(_, o)| o.blocked).to_string());
    println!("{}", record.finish());
    0
}
