//! The seccomp BPF filter, written by hand.
//!
//! Threats it answers: researcher code that opens any socket but AF_UNIX (the network
//! namespace already has no route out; this makes the refusal happen at `socket()` so no
//! packet is ever built), that re-enters or builds namespaces (`unshare`, `setns`,
//! `clone` with namespace flags, `mount`), that inspects other processes (`ptrace`,
//! `process_vm_*`), or that reaches kernel surfaces with a record of escapes (`bpf`,
//! `io_uring_*` — which can open sockets without `socket()` —, `userfaultfd`, keyrings,
//! `perf_event_open`, modules, kexec). A foreign ABI (i386, arm32) is killed outright and
//! the x32 ABI on x86_64 is refused, because their syscall numbers would slip past a
//! filter written for the native table.
//!
//! The digest is SHA-256 over the filter as the kernel receives it: each instruction as
//! `code` (u16 LE), `jt` (u8), `jf` (u8), `k` (u32 LE).
//!
//! A second variant, for distributed jobs (`exec --allow-inet-loopback`), also lets
//! `socket()` create AF_INET and AF_INET6 stream and datagram sockets with the default,
//! TCP or UDP protocol: what the gloo and NCCL rendezvous on loopback needs, and
//! AF_NETLINK with NETLINK_ROUTE alone, because both libraries list the interfaces
//! (`getifaddrs`, which glibc implements over NETLINK_ROUTE). In the job's empty network
//! namespace that lists `lo` only, and every change it could ask for needs CAP_NET_ADMIN,
//! which the job does not have (the probe checks that an address change is refused). Raw,
//! packet, every other netlink protocol and every other family stay refused, `socketpair`
//! stays AF_UNIX only, and the namespace holds nothing but its own `lo`, so such a socket
//! reaches only the job's other processes. Each variant has its own digest.

use crate::sha256;
use crate::sys;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SockFilter {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const SockFilter,
}

const LD_W_ABS: u16 = 0x20;
const ALU_AND_K: u16 = 0x54;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARG0_LOW: u32 = 16; // little-endian: low word of args[0]
const OFFSET_ARG1_LOW: u32 = 24;
const OFFSET_ARG2_LOW: u32 = 32;

/// `SOCK_TYPE_MASK`: the socket type without SOCK_NONBLOCK / SOCK_CLOEXEC.
const SOCK_TYPE_MASK: u32 = 0xf;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
const NETLINK_ROUTE: u32 = 0;

/// Which sockets the job may create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// AF_UNIX only: every job but a distributed one.
    UnixOnly,
    /// AF_UNIX, and AF_INET/AF_INET6 TCP and UDP, for a rendezvous on the job's own
    /// loopback (the namespace has no other interface and no route).
    InetLoopback,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::UnixOnly => "unix-only",
            Mode::InetLoopback => "inet-loopback",
        }
    }
}

/// `clone` flags that would create namespaces (NEWNS, NEWCGROUP, NEWUTS, NEWIPC,
/// NEWUSER, NEWPID, NEWNET).
const NAMESPACE_FLAGS: u32 = 0x7e02_0000;

#[cfg(target_arch = "x86_64")]
mod table {
    pub const AUDIT_ARCH: u32 = 0xc000_003e;
    pub const X32_BIT: Option<u32> = Some(0x4000_0000);
    pub const SOCKET: u32 = 41;
    pub const SOCKETPAIR: u32 = 53;
    pub const CLONE: u32 = 56;
    pub const CLONE3: u32 = 435;
    /// ptrace syslog uselib vhangup pivot_root _sysctl chroot acct mount umount2 swapon
    /// swapoff reboot iopl ioperm init_module delete_module quotactl lookup_dcookie
    /// kexec_load add_key request_key keyctl unshare perf_event_open name_to_handle_at
    /// open_by_handle_at setns process_vm_readv process_vm_writev finit_module
    /// kexec_file_load bpf userfaultfd io_uring_{setup,enter,register} open_tree
    /// move_mount fsopen fsconfig fsmount fspick pidfd_getfd process_madvise mount_setattr
    pub const DENIED: &[u32] = &[
        101, 103, 134, 153, 155, 156, 161, 163, 165, 166, 167, 168, 169, 172, 173, 175, 176, 179,
        212, 246, 248, 249, 250, 272, 298, 303, 304, 308, 310, 311, 313, 320, 321, 323, 425, 426,
        427, 428, 429, 430, 431, 432, 433, 438, 440, 442,
    ];
}

#[cfg(target_arch = "aarch64")]
mod table {
    pub const AUDIT_ARCH: u32 = 0xc000_00b7;
    pub const X32_BIT: Option<u32> = None;
    pub const SOCKET: u32 = 198;
    pub const SOCKETPAIR: u32 = 199;
    pub const CLONE: u32 = 220;
    pub const CLONE3: u32 = 435;
    /// Same calls as the x86_64 list, minus those aarch64 lacks (uselib, _sysctl, iopl,
    /// ioperm).
    pub const DENIED: &[u32] = &[
        117, 116, 58, 41, 51, 89, 40, 39, 224, 225, 142, 105, 106, 60, 18, 104, 217, 218, 219, 97,
        241, 264, 265, 268, 270, 271, 273, 294, 280, 282, 425, 426, 427, 428, 429, 430, 431, 432,
        433, 438, 440, 442,
    ];
}

#[derive(Clone, Copy)]
enum Target {
    Next,
    Allow,
    Deny,
    NoSys,
    Kill,
    SocketCheck,
    CloneCheck,
    InetCheck,
    TypeCheck,
    ProtocolCheck,
    NetlinkCheck,
}

const LABELS: usize = 11;

enum Op {
    Load(u32),
    And(u32),
    Jump(u16, u32, Target, Target),
    Ret(u32),
    Label(Target),
}

fn program(mode: Mode) -> Vec<Op> {
    use Target::*;
    let socket_check = if mode == Mode::InetLoopback { InetCheck } else { SocketCheck };
    let mut ops = vec![
        Op::Load(OFFSET_ARCH),
        Op::Jump(JEQ_K, table::AUDIT_ARCH, Next, Kill),
        Op::Load(OFFSET_NR),
    ];
    if let Some(bit) = table::X32_BIT {
        ops.push(Op::Jump(JGE_K, bit, Deny, Next));
    }
    for nr in table::DENIED {
        ops.push(Op::Jump(JEQ_K, *nr, Deny, Next));
    }
    ops.push(Op::Jump(JEQ_K, table::CLONE3, NoSys, Next));
    ops.push(Op::Jump(JEQ_K, table::SOCKET, socket_check, Next));
    ops.push(Op::Jump(JEQ_K, table::SOCKETPAIR, SocketCheck, Next));
    ops.push(Op::Jump(JEQ_K, table::CLONE, CloneCheck, Next));
    ops.push(Op::Ret(RET_ALLOW));
    ops.push(Op::Label(SocketCheck));
    ops.push(Op::Load(OFFSET_ARG0_LOW));
    ops.push(Op::Jump(JEQ_K, sys::AF_UNIX as u32, Allow, Deny));
    if mode == Mode::InetLoopback {
        inet_checks(&mut ops);
    }
    ops.push(Op::Label(CloneCheck));
    ops.push(Op::Load(OFFSET_ARG0_LOW));
    ops.push(Op::Jump(JSET_K, NAMESPACE_FLAGS, Deny, Allow));
    ops.push(Op::Label(Allow));
    ops.push(Op::Ret(RET_ALLOW));
    ops.push(Op::Label(Deny));
    ops.push(Op::Ret(RET_ERRNO | sys::EPERM as u32));
    ops.push(Op::Label(NoSys));
    // clone3 passes its flags in memory a filter cannot read; ENOSYS makes the C
    // library fall back to clone, whose flags the filter checks.
    ops.push(Op::Ret(RET_ERRNO | sys::ENOSYS as u32));
    ops.push(Op::Label(Kill));
    ops.push(Op::Ret(RET_KILL_PROCESS));
    ops
}

/// socket(domain, type, protocol) in the distributed variant: AF_UNIX as always; AF_INET
/// or AF_INET6 only as SOCK_STREAM or SOCK_DGRAM with protocol 0, TCP or UDP (no raw
/// socket, no ICMP datagram socket, no SCTP); AF_NETLINK only for NETLINK_ROUTE (the
/// interface listing); anything else refused.
fn inet_checks(ops: &mut Vec<Op>) {
    use Target::*;
    ops.push(Op::Label(InetCheck));
    ops.push(Op::Load(OFFSET_ARG0_LOW));
    ops.push(Op::Jump(JEQ_K, sys::AF_UNIX as u32, Allow, Next));
    ops.push(Op::Jump(JEQ_K, sys::AF_INET as u32, TypeCheck, Next));
    ops.push(Op::Jump(JEQ_K, sys::AF_INET6 as u32, TypeCheck, Next));
    ops.push(Op::Jump(JEQ_K, sys::AF_NETLINK as u32, NetlinkCheck, Deny));
    ops.push(Op::Label(NetlinkCheck));
    ops.push(Op::Load(OFFSET_ARG2_LOW));
    ops.push(Op::Jump(JEQ_K, NETLINK_ROUTE, Allow, Deny));
    ops.push(Op::Label(TypeCheck));
    ops.push(Op::Load(OFFSET_ARG1_LOW));
    ops.push(Op::And(SOCK_TYPE_MASK));
    ops.push(Op::Jump(JEQ_K, sys::SOCK_STREAM as u32, ProtocolCheck, Next));
    ops.push(Op::Jump(JEQ_K, sys::SOCK_DGRAM as u32, ProtocolCheck, Deny));
    ops.push(Op::Label(ProtocolCheck));
    ops.push(Op::Load(OFFSET_ARG2_LOW));
    ops.push(Op::Jump(JEQ_K, 0, Allow, Next));
    ops.push(Op::Jump(JEQ_K, IPPROTO_TCP, Allow, Next));
    ops.push(Op::Jump(JEQ_K, IPPROTO_UDP, Allow, Deny));
}

fn label_index(target: Target) -> usize {
    target as usize
}

/// The filter of every job but a distributed one.
#[allow(dead_code)] // the callers name the variant; kept for readers and tests
pub fn filter() -> Vec<SockFilter> {
    filter_for(Mode::UnixOnly)
}

/// Assemble the program: labels become relative jump offsets.
pub fn filter_for(mode: Mode) -> Vec<SockFilter> {
    let ops = program(mode);
    let mut positions = [usize::MAX; LABELS];
    let mut count = 0usize;
    for op in &ops {
        match op {
            Op::Label(target) => positions[label_index(*target)] = count,
            _ => count += 1,
        }
    }
    let mut out = Vec::with_capacity(count);
    for op in ops {
        let here = out.len();
        let offset = |target: Target| -> u8 {
            match target {
                Target::Next => 0,
                other => {
                    let distance = positions[label_index(other)] - here - 1;
                    u8::try_from(distance).expect("seccomp jump out of range")
                }
            }
        };
        match op {
            Op::Load(k) => out.push(SockFilter { code: LD_W_ABS, jt: 0, jf: 0, k }),
            Op::And(k) => out.push(SockFilter { code: ALU_AND_K, jt: 0, jf: 0, k }),
            Op::Jump(code, k, jt, jf) => {
                out.push(SockFilter { code, jt: offset(jt), jf: offset(jf), k })
            }
            Op::Ret(k) => out.push(SockFilter { code: RET_K, jt: 0, jf: 0, k }),
            Op::Label(_) => {}
        }
    }
    out
}

#[allow(dead_code)] // as filter()
pub fn digest() -> String {
    digest_for(Mode::UnixOnly)
}

pub fn digest_for(mode: Mode) -> String {
    let mut bytes = Vec::new();
    for ins in filter_for(mode) {
        bytes.extend_from_slice(&ins.code.to_le_bytes());
        bytes.push(ins.jt);
        bytes.push(ins.jf);
        bytes.extend_from_slice(&ins.k.to_le_bytes());
    }
    sha256::hex_digest(&bytes)
}

/// Install the filter on the calling thread. no_new_privs must already be set.
pub fn install(filter: &[SockFilter]) -> Result<(), String> {
    let prog = SockFprog { len: filter.len() as u16, filter: filter.as_ptr() };
    let ret = unsafe {
        sys::prctl(
            sys::PR_SET_SECCOMP,
            sys::SECCOMP_MODE_FILTER,
            &prog as *const SockFprog as std::ffi::c_ulong,
            0,
            0,
        )
    };
    sys::check(ret as i64, "seccomp filter").map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::c_int;

    #[test]
    fn jumps_land_on_returns() {
        let prog = filter();
        assert_eq!(prog[0].code, LD_W_ABS);
        assert_eq!(prog[1].jt, 0);
        assert_eq!(prog[2 + prog[1].jf as usize].k, RET_KILL_PROCESS);
        for (i, ins) in prog.iter().enumerate() {
            if ins.code & 0x07 == 0x05 {
                for off in [ins.jt, ins.jf] {
                    assert!(i + 1 + (off as usize) < prog.len());
                }
            }
        }
        assert_eq!(prog.last().unwrap().code, RET_K);
    }

    #[test]
    fn digest_is_stable() {
        assert_eq!(digest(), digest());
        assert_eq!(digest().len(), 64);
        assert_ne!(digest_for(Mode::InetLoopback), digest());
    }

    /// A classic-BPF interpreter for the instructions the filter uses, run over a
    /// `seccomp_data` (nr, arch, instruction pointer, six arguments).
    fn decide(prog: &[SockFilter], nr: u32, args: [u64; 6]) -> u32 {
        let mut data = Vec::new();
        data.extend_from_slice(&nr.to_le_bytes());
        data.extend_from_slice(&table::AUDIT_ARCH.to_le_bytes());
        data.extend_from_slice(&0u64.to_le_bytes());
        for arg in args {
            data.extend_from_slice(&arg.to_le_bytes());
        }
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let ins = prog[pc];
            pc += 1;
            let taken = match ins.code {
                LD_W_ABS => {
                    let at = ins.k as usize;
                    acc = u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
                    continue;
                }
                ALU_AND_K => {
                    acc &= ins.k;
                    continue;
                }
                RET_K => return ins.k,
                JEQ_K => acc == ins.k,
                JGE_K => acc >= ins.k,
                JSET_K => acc & ins.k != 0,
                other => panic!("unexpected instruction {other:#x}"),
            };
            pc += if taken { ins.jt } else { ins.jf } as usize;
        }
    }

    fn socket(mode: Mode, domain: c_int, kind: c_int, protocol: c_int) -> u32 {
        decide(&filter_for(mode), table::SOCKET, [domain as u64, kind as u64, protocol as u64, 0, 0, 0])
    }

    const DENY: u32 = RET_ERRNO | sys::EPERM as u32;
    const NONBLOCK: c_int = 0o4000;

    #[test]
    fn unix_only_refuses_every_inet_socket() {
        let mode = Mode::UnixOnly;
        assert_eq!(socket(mode, sys::AF_UNIX, sys::SOCK_STREAM, 0), RET_ALLOW);
        for domain in [sys::AF_INET, sys::AF_INET6, sys::AF_NETLINK, sys::AF_PACKET] {
            for kind in [sys::SOCK_STREAM, sys::SOCK_DGRAM, sys::SOCK_RAW] {
                assert_eq!(socket(mode, domain, kind, 0), DENY, "domain {domain} type {kind}");
            }
        }
    }

    #[test]
    fn inet_loopback_allows_tcp_and_udp_only() {
        let mode = Mode::InetLoopback;
        assert_eq!(socket(mode, sys::AF_UNIX, sys::SOCK_STREAM, 0), RET_ALLOW);
        for domain in [sys::AF_INET, sys::AF_INET6] {
            assert_eq!(socket(mode, domain, sys::SOCK_STREAM, 0), RET_ALLOW);
            assert_eq!(socket(mode, domain, sys::SOCK_STREAM | sys::SOCK_CLOEXEC | NONBLOCK, 6), RET_ALLOW);
            assert_eq!(socket(mode, domain, sys::SOCK_DGRAM, 0), RET_ALLOW);
            assert_eq!(socket(mode, domain, sys::SOCK_DGRAM | sys::SOCK_CLOEXEC, 17), RET_ALLOW);
            assert_eq!(socket(mode, domain, sys::SOCK_RAW, 1), DENY, "raw ICMP");
            assert_eq!(socket(mode, domain, sys::SOCK_RAW, 6), DENY, "raw TCP");
            assert_eq!(socket(mode, domain, sys::SOCK_DGRAM, 1), DENY, "ICMP datagram (ping) socket");
            assert_eq!(socket(mode, domain, sys::SOCK_STREAM, 132), DENY, "SCTP");
            assert_eq!(socket(mode, domain, 5, 0), DENY, "SOCK_SEQPACKET");
            assert_eq!(socket(mode, domain, 10, 0), DENY, "SOCK_PACKET");
        }
        // the interface listing of getifaddrs, and no other netlink protocol
        assert_eq!(socket(mode, sys::AF_NETLINK, sys::SOCK_RAW | sys::SOCK_CLOEXEC, 0), RET_ALLOW);
        assert_eq!(socket(mode, sys::AF_NETLINK, sys::SOCK_DGRAM, 0), RET_ALLOW);
        for protocol in [4, 9, 12, 15, 16] {  // SOCK_DIAG, AUDIT, NETFILTER, KOBJECT_UEVENT, GENERIC
            assert_eq!(socket(mode, sys::AF_NETLINK, sys::SOCK_RAW, protocol), DENY, "netlink {protocol}");
        }
        for (domain, kind, protocol) in [(sys::AF_PACKET, sys::SOCK_RAW, 0x0300), (sys::AF_PACKET, sys::SOCK_DGRAM, 0),
                                         (38, 5, 0), (0, 0, 0)] {
            assert_eq!(socket(mode, domain, kind, protocol), DENY, "domain {domain}");
        }
    }

    #[test]
    fn inet_loopback_keeps_every_other_refusal() {
        let (unix, inet) = (filter_for(Mode::UnixOnly), filter_for(Mode::InetLoopback));
        let inet_pair = [sys::AF_INET as u64, sys::SOCK_STREAM as u64, 0, 0, 0, 0];
        assert_eq!(decide(&inet, table::SOCKETPAIR, inet_pair), DENY);
        for nr in table::DENIED {
            assert_eq!(decide(&inet, *nr, [0; 6]), DENY, "syscall {nr}");
            assert_eq!(decide(&unix, *nr, [0; 6]), DENY, "syscall {nr}");
        }
        let new_net = [0x4000_0000u64, 0, 0, 0, 0, 0];
        assert_eq!(decide(&inet, table::CLONE, new_net), DENY);
        assert_eq!(decide(&inet, table::CLONE, [0x11, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(decide(&inet, table::CLONE3, [0; 6]), RET_ERRNO | sys::ENOSYS as u32);
        assert_eq!(decide(&inet, 0, [0; 6]), RET_ALLOW); // read
    }
}
