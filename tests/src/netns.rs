//! Test hosts in Linux network namespaces: two namespaces joined by a veth
//! pair, each with one address, so peers can find each other by mDNS on a
//! LAN of their own. Nothing is routed outside the pair, and the namespaces
//! are removed on drop.
//!
//! Needs root (CAP_NET_ADMIN) and `ip` from iproute2, as on CI.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::Proc;

/// The subnet of the test LAN: 198.18.0.0/15 is set aside for benchmark
/// networks (RFC 2544), so it is never a real host's address.
const SUBNET: &str = "198.18.0";

/// A test LAN of two hosts.
pub struct Lan {
    hosts: [String; 2],
}

/// Runs `ip args...`, failing with its stderr.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run `ip` (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Lan {
    /// Creates the two hosts, named after this test process.
    pub fn create(tag: &str) -> Result<Self> {
        let pid = std::process::id();
        let hosts = [format!("mt{tag}{pid}a"), format!("mt{tag}{pid}b")];
        let lan = Self {
            hosts: hosts.clone(),
        };
        let veth = [format!("mt{pid}{tag}0"), format!("mt{pid}{tag}1")];
        for host in &hosts {
            ip(&["netns", "add", host])?;
        }
        ip(&[
            "link", "add", &veth[0], "netns", &hosts[0], "type", "veth", "peer", "name", &veth[1],
            "netns", &hosts[1],
        ])?;
        for (i, (host, dev)) in hosts.iter().zip(&veth).enumerate() {
            let addr = format!("{SUBNET}.{}/24", i + 1);
            ip(&["-n", host, "addr", "add", &addr, "dev", dev])?;
            ip(&["-n", host, "link", "set", "lo", "up"])?;
            ip(&["-n", host, "link", "set", dev, "up"])?;
            // Multicast (mDNS) leaves through the LAN's interface.
            ip(&["-n", host, "route", "add", "224.0.0.0/4", "dev", dev])?;
        }
        Ok(lan)
    }

    /// The address of host `i` (0 or 1).
    pub fn addr(&self, i: usize) -> String {
        format!("{SUBNET}.{}", i + 1)
    }

    /// Starts `program args...` on host `i`.
    pub fn spawn(&self, i: usize, name: &str, program: &Path, args: &[String]) -> Result<Proc> {
        let mut full = vec![
            "netns".to_owned(),
            "exec".to_owned(),
            self.hosts[i].clone(),
            program.display().to_string(),
        ];
        full.extend(args.iter().cloned());
        Proc::spawn(name, Path::new("ip"), &full)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and with it
        // the pair.
        for host in &self.hosts {
            let _ = ip(&["netns", "del", host]);
        }
    }
}
