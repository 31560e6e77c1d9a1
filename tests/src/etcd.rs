//! Real `etcd` (Debian's `etcd-server`) on free loopback ports in temp data
//! dirs, stopped on drop: one member, a member serving TLS with client
//! certificates, or a three-member cluster; `etcdctl` to look at what landed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::free_port;
use crate::netns::Net;

/// One etcd member.
pub struct EtcdServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    name: String,
    client_port: u16,
    peer_port: u16,
    /// `--initial-cluster` (this member alone, or the whole cluster).
    initial_cluster: String,
    /// `--initial-cluster-token`, the same for every member of a cluster.
    cluster_token: String,
    tls: Option<Pki>,
    root_password: Option<String>,
    /// The network namespace the member runs in, and its address there;
    /// loopback otherwise.
    netns: Option<(std::sync::Arc<Net>, usize)>,
}

/// How long a member may take to answer its first health check.
const START_TIMEOUT: Duration = Duration::from_secs(30);

impl EtcdServer {
    /// Start etcd and wait until it answers.
    pub fn start() -> EtcdServer {
        EtcdServer::start_alone(None)
    }

    /// Start etcd serving clients over TLS with the certificates of `pki`:
    /// it requires a client certificate signed by `pki.ca`.
    pub fn start_tls(pki: &Pki) -> EtcdServer {
        EtcdServer::start_alone(Some(pki.clone()))
    }

    fn start_alone(tls: Option<Pki>) -> EtcdServer {
        let mut server = EtcdServer::unstarted("t", tls);
        server.initial_cluster = server.peer_entry();
        server.cluster_token = format!("returner-host-test-{}", server.peer_port);
        server.spawn();
        server.wait_healthy();
        server
    }

    fn unstarted(name: &str, tls: Option<Pki>) -> EtcdServer {
        EtcdServer {
            child: None,
            dir: crate::temp_dir(),
            name: name.to_owned(),
            client_port: free_port(),
            peer_port: free_port(),
            initial_cluster: String::new(),
            cluster_token: String::new(),
            tls,
            root_password: None,
            netns: None,
        }
    }

    /// The address it listens on.
    fn address(&self) -> String {
        match &self.netns {
            Some((net, i)) => net.ip(*i),
            None => "127.0.0.1".to_owned(),
        }
    }

    fn peer_url(&self) -> String {
        format!("http://{}:{}", self.address(), self.peer_port)
    }

    fn peer_entry(&self) -> String {
        format!("{}={}", self.name, self.peer_url())
    }

    fn spawn(&mut self) {
        let client = self.endpoint();
        let peer = self.peer_url();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("creating the etcd log");
        let mut command = match &self.netns {
            Some((net, i)) => net.command(*i, "etcd"),
            None => Command::new("etcd"),
        };
        command
            .args(["--name", &self.name, "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster, "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.cluster_token]);
        if let Some(pki) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&pki.server_cert)
                .arg("--key-file")
                .arg(&pki.server_key)
                .arg("--trusted-ca-file")
                .arg(&pki.ca)
                .arg("--client-cert-auth");
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("etcd not found: run scripts/setup (installs Debian's etcd-server): {e}"));
        self.child = Some(child);
    }

    fn wait_healthy(&mut self) {
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if self.ctl(&["endpoint", "health"]).0 {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("etcd exited with {status} while starting: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd did not become healthy within {} s: {}", START_TIMEOUT.as_secs(), self.log_text());
    }

    /// Turn on authentication with user `root` and `password`; `ctl` uses it from now on.
    pub fn enable_auth(&mut self, password: &str) {
        let (ok, text) = self.ctl(&["user", "add", &format!("root:{password}")]);
        assert!(ok, "etcdctl user add: {text}");
        let (ok, text) = self.ctl(&["auth", "enable"]);
        assert!(ok, "etcdctl auth enable: {text}");
        self.root_password = Some(password.to_owned());
    }

    /// The client URL (`https://` when serving TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.address(), self.client_port)
    }

    /// Kill the member (its data stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the member's process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Start it again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
        self.wait_healthy();
    }

    /// What etcd logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// `etcdctl --endpoints URL ARGS` (API v3): (success, stdout + stderr).
    pub fn ctl(&self, args: &[&str]) -> (bool, String) {
        let mut command = Command::new("etcdctl");
        command.env("ETCDCTL_API", "3").args(["--endpoints", &self.endpoint(), "--dial-timeout", "2s"]);
        if let Some(pki) = &self.tls {
            command.arg("--cacert").arg(&pki.ca).arg("--cert").arg(&pki.client_cert).arg("--key").arg(&pki.client_key);
        }
        let out = command
            .args(self.root_password.iter().map(|p| format!("--user=root:{p}")))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("etcdctl not found: run scripts/setup (installs Debian's etcd-client): {e}"));
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    /// `etcdctl ARGS -w json`, parsed; panics naming the command if it fails.
    pub fn ctl_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-w", "json"]);
        let (ok, text) = self.ctl(&all);
        assert!(ok, "etcdctl {args:?} failed: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("etcdctl {args:?} printed no JSON ({e}): {text}"))
    }

    /// Every key and value under `prefix`, in key order.
    pub fn dump(&self, prefix: &str) -> Vec<(String, String)> {
        let v = self.ctl_json(&["get", "--prefix", prefix]);
        let b64 = |s: &Value| decode_base64(s.as_str().unwrap_or_default());
        v["kvs"].as_array().map(|kvs| kvs.iter().map(|kv| (b64(&kv["key"]), b64(&kv["value"]))).collect()).unwrap_or_default()
    }

    /// Every key under `prefix` (ASCII), in key order, read a page of
    /// 10,000 at a time: one range over hundreds of thousands of keys runs
    /// past etcdctl's command timeout.
    pub fn keys_under(&self, prefix: &str) -> Vec<String> {
        let last = prefix.as_bytes().last().expect("a prefix");
        let end = format!("{}{}", &prefix[..prefix.len() - 1], char::from(last + 1));
        let b64 = |s: &Value| decode_base64(s.as_str().unwrap_or_default());
        let mut keys: Vec<String> = Vec::new();
        let mut from = prefix.to_owned();
        loop {
            let v = self.ctl_json(&["get", &from, &end, "--keys-only", "--limit", "10000", "--command-timeout", "60s"]);
            let page: Vec<String> = v["kvs"].as_array().map(|kvs| kvs.iter().map(|kv| b64(&kv["key"])).collect()).unwrap_or_default();
            // Each page after the first starts with the last key of the one before.
            let fresh: Vec<String> = page.into_iter().filter(|k| keys.last() != Some(k)).collect();
            let Some(next) = fresh.last().cloned() else { return keys };
            keys.extend(fresh);
            if !v["more"].as_bool().unwrap_or(false) {
                return keys;
            }
            from = next;
        }
    }

    /// Lease ids of every key under `prefix` (0 when none).
    pub fn leases(&self, prefix: &str) -> Vec<i64> {
        let v = self.ctl_json(&["get", "--prefix", prefix]);
        v["kvs"].as_array().map(|kvs| kvs.iter().map(|kv| kv["lease"].as_i64().unwrap_or(0)).collect()).unwrap_or_default()
    }

    /// Every lease the cluster holds (`etcdctl lease list`), in hex as etcdctl
    /// prints them: 16 digits, zero-padded (`format!("{id:016x}")`).
    pub fn lease_list(&self) -> Vec<String> {
        let (ok, text) = self.ctl(&["lease", "list"]);
        assert!(ok, "etcdctl lease list: {text}");
        let mut lines = text.lines();
        let header = lines.next().unwrap_or_default();
        let ids: Vec<String> = lines.map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
        assert_eq!(header.trim(), format!("found {} leases", ids.len()), "etcdctl lease list: {text}");
        ids
    }

    /// The granted TTL and the keys of lease `hex_id` (`etcdctl lease timetolive --keys`).
    pub fn lease_keys(&self, hex_id: &str) -> (i64, Vec<String>) {
        let v = self.ctl_json(&["lease", "timetolive", hex_id, "--keys"]);
        let keys = v["keys"].as_array().map(|k| k.iter().map(|k| decode_base64(k.as_str().unwrap_or_default())).collect());
        (v["granted-ttl"].as_i64().unwrap_or(0), keys.unwrap_or_default())
    }

    /// This member's id, as etcd reports it.
    pub fn member_id(&self) -> u64 {
        self.ctl_json(&["endpoint", "status"])[0]["Status"]["header"]["member_id"].as_u64().expect("member_id")
    }

    /// The id of the leader this member follows.
    pub fn leader_id(&self) -> u64 {
        self.ctl_json(&["endpoint", "status"])[0]["Status"]["leader"].as_u64().expect("leader")
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

/// A cluster of etcd members on loopback, each in its own temp dir.
pub struct EtcdCluster {
    /// The members, in the order of [`EtcdCluster::endpoints`].
    pub members: Vec<EtcdServer>,
    /// Their namespaces, when each has its own.
    net: Option<std::sync::Arc<Net>>,
}

impl EtcdCluster {
    /// Start `size` members and wait until each answers.
    pub fn start(size: usize) -> EtcdCluster {
        Self::start_members((0..size).map(|i| EtcdServer::unstarted(&format!("m{i}"), None)).collect(), None)
    }

    /// Start `size` members, each in a network namespace of its own
    /// ([`Net`]), so that a test can cut one off from the others and from
    /// the host ([`EtcdCluster::cut`]) rather than kill it.
    pub fn start_partitionable(size: usize) -> EtcdCluster {
        let net = std::sync::Arc::new(Net::new(size));
        let members = (0..size)
            .map(|i| {
                let mut member = EtcdServer::unstarted(&format!("m{i}"), None);
                member.netns = Some((net.clone(), i));
                member
            })
            .collect();
        Self::start_members(members, Some(net))
    }

    fn start_members(mut members: Vec<EtcdServer>, net: Option<std::sync::Arc<Net>>) -> EtcdCluster {
        let initial = members.iter().map(EtcdServer::peer_entry).collect::<Vec<_>>().join(",");
        let token = format!("returner-host-test-{}", members[0].peer_port);
        // Every member must be running before any can elect a leader.
        for member in &mut members {
            member.initial_cluster = initial.clone();
            member.cluster_token = token.clone();
            member.spawn();
        }
        for member in &mut members {
            member.wait_healthy();
        }
        EtcdCluster { members, net }
    }

    /// Cut member `index` off from its peers and the host (its link down).
    pub fn cut(&self, index: usize) {
        self.net.as_ref().expect("a cluster started with start_partitionable").cut(index);
    }

    /// Join member `index` again.
    pub fn heal(&self, index: usize) {
        self.net.as_ref().expect("a cluster started with start_partitionable").heal(index);
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdServer::endpoint).collect()
    }

    /// A running member, to read the cluster through.
    pub fn any(&self) -> &EtcdServer {
        self.members.iter().find(|m| m.is_running()).expect("a running member")
    }

    /// Which member leads, by index.
    pub fn leader(&self) -> usize {
        let leader = self.any().leader_id();
        self.members
            .iter()
            .position(|m| m.is_running() && m.member_id() == leader)
            .unwrap_or_else(|| panic!("leader {leader:x} is not a running member"))
    }

    /// Hand leadership to member `index` and wait until it leads.
    pub fn move_leader(&self, index: usize) {
        let started = Instant::now();
        while self.leader() != index {
            let target = format!("{:x}", self.members[index].member_id());
            let (_, text) = self.members[self.leader()].ctl(&["move-leader", &target]);
            assert!(started.elapsed() < START_TIMEOUT, "member {index} does not lead: etcdctl move-leader {target}: {text}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Certificates for an etcd serving TLS, made with the `openssl` CLI in a
/// temp dir: a CA, a server certificate for 127.0.0.1 and localhost, a
/// client certificate, and a second CA that signed neither.
#[derive(Clone, Debug)]
pub struct Pki {
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// A CA that signed nothing here.
    pub other_ca: PathBuf,
    /// The server's certificate and key.
    pub server_cert: PathBuf,
    /// The server's key.
    pub server_key: PathBuf,
    /// The client's certificate (CN `returner-host`).
    pub client_cert: PathBuf,
    /// The client's key.
    pub client_key: PathBuf,
}

impl Pki {
    /// Make every certificate under `dir`.
    pub fn generate(dir: &Path) -> Pki {
        let path = |name: &str| dir.join(name);
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .current_dir(dir)
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("openssl not found: run scripts/setup (installs Debian's openssl): {e}"));
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        for ca in ["ca", "other-ca"] {
            openssl(&[
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &format!("/CN=returner-host test {ca}"),
                "-keyout", &format!("{ca}.key"), "-out", &format!("{ca}.pem"),
            ]);
        }
        let sign = |name: &str, cn: &str, ext: &str| {
            std::fs::write(path(&format!("{name}.ext")), ext).expect("writing an openssl extension file");
            openssl(&[
                "req", "-newkey", "rsa:2048", "-nodes", "-subj", &format!("/CN={cn}"), "-keyout", &format!("{name}.key"),
                "-out", &format!("{name}.csr"),
            ]);
            openssl(&[
                "x509", "-req", "-in", &format!("{name}.csr"), "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-extfile", &format!("{name}.ext"), "-out", &format!("{name}.pem"),
            ]);
        };
        sign(
            "server",
            "127.0.0.1",
            "subjectAltName = IP:127.0.0.1, DNS:localhost\nextendedKeyUsage = serverAuth, clientAuth\n",
        );
        sign("client", "returner-host", "extendedKeyUsage = clientAuth\n");
        Pki {
            ca: path("ca.pem"),
            other_ca: path("other-ca.pem"),
            server_cert: path("server.pem"),
            server_key: path("server.key"),
            client_cert: path("client.pem"),
            client_key: path("client.key"),
        }
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
