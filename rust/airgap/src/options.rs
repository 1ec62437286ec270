//! Command-line options of `rapha-airgap exec`.

use std::path::PathBuf;

use crate::seccomp::Mode;

pub const NOBODY: u32 = 65534;

#[derive(Debug, Default)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub cpu_seconds: Option<u64>,
    pub wall_seconds: Option<u64>,
    pub processes: Option<u64>,
    pub file_bytes: Option<u64>,
    pub open_files: u64,
}

#[derive(Debug)]
pub struct ExecOptions {
    pub limits: Limits,
    pub keep_fds: Vec<i32>,
    pub workdir: Option<PathBuf>,
    pub hidden: Vec<PathBuf>,
    pub exposed: Vec<PathBuf>,
    pub uid: u32,
    pub gid: u32,
    pub tmp_bytes: u64,
    /// The process that started us and whose death must end the sandbox (the edge).
    pub parent_pid: Option<i32>,
    pub command: Vec<String>,
    /// A /dev of the job's own (standard nodes only, plus `dev_binds`): see devices.rs.
    pub private_dev: bool,
    /// Character devices bound into the private /dev under their own names (GPUs).
    pub dev_binds: Vec<PathBuf>,
    /// Paths bound read-only at their own place; under /proc, bound after the job's proc.
    pub ro_binds: Vec<PathBuf>,
    /// The seccomp variant: `--allow-inet-loopback` for a distributed job's rendezvous.
    pub socket_mode: Mode,
}

pub const USAGE: &str = "usage:
  rapha-airgap exec [--max-memory BYTES] [--max-cpu SECONDS] [--max-wall SECONDS]
                    [--max-processes N] [--max-file-size BYTES] [--max-open-files N]
                    [--tmp-size BYTES] [--keep-fd N ...] [--workdir DIR] [--hide PATH ...] [--expose PATH ...]
                    [--uid UID] [--gid GID] [--parent-pid PID] [--allow-inet-loopback]
                    [--private-dev] [--dev-bind CHARDEV ...] [--ro-bind PATH ...] -- CMD [ARG ...]
  rapha-airgap probe [--tcp-port P] [--udp-port P] [--dns-port P] [--inet-loopback]   (run it under exec)
  rapha-airgap digest [--allow-inet-loopback]   print the seccomp filter's sha256
  rapha-airgap sever --wan IFACE | restore --wan IFACE | status --wan IFACE";

fn number(flag: &str, value: Option<&String>) -> Result<u64, String> {
    let text = value.ok_or_else(|| format!("{flag} needs a value"))?;
    text.parse::<u64>().map_err(|_| format!("{flag}: not a non-negative integer: {text:?}"))
}

fn id(flag: &str, value: Option<&String>) -> Result<u32, String> {
    let parsed = number(flag, value)?;
    // Root inside the sandbox would undo every other layer.
    if parsed == 0 || parsed > u32::MAX as u64 - 1 {
        return Err(format!("{flag} must be a non-root id"));
    }
    Ok(parsed as u32)
}

pub fn parse_exec(args: &[String]) -> Result<ExecOptions, String> {
    let mut opts = ExecOptions {
        limits: Limits { open_files: 1024, ..Limits::default() },
        keep_fds: Vec::new(),
        workdir: None,
        hidden: Vec::new(),
        exposed: Vec::new(),
        uid: NOBODY,
        gid: NOBODY,
        tmp_bytes: 512 << 20,
        parent_pid: None,
        command: Vec::new(),
        private_dev: false,
        dev_binds: Vec::new(),
        ro_binds: Vec::new(),
        socket_mode: Mode::UnixOnly,
    };
    let mut iter = args.iter();
    while let Some(flag) = iter.next() {
        let flag = flag.as_str();
        match flag {
            "--" => {
                opts.command = iter.cloned().collect();
                break;
            }
            "--max-memory" => opts.limits.memory_bytes = Some(number(flag, iter.next())?),
            "--max-cpu" => opts.limits.cpu_seconds = Some(number(flag, iter.next())?),
            "--max-wall" => opts.limits.wall_seconds = Some(number(flag, iter.next())?),
            "--max-processes" => opts.limits.processes = Some(number(flag, iter.next())?),
            "--max-file-size" => opts.limits.file_bytes = Some(number(flag, iter.next())?),
            "--max-open-files" => opts.limits.open_files = number(flag, iter.next())?,
            "--tmp-size" => opts.tmp_bytes = number(flag, iter.next())?,
            "--keep-fd" => opts.keep_fds.push(keep_fd(iter.next())?),
            "--workdir" => opts.workdir = Some(path(flag, iter.next())?),
            "--hide" => opts.hidden.push(path(flag, iter.next())?),
            "--expose" => opts.exposed.push(path(flag, iter.next())?),
            "--uid" => opts.uid = id(flag, iter.next())?,
            "--gid" => opts.gid = id(flag, iter.next())?,
            "--parent-pid" => opts.parent_pid = Some(parent_pid(iter.next())?),
            "--private-dev" => opts.private_dev = true,
            "--dev-bind" => opts.dev_binds.push(path(flag, iter.next())?),
            "--ro-bind" => opts.ro_binds.push(path(flag, iter.next())?),
            "--allow-inet-loopback" => opts.socket_mode = Mode::InetLoopback,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if opts.command.is_empty() {
        return Err("no command after --".into());
    }
    if !opts.dev_binds.is_empty() && !opts.private_dev {
        // On the host's /dev every device would stay in view beside the granted ones.
        return Err("--dev-bind needs --private-dev".into());
    }
    Ok(opts)
}

fn keep_fd(value: Option<&String>) -> Result<i32, String> {
    let fd = number("--keep-fd", value)?;
    // 0-2 always pass; anything else must be named to pass.
    if !(3..=65535).contains(&fd) {
        return Err("--keep-fd must be from 3 to 65535".into());
    }
    Ok(fd as i32)
}

fn parent_pid(value: Option<&String>) -> Result<i32, String> {
    let pid = number("--parent-pid", value)?;
    // pid 1 would make the check vacuous: an orphan is re-parented to it.
    if !(2..=i32::MAX as u64).contains(&pid) {
        return Err("--parent-pid must be a process id above 1".into());
    }
    Ok(pid as i32)
}

fn path(flag: &str, value: Option<&String>) -> Result<PathBuf, String> {
    let text = value.ok_or_else(|| format!("{flag} needs a value"))?;
    if !text.starts_with('/') {
        return Err(format!("{flag} needs an absolute path"));
    }
    Ok(PathBuf::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_limits_and_command() {
        let opts = parse_exec(&args("--max-memory 10 --keep-fd 5 --hide /srv -- /bin/true x")).unwrap();
        assert_eq!(opts.limits.memory_bytes, Some(10));
        assert_eq!(opts.keep_fds, vec![5]);
        assert_eq!(opts.command, vec!["/bin/true", "x"]);
        assert_eq!(opts.uid, NOBODY);
    }

    #[test]
    fn refuses_root_and_bad_input() {
        assert!(parse_exec(&args("--uid 0 -- /bin/true")).is_err());
        assert!(parse_exec(&args("--keep-fd 1 -- /bin/true")).is_err());
        assert!(parse_exec(&args("--hide relative -- /bin/true")).is_err());
        assert!(parse_exec(&args("--max-cpu -3 -- /bin/true")).is_err());
        assert!(parse_exec(&args("--bogus -- /bin/true")).is_err());
        assert!(parse_exec(&args("--max-cpu 3")).is_err());
        assert!(parse_exec(&args("--parent-pid 1 -- /bin/true")).is_err());
        assert!(parse_exec(&args("--parent-pid x -- /bin/true")).is_err());
    }

    #[test]
    fn inet_loopback_only_when_asked() {
        assert_eq!(parse_exec(&args("-- /bin/true")).unwrap().socket_mode, Mode::UnixOnly);
        let opts = parse_exec(&args("--allow-inet-loopback -- /bin/true")).unwrap();
        assert_eq!(opts.socket_mode, Mode::InetLoopback);
        // after "--" it is the command's argument, not ours
        let opts = parse_exec(&args("-- /bin/true --allow-inet-loopback")).unwrap();
        assert_eq!(opts.socket_mode, Mode::UnixOnly);
    }

    #[test]
    fn parses_the_parent_pid() {
        assert_eq!(parse_exec(&args("--parent-pid 4242 -- /bin/true")).unwrap().parent_pid, Some(4242));
        assert_eq!(parse_exec(&args("-- /bin/true")).unwrap().parent_pid, None);
    }

    #[test]
    fn parses_device_and_read_only_binds() {
        let opts = parse_exec(&args("--private-dev --dev-bind /dev/nvidia0 --ro-bind /proc/driver/nvidia -- /bin/true"))
            .unwrap();
        assert!(opts.private_dev);
        assert_eq!(opts.dev_binds, vec![PathBuf::from("/dev/nvidia0")]);
        assert_eq!(opts.ro_binds, vec![PathBuf::from("/proc/driver/nvidia")]);
        assert!(!parse_exec(&args("-- /bin/true")).unwrap().private_dev);
        assert!(parse_exec(&args("--dev-bind /dev/nvidia0 -- /bin/true")).is_err());
        assert!(parse_exec(&args("--private-dev --dev-bind nvidia0 -- /bin/true")).is_err());
        assert!(parse_exec(&args("--ro-bind -- /bin/true")).is_err());
    }
}
