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
}

enum Op {
    Load(u32),
    Jump(u16, u32, Target, Target),
    Ret(u32),
    Label(Target),
}

fn program() -> Vec<Op> {
    use Target::*;
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
    ops.push(Op::Jump(JEQ_K, table::SOCKET, SocketCheck, Next));
    ops.push(Op::Jump(JEQ_K, table::SOCKETPAIR, SocketCheck, Next));
    ops.push(Op::Jump(JEQ_K, table::CLONE, CloneCheck, Next));
    ops.push(Op::Ret(RET_ALLOW));
    ops.push(Op::Label(SocketCheck));
    ops.push(Op::Load(OFFSET_ARG0_LOW));
    ops.push(Op::Jump(JEQ_K, sys::AF_UNIX as u32, Allow, Deny));
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

fn label_index(target: Target) -> usize {
    target as usize
}

/// Assemble the program: labels become relative jump offsets.
pub fn filter() -> Vec<SockFilter> {
    let ops = program();
    let mut positions = [usize::MAX; 7];
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
            Op::Jump(code, k, jt, jf) => {
                out.push(SockFilter { code, jt: offset(jt), jf: offset(jf), k })
            }
            Op::Ret(k) => out.push(SockFilter { code: RET_K, jt: 0, jf: 0, k }),
            Op::Label(_) => {}
        }
    }
    out
}

pub fn digest() -> String {
    let mut bytes = Vec::new();
    for ins in filter() {
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
    }
}
