//! The appliance WAN gate: `sever`, `restore` and `status` on one interface.
//!
//! While jobs run, every packet in or out of the WAN interface is dropped by nftables
//! rules in dedicated tables (`inet rapha_airgap` for IP, `arp rapha_airgap` for ARP), so
//! even a sandbox escape finds no way off the appliance. Rules match the interface by
//! name, so they also hold if the interface is re-created.
//!
//! Threat: an interface name carrying nftables syntax (`eth0" accept; #`) that rewrites
//! the ruleset. Names are checked against `^[A-Za-z0-9_.-]{1,15}$` before anything else.
//!
//! Fail closed: `restore` refuses an interface that does not exist (leaving the gate as
//! it was), removes the tables, then checks that they are gone; if removal or the check
//! fails it re-applies `sever` and exits non-zero. One WAN interface at a time.
//!
//! Exit codes: 0 done (status: severed); 1 failed or, for status, not severed; 2 usage.

use std::ffi::CString;
use std::io::Write;
use std::process::{Command, Stdio};

use crate::json::Object;
use crate::sys;

const NFT_CANDIDATES: &[&str] = &["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft", "/bin/nft"];

pub fn valid_interface(name: &str) -> bool {
    let shape = (1..=15).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    shape && name != "." && name != ".."
}

fn ruleset(iface: &str) -> String {
    // "table X {}" then "delete table X" makes the replacement one atomic transaction
    // whether or not the table existed.
    format!(
        "table inet rapha_airgap {{}}
delete table inet rapha_airgap
table inet rapha_airgap {{
  chain input {{ type filter hook input priority -300; policy accept; iifname \"{iface}\" drop; }}
  chain forward {{ type filter hook forward priority -300; policy accept; iifname \"{iface}\" drop; oifname \"{iface}\" drop; }}
  chain output {{ type filter hook output priority -300; policy accept; oifname \"{iface}\" drop; }}
}}
table arp rapha_airgap {{}}
delete table arp rapha_airgap
table arp rapha_airgap {{
  chain input {{ type filter hook input priority 0; policy accept; iifname \"{iface}\" drop; }}
  chain output {{ type filter hook output priority 0; policy accept; oifname \"{iface}\" drop; }}
}}
"
    )
}

const REMOVAL: &str = "table inet rapha_airgap {}
delete table inet rapha_airgap
table arp rapha_airgap {}
delete table arp rapha_airgap
";

fn nft_binary() -> Result<&'static str, String> {
    // A fixed list, not PATH: this runs as root.
    NFT_CANDIDATES.iter().copied().find(|p| std::path::Path::new(p).is_file()).ok_or_else(|| "nft not found (install nftables)".to_string())
}

fn nft_script(script: &str) -> Result<(), String> {
    let mut child = Command::new(nft_binary()?)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    child.stdin.take().ok_or("nft stdin")?.write_all(script.as_bytes()).map_err(|e| format!("nft: {e}"))?;
    let output = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("nft refused the ruleset: {}", String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// The listed table, or None when it does not exist.
fn nft_list(family: &str) -> Result<Option<String>, String> {
    let output = Command::new(nft_binary()?)
        .args(["list", "table", family, "rapha_airgap"])
        .output()
        .map_err(|e| format!("nft: {e}"))?;
    if output.status.success() {
        return Ok(Some(String::from_utf8_lossy(&output.stdout).into_owned()));
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("No such file or directory") || stderr.contains("does not exist") {
        Ok(None)
    } else {
        Err(format!("nft list failed: {}", stderr.trim()))
    }
}

fn severed(iface: &str) -> Result<bool, String> {
    let inbound = format!("iifname \"{iface}\" drop");
    let outbound = format!("oifname \"{iface}\" drop");
    let has = |text: &Option<String>, needle: &str, times: usize| {
        text.as_ref().is_some_and(|t| t.matches(needle).count() >= times)
    };
    let inet = nft_list("inet")?;
    let arp = nft_list("arp")?;
    Ok(has(&inet, &inbound, 2) && has(&inet, &outbound, 2) && has(&arp, &inbound, 1) && has(&arp, &outbound, 1))
}

fn gone() -> Result<bool, String> {
    Ok(nft_list("inet")?.is_none() && nft_list("arp")?.is_none())
}

fn interface_exists(iface: &str) -> bool {
    CString::new(iface).map(|name| unsafe { sys::if_nametoindex(name.as_ptr()) } != 0).unwrap_or(false)
}

fn sever(iface: &str) -> Result<(), String> {
    if !interface_exists(iface) {
        return Err(format!("no interface named {iface}"));
    }
    nft_script(&ruleset(iface))?;
    if !severed(iface)? {
        return Err("rules were loaded but the check does not find them".into());
    }
    Ok(())
}

fn restore(iface: &str) -> Result<(), String> {
    if !interface_exists(iface) {
        // Nothing is touched: the gate stays as it is, severed if it was.
        return Err(format!("no interface named {iface}; WAN left as it was"));
    }
    let outcome = nft_script(REMOVAL).and_then(|_| match gone()? {
        true => Ok(()),
        false => Err("check after restore failed".to_string()),
    });
    if let Err(message) = outcome {
        // Fail closed: whatever went wrong, the WAN stays cut.
        let again = nft_script(&ruleset(iface)).map_or_else(|e| format!("; re-sever failed too: {e}"), |_| String::new());
        return Err(format!("{message}; WAN left severed{again}"));
    }
    Ok(())
}

fn report(iface: &str, state: &str) {
    let mut record = Object::new();
    record.string("wan", iface).string("state", state);
    println!("{}", record.finish());
}

pub fn run(action: &str, args: &[String]) -> i32 {
    let iface = match args {
        [flag, name] if flag == "--wan" => name.as_str(),
        _ => {
            eprintln!("rapha-airgap: usage: rapha-airgap {action} --wan IFACE");
            return 2;
        }
    };
    if !valid_interface(iface) {
        eprintln!("rapha-airgap: refused: interface name must match ^[A-Za-z0-9_.-]{{1,15}}$");
        return 2;
    }
    let result = match action {
        "sever" => sever(iface).map(|_| "severed"),
        "restore" => restore(iface).map(|_| "open"),
        _ => severed(iface).map(|cut| if cut { "severed" } else { "open" }),
    };
    match result {
        Ok(state) => {
            report(iface, state);
            if action == "status" && state != "severed" { 1 } else { 0 }
        }
        Err(message) => {
            eprintln!("rapha-airgap: {action} {iface}: {message}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::valid_interface;

    #[test]
    fn interface_names() {
        for good in ["eth0", "wan0", "enp3s0f1", "br-lan", "vlan.20", "a_b"] {
            assert!(valid_interface(good), "{good}");
        }
        for bad in ["", "eth0\" accept", "a;b", "x y", "0123456789abcdef", "..", "eth0\n", "é"] {
            assert!(!valid_interface(bad), "{bad:?}");
        }
    }
}
