//! `rapha-airgap exec`: run a command sealed.
//!
//! Three processes:
//! - the *warden* (this process, outside): dies with the process that started it (the
//!   edge), enforces the wall clock, forwards a stop request as SIGKILL to the whole PID
//!   namespace, and passes the exit status on;
//! - the *init* (pid 1 of a new PID namespace): builds the network, mount, IPC and UTS
//!   namespaces, reaps orphans, and reports how the command ended. When it exits the
//!   kernel kills everything left in the namespace, so nothing outlives the job;
//! - the *command*: drops to the unprivileged ids without capabilities, applies the
//!   rlimits, sets no_new_privs, keeps only the named fds, installs the seccomp filter
//!   and execs.
//!
//! Exit status: the command's own code; 128+N when a signal N killed it (with a note on
//! stderr); 124 when the wall clock ran out; 125 when the sandbox could not be built
//! (nothing ran); 126/127 when the command could not be executed.

use std::ffi::{c_int, CString};
use std::fs;
use std::path::PathBuf;
use std::ptr;
use std::time::{Duration, Instant};

use crate::options::ExecOptions;
use crate::{devices, net, seccomp, sys, view};

pub const EXIT_TIMEOUT: i32 = 124;
pub const EXIT_SETUP: i32 = 125;

/// Die with the process that started us: a job must never outlive the edge that meters
/// and supervises it (a restarted edge would run the next job beside it).
///
/// PR_SET_PDEATHSIG fires when the *thread* that forked us ends, so the caller must start
/// us from a thread that lives at least as long as the job. And it only covers a parent
/// alive when it is set: one that died between its fork and this call has already left us
/// re-parented, which `--parent-pid` catches.
fn tie_to_parent(expected: Option<sys::Pid>) -> Result<(), String> {
    let ret = unsafe { sys::prctl(sys::PR_SET_PDEATHSIG, sys::SIGKILL as u64, 0, 0, 0) };
    sys::check(ret as i64, "parent-death signal")?;
    match expected {
        Some(pid) if unsafe { sys::getppid() } != pid => {
            Err("the process that started the sandbox is gone; nothing ran".into())
        }
        _ => Ok(()),
    }
}

/// Checks that need the host's view, done before anything is forked.
fn prepare(opts: &mut ExecOptions) -> Result<(), String> {
    if unsafe { sys::geteuid() } != 0 {
        return Err("exec must run as root (it builds namespaces, then drops to --uid)".into());
    }
    if let Some(dir) = &opts.workdir {
        let dir = fs::canonicalize(dir).map_err(|e| format!("job directory: {e}"))?;
        if !dir.is_dir() {
            return Err("job directory is not a directory".into());
        }
        opts.workdir = Some(dir);
    }
    opts.hidden = view::resolve_hidden(&opts.hidden);
    devices::check_dev_binds(&opts.dev_binds)?;
    opts.exposed.extend(devices::outside_proc(&opts.ro_binds));
    let exposed: Result<Vec<PathBuf>, String> = opts.exposed.iter()
        .map(|p| fs::canonicalize(p).map_err(|e| format!("--expose {}: {e}", p.display())))
        .collect();
    opts.exposed = exposed?;
    if let Some(dir) = &opts.workdir {
        if opts.hidden.iter().any(|h| h == dir) {
            return Err("the job directory is itself a hidden path".into());
        }
    }
    for fd in &opts.keep_fds {
        if unsafe { sys::fcntl(*fd, sys::F_GETFD) } < 0 {
            return Err(format!("--keep-fd {fd} is not an open descriptor"));
        }
    }
    Ok(())
}

pub fn run(mut opts: ExecOptions) -> i32 {
    if let Err(message) = tie_to_parent(opts.parent_pid).and_then(|_| prepare(&mut opts)) {
        eprintln!("rapha-airgap: {message}");
        return EXIT_SETUP;
    }
    match start(&opts) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("rapha-airgap: sandbox setup failed: {message}");
            EXIT_SETUP
        }
    }
}

fn start(opts: &ExecOptions) -> Result<i32, String> {
    let watched = sys::signal_set(&[sys::SIGCHLD, sys::SIGTERM, sys::SIGINT, sys::SIGHUP]);
    let mut old_mask = sys::empty_signal_set();
    unsafe { sys::sigprocmask(sys::SIG_BLOCK, &watched, &mut old_mask) };
    let mut fds = [0 as c_int; 2];
    sys::check(unsafe { sys::pipe2(fds.as_mut_ptr(), sys::O_CLOEXEC) } as i64, "pipe")?;
    let (report_r, report_w) = (fds[0], fds[1]);
    sys::check(unsafe { sys::unshare(sys::CLONE_NEWPID) } as i64, "new PID namespace")?;
    let pid = sys::check(unsafe { sys::fork() } as i64, "fork")? as sys::Pid;
    if pid == 0 {
        unsafe {
            sys::sigprocmask(sys::SIG_SETMASK, &old_mask, ptr::null_mut());
            sys::close(report_r);
        }
        init_main(opts, report_w);
    }
    unsafe { sys::close(report_w) };
    let report = read_all(report_r);
    if let Some((code, message)) = report.split_once(':') {
        kill_and_reap(pid);
        let code = code.parse::<i32>().unwrap_or(EXIT_SETUP);
        if code == EXIT_SETUP {
            return Err(message.to_string());
        }
        eprintln!("rapha-airgap: {message}");
        return Ok(code);
    }
    Ok(warden_wait(pid, &watched, opts.limits.wall_seconds))
}

fn read_all(fd: c_int) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let n = unsafe { sys::read(fd, buf.as_mut_ptr() as *mut _, buf.len()) };
        if n > 0 {
            out.extend_from_slice(&buf[..n as usize]);
        } else if n < 0 && sys::errno() == sys::EINTR {
            continue;
        } else {
            break;
        }
    }
    unsafe { sys::close(fd) };
    String::from_utf8_lossy(&out).into_owned()
}

/// Wait for the init, killing the whole namespace on timeout or on a stop request.
fn warden_wait(pid: sys::Pid, watched: &sys::SigSet, wall: Option<u64>) -> i32 {
    let deadline = wall.map(|s| Instant::now() + Duration::from_secs(s));
    loop {
        let mut status: c_int = 0;
        if unsafe { sys::waitpid(pid, &mut status, sys::WNOHANG) } == pid {
            return match sys::decode_status(status) {
                Ok(code) => code,
                Err(sig) => {
                    eprintln!("rapha-airgap: sandbox killed by signal {sig} ({})", sys::signal_name(sig));
                    128 + sig
                }
            };
        }
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if remaining == Some(Duration::ZERO) {
            kill_and_reap(pid);
            eprintln!("rapha-airgap: wall-clock limit of {} s reached; job killed", wall.unwrap_or(0));
            return EXIT_TIMEOUT;
        }
        let timeout = remaining.map(|r| sys::Timespec { sec: r.as_secs() as i64, nsec: r.subsec_nanos() as i64 });
        let timeout_ptr = timeout.as_ref().map_or(ptr::null(), |t| t as *const sys::Timespec);
        let sig = unsafe { sys::sigtimedwait(watched, ptr::null_mut(), timeout_ptr) };
        if sig == sys::SIGTERM || sig == sys::SIGINT || sig == sys::SIGHUP {
            kill_and_reap(pid);
            eprintln!("rapha-airgap: stopped by signal {sig} ({}); job killed", sys::signal_name(sig));
            return 128 + sig;
        }
    }
}

fn kill_and_reap(pid: sys::Pid) {
    // SIGKILL to the namespace's init kills every process in the namespace.
    unsafe {
        sys::kill(pid, sys::SIGKILL);
        sys::waitpid(pid, ptr::null_mut(), 0);
    }
}

/// Report a setup failure to the warden and exit without running anything.
fn fail(report_w: c_int, message: &str, code: i32) -> ! {
    let message = format!("{code}:{message}");
    unsafe {
        sys::write(report_w, message.as_ptr() as *const _, message.len());
        sys::_exit(code)
    }
}

fn init_main(opts: &ExecOptions, report_w: c_int) -> ! {
    // If the warden dies, the namespace dies with it. A warden that died before this
    // line is seen through the report pipe: its read end is closed.
    unsafe { sys::prctl(sys::PR_SET_PDEATHSIG, sys::SIGKILL as u64, 0, 0, 0) };
    if warden_gone(report_w) {
        unsafe { sys::_exit(EXIT_SETUP) }
    }
    if let Err(message) = build_namespaces(opts) {
        fail(report_w, &message, EXIT_SETUP);
    }
    let pid = unsafe { sys::fork() };
    if pid < 0 {
        fail(report_w, "fork of the command failed", EXIT_SETUP);
    }
    if pid == 0 {
        command_main(opts, report_w);
    }
    unsafe { sys::close(report_w) };
    let code = reap_until(pid);
    unsafe { sys::_exit(code) }
}

/// True when nobody reads the report pipe any more: the warden has died. (The pid of a
/// parent outside our new PID namespace is not visible from inside it.)
fn warden_gone(report_w: c_int) -> bool {
    let mut fd = sys::PollFd { fd: report_w, events: 0, revents: 0 };
    unsafe { sys::poll(&mut fd, 1, 0) > 0 && fd.revents & sys::POLLERR != 0 }
}

fn build_namespaces(opts: &ExecOptions) -> Result<(), String> {
    let flags = sys::CLONE_NEWNS | sys::CLONE_NEWNET | sys::CLONE_NEWIPC | sys::CLONE_NEWUTS | sys::CLONE_NEWCGROUP;
    sys::check(unsafe { sys::unshare(flags) } as i64, "new namespaces")?;
    let hostname = job_hostname(opts.socket_mode);
    // The hospital's host name stays outside.
    sys::check(unsafe { sys::sethostname(hostname.as_ptr() as *const _, hostname.len()) } as i64, "hostname")?;
    view::build(&view::View {
        workdir: opts.workdir.as_deref(),
        hidden: &opts.hidden,
        exposed: &opts.exposed,
        tmp_bytes: opts.tmp_bytes,
        private_dev: opts.private_dev,
        dev_binds: &opts.dev_binds,
        ro_binds: &opts.ro_binds,
    })?;
    net::loopback_up()
}

/// A distributed job's name is "localhost", which the host's /etc/hosts resolves to the
/// loopback: gloo binds to what the host name resolves to, and its fallback (the address of
/// interface `lo`) needs a netlink socket, which the filter refuses.
fn job_hostname(mode: seccomp::Mode) -> &'static [u8] {
    match mode {
        seccomp::Mode::UnixOnly => b"rapha-job",
        seccomp::Mode::InetLoopback => b"localhost",
    }
}

/// Reap every child (orphans are re-parented to us) until the command itself ends.
fn reap_until(command: sys::Pid) -> i32 {
    loop {
        let mut status: c_int = 0;
        let pid = unsafe { sys::waitpid(-1, &mut status, 0) };
        if pid < 0 && sys::errno() == sys::EINTR {
            continue;
        }
        if pid < 0 {
            return EXIT_SETUP;
        }
        if pid == command {
            return match sys::decode_status(status) {
                Ok(code) => code,
                Err(sig) => {
                    eprintln!("rapha-airgap: command killed by signal {sig} ({})", sys::signal_name(sig));
                    128 + sig
                }
            };
        }
    }
}

fn command_main(opts: &ExecOptions, report_w: c_int) -> ! {
    let filter = seccomp::filter_for(opts.socket_mode);
    let argv: Result<Vec<CString>, String> = opts.command.iter().map(|a| sys::cstr(a)).collect();
    let argv = argv.unwrap_or_else(|m| fail(report_w, &m, EXIT_SETUP));
    if let Err(message) = seal(opts, &filter) {
        fail(report_w, &message, EXIT_SETUP);
    }
    let mut pointers: Vec<*const std::ffi::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    pointers.push(ptr::null());
    unsafe { sys::execvp(pointers[0], pointers.as_ptr()) };
    let err = sys::errno();
    let code = if err == sys::ENOENT { 127 } else { 126 };
    let message = format!("cannot execute {:?}: {}", opts.command[0], std::io::Error::from_raw_os_error(err));
    fail(report_w, &message, code)
}

/// Everything between "root in fresh namespaces" and exec, in an order where each step
/// still has the privilege it needs.
fn seal(opts: &ExecOptions, filter: &[seccomp::SockFilter]) -> Result<(), String> {
    unsafe {
        sys::setsid(); // no controlling terminal: no TIOCSTI into the operator's shell
        sys::signal(sys::SIGPIPE, 0); // the Rust runtime ignores SIGPIPE; the job must not inherit that
    }
    crate::limits::apply(&opts.limits)?;
    crate::privileges::drop_to(opts.uid, opts.gid)?;
    let workdir = opts.workdir.clone().unwrap_or_else(|| PathBuf::from("/"));
    std::env::set_current_dir(&workdir).map_err(|e| format!("chdir to job directory: {e}"))?;
    keep_only(&opts.keep_fds)?;
    seccomp::install(filter)
}

/// Mark every descriptor above 2 close-on-exec, then clear the flag on the named ones.
fn keep_only(keep: &[i32]) -> Result<(), String> {
    let ret = unsafe { sys::syscall(sys::NR_CLOSE_RANGE, 3u32, u32::MAX, sys::CLOSE_RANGE_CLOEXEC) };
    sys::check(ret, "close_range")?;
    for fd in keep {
        sys::check(unsafe { sys::fcntl(*fd, sys::F_SETFD, 0) } as i64, &format!("keep fd {fd}"))?;
    }
    Ok(())
}
