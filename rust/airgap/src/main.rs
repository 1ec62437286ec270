//! `rapha-airgap`: sealed execution for edge jobs (S1) and the appliance WAN gate.
//!
//! Subcommands: `exec` (run a command sealed), `probe` (print evidence of the seal, run
//! under `exec`), `digest` (the seccomp filter's sha256), and `sever`, `restore`,
//! `status` (the WAN gate). See README.md.

mod devices;
mod json;
mod limits;
mod net;
mod options;
mod privileges;
mod probe;
mod sandbox;
mod seccomp;
mod sha256;
mod sys;
mod view;
mod wan;

fn port(args: &[String], flag: &str, default: u16) -> Result<u16, String> {
    match args.iter().position(|a| a == flag) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse::<u16>().ok())
            .ok_or_else(|| format!("{flag} needs a port number")),
    }
}

/// `--inet-loopback` (probe) and `--allow-inet-loopback` (digest): the distributed
/// variant of the filter; they take no value.
fn socket_mode(args: &[String], flag: &str) -> seccomp::Mode {
    if args.iter().any(|a| a == flag) { seccomp::Mode::InetLoopback } else { seccomp::Mode::UnixOnly }
}

fn probe(args: &[String]) -> Result<i32, String> {
    let valued: Vec<&String> = args.iter().filter(|a| a.as_str() != "--inet-loopback").collect();
    for (i, arg) in valued.iter().enumerate() {
        let is_value = i > 0 && valued[i - 1].starts_with("--");
        if !is_value && !["--tcp-port", "--udp-port", "--dns-port"].contains(&arg.as_str()) {
            return Err(format!("unknown probe option {arg:?}"));
        }
    }
    let ports = probe::Ports {
        tcp: port(args, "--tcp-port", 80)?,
        udp: port(args, "--udp-port", 9)?,
        dns: port(args, "--dns-port", 53)?,
    };
    Ok(probe::run(&ports, socket_mode(args, "--inet-loopback")))
}

fn dispatch(args: &[String]) -> Result<i32, String> {
    let (command, rest) = args.split_first().ok_or("no subcommand")?;
    match command.as_str() {
        "exec" => Ok(sandbox::run(options::parse_exec(rest)?)),
        "probe" => probe(rest),
        "digest" => {
            if let Some(other) = rest.iter().find(|a| a.as_str() != "--allow-inet-loopback") {
                return Err(format!("unknown digest option {other:?}"));
            }
            println!("{}", seccomp::digest_for(socket_mode(rest, "--allow-inet-loopback")));
            Ok(0)
        }
        "sever" | "restore" | "status" => Ok(wan::run(command, rest)),
        "--version" | "version" => {
            println!("rapha-airgap {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        "--help" | "help" => {
            println!("{}", options::USAGE);
            Ok(0)
        }
        other => Err(format!("unknown subcommand {other:?}")),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match dispatch(&args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("rapha-airgap: {message}\n{}", options::USAGE);
            2
        }
    };
    std::process::exit(code);
}
