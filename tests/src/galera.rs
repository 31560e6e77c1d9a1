//! A real MariaDB Galera cluster for the tests: `n` nodes (Debian's
//! `mariadb-server` and `galera-4`), each `mariadbd` in a network namespace
//! of its own ([`crate::netns::Net`]) with its own address, data in a temp
//! dir, replicating synchronously. A test can kill a node, restart it (it
//! rejoins by state transfer), or cut it off from its peers and the host
//! (a partition) and heal it. Stopped and removed on drop.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::mariadb::binary;
use crate::netns::Net;

const PROVIDER: &str = "/usr/lib/galera/libgalera_smm.so";
const MISSING: &str = "Galera is not installed: run scripts/setup (installs Debian's galera-4 and rsync)";

/// The user the nodes run as.
const USER: &str = "mysql";

/// The port every node listens on, at its own address.
pub const PORT: u16 = 3306;

/// One node: its data dir and, while it runs, its process.
struct Node {
    dir: PathBuf,
    child: Option<Child>,
    /// Where to start replicating from (`uuid:seqno`), recovered after a kill.
    start_position: Option<String>,
}

/// A running cluster.
pub struct GaleraCluster {
    nodes: Vec<Node>,
    net: Net,
    _temp: tempfile::TempDir,
}

/// The cluster's test database and its user (`'user'@'%'`, every privilege on it).
pub struct GaleraDb {
    /// Database name.
    pub name: String,
    /// User name.
    pub user: String,
    /// The user's password.
    pub password: String,
}

impl GaleraCluster {
    /// Start `n` nodes: the first bootstraps the cluster, the others join
    /// it; returns once every node is synced.
    ///
    /// No node ever needs a full state transfer (SST), which needs a donor
    /// script and tools a test cannot count on: every node starts from a copy
    /// of the first one's data dir, taken after a clean shutdown, so they all
    /// join at the same position; a killed node recovers its position from
    /// its own data ([`restart`](Self::restart)) and catches up from a peer's
    /// write-set cache (IST), as does a node cut off and healed.
    pub fn start(n: usize) -> GaleraCluster {
        assert!(std::path::Path::new(PROVIDER).is_file(), "{MISSING} ({PROVIDER} is missing)");
        let temp = crate::temp_dir();
        // The nodes run as `mysql` (Debian's mariadb-server makes the user):
        // the rsync daemon of a state transfer, started by a node, writes as
        // the node's user, and as root it would drop to `nobody`.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let net = Net::new(n);
        let mut cluster = GaleraCluster { nodes: Vec::new(), net, _temp: temp };
        for i in 0..n {
            let dir = cluster._temp.path().join(format!("node{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let owned = std::process::Command::new("chown").args([USER, &dir.display().to_string()]).status().unwrap();
            assert!(owned.success(), "chown {USER} {}: is there a `{USER}` user? {MISSING}", dir.display());
            cluster.nodes.push(Node { dir, child: None, start_position: None });
        }
        let seed = cluster.nodes[0].dir.join("data");
        std::fs::create_dir_all(&seed).unwrap();
        let out = std::process::Command::new(binary("mariadb-install-db"))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", seed.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .arg(format!("--user={USER}"))
            .output()
            .unwrap_or_else(|e| panic!("mariadb-install-db: {e}"));
        assert!(out.status.success(), "mariadb-install-db: {}", String::from_utf8_lossy(&out.stderr));
        // A cluster of one, shut down cleanly: its data dir knows the cluster's id and position.
        cluster.run(0, true);
        cluster.wait_synced(0, 1);
        cluster.shutdown(0);
        for i in 1..n {
            let data = cluster.nodes[i].dir.join("data");
            let copied = std::process::Command::new("cp").arg("-a").arg(&seed).arg(&data).status().unwrap();
            assert!(copied.success(), "copying the seed data dir");
            let _ = std::fs::remove_file(data.join("gvwstate.dat"));
            let state = std::fs::read_to_string(data.join("grastate.dat")).unwrap();
            std::fs::write(data.join("grastate.dat"), state.replace("safe_to_bootstrap: 1", "safe_to_bootstrap: 0")).unwrap();
        }
        cluster.run(0, true);
        cluster.wait_synced(0, 1);
        for i in 1..n {
            cluster.run(i, false);
            cluster.wait_synced(i, i + 1);
        }
        cluster
    }

    /// Stop node `i` cleanly (SIGTERM) and wait for it.
    fn shutdown(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = std::process::Command::new("kill").arg(child.id().to_string()).status();
            let started = Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                assert!(started.elapsed() < Duration::from_secs(60), "galera node {i} did not stop:\n{}", self.log_text(i));
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// The address of node `i` (port [`PORT`]).
    pub fn ip(&self, i: usize) -> String {
        self.net.ip(i)
    }

    /// `"ip:3306"` of every node, in order.
    pub fn addresses(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| format!("{}:{PORT}", self.ip(i))).collect()
    }

    fn socket(&self, i: usize) -> PathBuf {
        self.nodes[i].dir.join("mysqld.sock")
    }

    /// Start node `i`'s `mariadbd` (`bootstrap`: as the first of a new cluster).
    fn run(&mut self, i: usize, bootstrap: bool) {
        let node = &self.nodes[i];
        let members: Vec<String> = (0..self.nodes.len()).map(|j| self.net.ip(j)).collect();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(node.dir.join("mariadbd.log")).unwrap();
        let mut cmd = self.net.command(i, binary("mariadbd").to_str().unwrap());
        cmd.arg("--no-defaults")
            .arg(format!("--user={USER}"))
            .arg(format!("--datadir={}", node.dir.join("data").display()))
            .arg(format!("--socket={}", node.dir.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", node.dir.join("mariadbd.pid").display()))
            .arg(format!("--port={PORT}"))
            .arg(format!("--bind-address={}", self.net.ip(i)))
            .args(["--skip-name-resolve", "--innodb-buffer-pool-size=32M", "--max-connections=300"])
            .args(["--binlog-format=ROW", "--innodb-autoinc-lock-mode=2", "--innodb-flush-log-at-trx-commit=2"])
            .arg("--wsrep-on=ON")
            .arg(format!("--wsrep-provider={PROVIDER}"))
            .arg(format!("--wsrep-cluster-address=gcomm://{}", members.join(",")))
            .arg(format!("--wsrep-node-address={}", self.net.ip(i)))
            .args(["--wsrep-cluster-name=returner-host-test", "--wsrep-sst-method=rsync"])
            // A write-set cache that holds what a node misses while it is
            // away, so it catches up by IST. The group's timeouts stay at
            // their defaults: shorter ones make peers on a loaded machine
            // suspect each other and split the cluster.
            .arg("--wsrep-provider-options=gcache.size=512M");
        if bootstrap {
            cmd.arg("--wsrep-new-cluster");
        }
        if let Some(position) = &node.start_position {
            cmd.arg(format!("--wsrep-start-position={position}"));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{MISSING}: {e}"));
        self.nodes[i].child = Some(child);
    }

    /// Wait until node `i` is synced in a primary component of `size` nodes.
    pub fn wait_synced(&mut self, i: usize, size: usize) {
        let started = Instant::now();
        loop {
            let state = self.status(i, "wsrep_local_state_comment");
            let members = self.status(i, "wsrep_cluster_size");
            if state.as_deref() == Some("Synced") && members == Some(size.to_string()) {
                return;
            }
            if let Some(Ok(Some(status))) = self.nodes[i].child.as_mut().map(Child::try_wait) {
                panic!("galera node {i} exited with {status}:\n{}\n{}", self.log_text(i), self.other_logs(i));
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "galera node {i} not synced in a cluster of {size} within 120 s (state {state:?}, size {members:?}):\n{}",
                self.log_text(i)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A `SHOW STATUS` variable of node `i`, when it answers.
    pub fn status(&self, i: usize, name: &str) -> Option<String> {
        let rows = self.root_sql(i, &format!("SHOW STATUS LIKE '{name}'")).ok()?;
        rows.first().and_then(|r| r.get(1)).cloned()
    }

    /// The last lines of every other node's log (a donor's side of a state transfer).
    fn other_logs(&self, i: usize) -> String {
        (0..self.nodes.len())
            .filter(|&j| j != i)
            .map(|j| {
                let log = self.log_text(j);
                let lines: Vec<&str> = log.lines().collect();
                format!("--- node {j}, last lines:\n{}", lines[lines.len().saturating_sub(400)..].join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Node `i`'s error log.
    pub fn log_text(&self, i: usize) -> String {
        std::fs::read_to_string(self.nodes[i].dir.join("mariadbd.log")).unwrap_or_default()
    }

    /// Run `sql` as root on node `i` (through its socket).
    pub fn root_sql(&self, i: usize, sql: &str) -> Result<Vec<Vec<String>>, String> {
        let out = std::process::Command::new(binary("mariadb"))
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket(i).display()))
            .args(["-uroot", "--batch", "--skip-column-names", "--raw", "-e", sql])
            .output()
            .map_err(|e| format!("mariadb: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).lines().map(|l| l.split('\t').map(str::to_owned).collect()).collect())
    }

    /// A database `salt` and user `salt` with `password`, created on node 0
    /// and replicated.
    pub fn database(&self, password: &str) -> GaleraDb {
        self.root_sql(
            0,
            &format!("CREATE DATABASE salt; CREATE USER 'salt'@'%' IDENTIFIED BY '{password}'; GRANT ALL ON salt.* TO 'salt'@'%';"),
        )
        .unwrap_or_else(|e| panic!("creating the database: {e}"));
        GaleraDb { name: "salt".into(), user: "salt".into(), password: password.into() }
    }

    /// Kill node `i` (SIGKILL: a crash).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start node `i` again after [`kill`](Self::kill): its position is
    /// recovered from its data (`--wsrep-recover`), it rejoins from there,
    /// and it is synced when this returns, in a cluster of `size`.
    pub fn restart(&mut self, i: usize, size: usize) {
        let node = &self.nodes[i];
        let log = node.dir.join("recover.log");
        let _ = std::fs::remove_file(&log);
        let status = std::process::Command::new(binary("mariadbd"))
            .arg("--no-defaults")
            .arg(format!("--user={USER}"))
            .arg(format!("--datadir={}", node.dir.join("data").display()))
            .arg(format!("--socket={}", node.dir.join("recover.sock").display()))
            .args(["--skip-networking", "--innodb-buffer-pool-size=32M", "--binlog-format=ROW", "--wsrep-on=ON"])
            .args(["--wsrep-cluster-address=gcomm://", "--wsrep-sst-method=rsync"])
            .arg(format!("--wsrep-provider={PROVIDER}"))
            .arg(format!("--log-error={}", log.display()))
            .arg("--wsrep-recover")
            .output()
            .unwrap_or_else(|e| panic!("mariadbd --wsrep-recover: {e}"));
        let text = std::fs::read_to_string(&log).unwrap_or_default() + &String::from_utf8_lossy(&status.stderr);
        let status = status.status;
        let position = text
            .lines()
            .find_map(|l| l.split("WSREP: Recovered position: ").nth(1))
            .map(|p| p.trim().to_owned())
            .unwrap_or_else(|| panic!("galera node {i}: no position recovered ({status}):\n{text}"));
        self.nodes[i].start_position = Some(position);
        self.run(i, false);
        self.wait_synced(i, size);
    }

    /// Cut node `i` off from every peer and from the host (its link down).
    pub fn cut(&self, i: usize) {
        self.net.cut(i);
    }

    /// Join node `i` again; returns once it is synced in a cluster of `size`.
    pub fn heal(&mut self, i: usize, size: usize) {
        self.net.heal(i);
        self.wait_synced(i, size);
    }
}

impl Drop for GaleraCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
