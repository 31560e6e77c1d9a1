//! A real MariaDB server for the tests: `mariadb-install-db` into a temp
//! dir, `mariadbd` on a free loopback port, a database and a user with a
//! password per test. [`MariaDb::shared`] starts one server per test binary
//! (a watchdog stops it when the binary exits); [`MariaDb::start`] gives a
//! test its own, stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::free_port;

const MISSING: &str = "mariadbd not found: run scripts/setup (installs Debian's mariadb-server)";

/// A running `mariadbd`.
pub struct MariaDb {
    child: Option<Child>,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// Its unix socket.
    pub socket: PathBuf,
    /// Run with the server's own durability and buffer pool (see [`MariaDb::start_durable`]).
    durable: bool,
}

/// One test's database on a server, with a user that has every privilege on it only.
pub struct TestDb {
    /// Database name.
    pub name: String,
    /// User name.
    pub user: String,
    /// The user's password.
    pub password: String,
    /// TCP port of the server.
    pub port: u16,
    socket: PathBuf,
}

pub(crate) fn binary(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{MISSING} ({name} is missing)");
}

impl MariaDb {
    /// Initialise a data dir in a temp dir and start a server on it; stopped on drop.
    pub fn start() -> MariaDb {
        Self::start_in_temp(false)
    }

    /// [`start`](Self::start), with the server's own defaults where the
    /// tests' server trades them for speed: every commit flushed to disk
    /// (`innodb_flush_log_at_trx_commit=1`) and a 128 MiB buffer pool, as
    /// a production server runs.
    pub fn start_durable() -> MariaDb {
        Self::start_in_temp(true)
    }

    fn start_in_temp(durable: bool) -> MariaDb {
        let temp = crate::temp_dir();
        let dir = temp.path().to_path_buf();
        let mut db = Self::init_and_run(&dir, durable);
        db._temp = Some(temp);
        db
    }

    /// The server shared by every test of this test binary, started on first use.
    pub fn shared() -> &'static MariaDb {
        static SHARED: OnceLock<MariaDb> = OnceLock::new();
        SHARED.get_or_init(|| {
            let dir = crate::temp_dir().keep();
            let db = Self::init_and_run(&dir, false);
            let server = db.child.as_ref().map(Child::id).unwrap_or_default();
            // A static is never dropped: stop the server and remove its data
            // when this test binary exits.
            let watchdog = format!(
                "while kill -0 {me} 2>/dev/null; do sleep 0.5; done; kill {server} 2>/dev/null; sleep 2; kill -9 {server} 2>/dev/null; rm -rf '{dir}'",
                me = std::process::id(),
                dir = dir.display()
            );
            // The watchdog outlives this process on purpose; nobody waits for it.
            #[allow(clippy::zombie_processes)]
            Command::new("sh")
                .args(["-c", &watchdog])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting the mariadbd watchdog");
            db
        })
    }

    fn init_and_run(dir: &Path, durable: bool) -> MariaDb {
        let data = dir.join("data");
        // The bootstrap now and then fails when several servers are set up at
        // once on a loaded machine; it is run on a fresh data dir up to three
        // times, and the last failure is reported whole.
        let mut out;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let _ = std::fs::remove_dir_all(&data);
            std::fs::create_dir_all(&data).unwrap();
            out = Command::new(binary("mariadb-install-db"))
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .args(["--auth-root-authentication-method=normal", "--skip-test-db", "--user=root"])
                .output()
                .unwrap_or_else(|e| panic!("{MISSING}: mariadb-install-db: {e}"));
            if out.status.success() || attempt == 3 {
                break;
            }
            eprintln!("mariadb-install-db failed (attempt {attempt}), trying again: {}", String::from_utf8_lossy(&out.stderr));
        }
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut db = MariaDb { child: None, dir: dir.to_path_buf(), _temp: None, port: free_port(), socket: dir.join("mysqld.sock"), durable };
        db.run();
        db
    }

    /// Start `mariadbd` on the data dir (again, after [`stop`](Self::stop)).
    pub fn run(&mut self) {
        let data = self.dir.join("data");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("mariadbd.log")).unwrap();
        let speed: &[&str] =
            if self.durable { &[] } else { &["--innodb-buffer-pool-size=32M", "--innodb-flush-log-at-trx-commit=2"] };
        let child = Command::new(binary("mariadbd"))
            .arg("--no-defaults")
            .arg("--user=root")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", self.socket.display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--pid-file={}", self.dir.join("mariadbd.pid").display()))
            .args(["--bind-address=127.0.0.1", "--skip-name-resolve", "--skip-log-bin", "--max-connections=500"])
            .args(speed)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{MISSING}: {e}"));
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if self.root_sql("", "SELECT 1").is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("mariadbd exited with {status}:\n{}", self.log_text());
            }
            assert!(started.elapsed() < Duration::from_secs(60), "mariadbd not ready in 60 s:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop the server (SIGKILL: a crash, as far as clients can tell).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server's error log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("mariadbd.log")).unwrap_or_default()
    }

    /// Run `sql` as root in `database` ("" for none): rows of tab-separated columns.
    pub fn root_sql(&self, database: &str, sql: &str) -> Result<Vec<Vec<String>>, String> {
        let mut cmd = Command::new(binary("mariadb"));
        cmd.arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-uroot", "--batch", "--skip-column-names", "--raw", "-e", sql]);
        if !database.is_empty() {
            cmd.arg(database);
        }
        let out = cmd.output().map_err(|e| format!("{MISSING}: mariadb: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split('\t').map(str::to_owned).collect())
            .collect())
    }

    /// A new database and a user with a password and every privilege on it only.
    pub fn database(&self) -> TestDb {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("salt_{n}");
        let user = format!("salt_{n}");
        let password = format!("pw-{}-{n}-Secr3t", std::process::id());
        self.root_sql(
            "",
            &format!(
                "CREATE DATABASE `{name}`; CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'; \
                 GRANT ALL ON `{name}`.* TO '{user}'@'%';"
            ),
        )
        .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
        TestDb { name, user, password, port: self.port, socket: self.socket.clone() }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.stop();
    }
}

impl TestDb {
    /// Run `sql` as root in this database; panics on error.
    pub fn sql(&self, sql: &str) -> Vec<Vec<String>> {
        self.try_sql(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Run `sql` as root in this database.
    pub fn try_sql(&self, sql: &str) -> Result<Vec<Vec<String>>, String> {
        let db = MariaDb { child: None, dir: PathBuf::new(), _temp: None, port: self.port, socket: self.socket.clone(), durable: false };
        db.root_sql(&self.name, sql)
    }

    /// A second database `<name>_other` on which this database's user also
    /// has every privilege (as a careless admin grants), holding table `t`
    /// with one row `other-secret`, a stored function `f()` that reads it
    /// and a sequence `seq`. Its name.
    pub fn careless_second_database(&self) -> String {
        let other = format!("{}_other", self.name);
        self.sql(&format!(
            "CREATE DATABASE `{other}`; GRANT ALL ON `{other}`.* TO '{user}'@'%'; \
             CREATE TABLE `{other}`.t (v varchar(64)); INSERT INTO `{other}`.t VALUES ('other-secret'); \
             CREATE FUNCTION `{other}`.f() RETURNS varchar(64) READS SQL DATA RETURN (SELECT v FROM `{other}`.t LIMIT 1); \
             CREATE SEQUENCE `{other}`.seq;",
            user = self.user
        ));
        other
    }

    /// The statements of this database's user running on the server for
    /// more than half a second now.
    pub fn running_queries(&self) -> Vec<String> {
        self.sql(&format!(
            "SELECT CONCAT(id, ' ', time_ms, ' ms: ', LEFT(info, 120)) FROM information_schema.processlist \
             WHERE user = '{}' AND command = 'Query' AND time_ms > 500",
            self.user
        ))
        .into_iter()
        .map(|row| row.join(" "))
        .collect()
    }

    /// Connections this database's user has open on the server now.
    pub fn connections(&self) -> usize {
        let rows = self.sql(&format!("SELECT COUNT(*) FROM information_schema.processlist WHERE user = '{}'", self.user));
        rows[0][0].parse().unwrap_or(0)
    }

    /// A `[profiles.NAME]` table for this database, its password in `password_file`.
    pub fn profile_toml(&self, name: &str, password_file: &Path) -> String {
        std::fs::write(password_file, format!("{}\n", self.password)).unwrap();
        format!(
            "[profiles.{name}]\nkind = \"mysql\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\npassword_file = {}\ndatabase = \"{}\"\nconnect_timeout_ms = 3000\n",
            self.port,
            self.user,
            serde_json::Value::String(password_file.display().to_string()),
            self.name
        )
    }
}
