//! Test hosts in network namespaces: a bridge in the test's own namespace
//! and one namespace per host, each joined to the bridge by a veth pair
//! with an address of its own on a private /24. A test can then cut one
//! host off from every other (its link down: packets vanish, nothing is
//! refused) and heal it, which killing a process cannot show. Needs root
//! and iproute2 (`ip netns`); without them it fails saying so.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

const MISSING: &str = "network namespaces are unavailable: the partition tests need root and iproute2's `ip netns` (scripts/setup installs iproute2; run the tests as root)";

/// A bridge and `n` namespaces on it. Removed on drop (stop what runs in
/// the namespaces first).
pub struct Net {
    bridge: String,
    /// `10.K.M` of the /24: the bridge is `.1`, host `i` is `.(10 + i)`.
    prefix: String,
    namespaces: Vec<String>,
    host_links: Vec<String>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("{MISSING} (running ip: {e})"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn must(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("{e}\n{MISSING}");
    }
}

impl Net {
    /// A bridge and `n` namespaces, each with its address and loopback up.
    pub fn new(n: usize) -> Net {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = (std::process::id() % 50_000) * 4 + k % 4;
        // Names under 15 bytes (IFNAMSIZ); a /24 from the pid and a counter.
        let tag = format!("{id:x}");
        let prefix = format!("10.{}.{}", 100 + (id / 250) % 150, id % 250);
        let bridge = format!("rhb{tag}");
        let _ = ip(&["link", "del", &bridge]);
        must(&["link", "add", &bridge, "type", "bridge"]);
        let mut net = Net { bridge: bridge.clone(), prefix: prefix.clone(), namespaces: Vec::new(), host_links: Vec::new() };
        must(&["addr", "add", &format!("{prefix}.1/24"), "dev", &bridge]);
        must(&["link", "set", &bridge, "up"]);
        for i in 0..n {
            let ns = format!("rh{tag}-{i}");
            let (outside, inside) = (format!("rhv{tag}x{i}"), format!("rhv{tag}y{i}"));
            let _ = ip(&["netns", "del", &ns]);
            must(&["netns", "add", &ns]);
            net.namespaces.push(ns.clone());
            must(&["link", "add", &outside, "type", "veth", "peer", "name", &inside]);
            net.host_links.push(outside.clone());
            must(&["link", "set", &inside, "netns", &ns]);
            must(&["link", "set", &outside, "master", &bridge]);
            must(&["link", "set", &outside, "up"]);
            must(&["netns", "exec", &ns, "ip", "addr", "add", &format!("{prefix}.{}/24", 10 + i), "dev", &inside]);
            must(&["netns", "exec", &ns, "ip", "link", "set", &inside, "up"]);
            must(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        }
        net
    }

    /// The address of host `i`.
    pub fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.prefix, 10 + i)
    }

    /// A command that runs `program` inside host `i`'s namespace.
    pub fn command(&self, i: usize, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.namespaces[i], program]);
        cmd
    }

    /// Cut host `i` off: its link goes down, so every packet to or from it
    /// is lost (connections hang; nothing is refused).
    pub fn cut(&self, i: usize) {
        must(&["link", "set", &self.host_links[i], "down"]);
    }

    /// Join host `i` again.
    pub fn heal(&self, i: usize) {
        must(&["link", "set", &self.host_links[i], "up"]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for link in &self.host_links {
            let _ = ip(&["link", "del", link]);
        }
        for ns in &self.namespaces {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}
