//! A real `etcd` (Debian's `etcd-server`) on free loopback ports in a temp
//! data dir, stopped on drop; `etcdctl` to look at what landed.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One etcd member.
pub struct EtcdServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    root_password: Option<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl EtcdServer {
    /// Start etcd and wait until it answers.
    pub fn start() -> EtcdServer {
        let mut server =
            EtcdServer { child: None, dir: crate::temp_dir(), client_port: free_port(), peer_port: free_port(), root_password: None };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).expect("creating the etcd log");
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("etcd not found: run scripts/setup (installs Debian's etcd-server): {e}"));
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if self.ctl(&["endpoint", "health"]).0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd did not become healthy within 30 s: {}", self.log_text());
    }

    /// Turn on authentication with user `root` and `password`; `ctl` uses it from now on.
    pub fn enable_auth(&mut self, password: &str) {
        let (ok, text) = self.ctl(&["user", "add", &format!("root:{password}")]);
        assert!(ok, "etcdctl user add: {text}");
        let (ok, text) = self.ctl(&["auth", "enable"]);
        assert!(ok, "etcdctl auth enable: {text}");
        self.root_password = Some(password.to_owned());
    }

    /// The client URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Kill the member (its data stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// What etcd logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// `etcdctl --endpoints URL ARGS` (API v3): (success, stdout + stderr).
    pub fn ctl(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint(), "--dial-timeout", "2s"])
            .args(self.root_password.iter().map(|p| format!("--user=root:{p}")))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("etcdctl not found: run scripts/setup (installs Debian's etcd-client): {e}"));
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    /// Every key and value under `prefix`, in key order.
    pub fn dump(&self, prefix: &str) -> Vec<(String, String)> {
        let (ok, text) = self.ctl(&["get", "--prefix", prefix, "-w", "json"]);
        assert!(ok, "etcdctl get failed: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("etcdctl json");
        let b64 = |s: &serde_json::Value| decode_base64(s.as_str().unwrap_or_default());
        v["kvs"].as_array().map(|kvs| kvs.iter().map(|kv| (b64(&kv["key"]), b64(&kv["value"]))).collect()).unwrap_or_default()
    }

    /// Lease ids of every key under `prefix` (0 when none).
    pub fn leases(&self, prefix: &str) -> Vec<i64> {
        let (ok, text) = self.ctl(&["get", "--prefix", prefix, "-w", "json"]);
        assert!(ok, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("etcdctl json");
        v["kvs"].as_array().map(|kvs| kvs.iter().map(|kv| kv["lease"].as_i64().unwrap_or(0)).collect()).unwrap_or_default()
    }

    /// The data dir's parent, for files beside it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn decode_base64(s: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| *c != b'=') {
        let Some(v) = ALPHABET.iter().position(|a| *a == c) else { continue };
        bits = (bits << 6) | v as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
