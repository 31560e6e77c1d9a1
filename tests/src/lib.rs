//! Test support for returner-host's integration tests and benchmarks: the
//! fixture guests (built to wasm32-wasip2 by this crate's build script), the
//! real Salt payloads, a harness that runs the real `returner-host` binary
//! as a daemon in a temp dir, and a small blocking HTTP/1.1 client.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod etcd;
pub mod galera;
pub mod http;
pub mod mariadb;
pub mod netns;
pub mod salt;

/// Held by each of the heavy tests (the soak, the cluster and multi-master
/// tests: many processes, tens of thousands of returns) while it runs, so
/// that they run one at a time in a test binary and each one's time bounds
/// hold on a small machine. A test that panicked leaves it usable.
pub fn heavy_test() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A fixture guest component by crate name, e.g. `fixture-noop`.
pub fn guest(name: &str) -> PathBuf {
    let dir = Path::new(env!("RETURNER_GUESTS_DIR"));
    let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.is_file(), "no guest component {}; is `{name}` in tests/build.rs?", path.display());
    path
}

/// A directory of this checkout's build for what tests build beside the
/// Rust guests (kept between runs, so rebuilds are incremental).
pub fn build_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("RETURNER_GUESTS_DIR")).join("../..").join(name);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// A free loopback TCP port for a server a test starts (and may stop and
/// start again on the same port). Taken below the kernel's ephemeral range
/// (`ip_local_port_range`, 32768 and up here), from which `bind(:0)` and
/// every outgoing connection take their ports: a server restarted on a port
/// from there can find it taken by another test's client meanwhile.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u16 = 20_000;
    const LAST: u16 = 32_000;
    // Each test binary starts at its own offset so parallel binaries rarely
    // probe the same ports; each port is checked free before it is handed out.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = FIRST + (std::process::id() % u32::from(LAST - FIRST)) as u16;
    let _ = NEXT.compare_exchange(0, start, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..(LAST - FIRST) {
        let next = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + next.wrapping_sub(FIRST) % (LAST - FIRST);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {FIRST} and {LAST}")
}

/// The directory of real Salt payloads, recorded from a Salt 3008 master
/// and minion: the test kit's own copy (`host/src/testkit/salt`), the one
/// copy in the repository.
pub fn salt_fixtures() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/src/testkit/salt");
    assert!(dir.join("minion-returns.jsonl").is_file(), "the real Salt payloads are missing at {}", dir.display());
    dir
}

/// Every JSON line of a fixture file.
pub fn salt_fixture_lines(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(salt_fixtures().join(file)).expect("reading a Salt fixture");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("fixture lines are JSON"))
        .collect()
}

/// Files named `name` under `dir`, at any depth: in a local cache, the
/// `return.p` of each stored return.
pub fn count_files(dir: &Path, name: &str) -> u64 {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display())).flatten() {
        let path = entry.path();
        if path.is_dir() {
            n += count_files(&path, name);
        } else if path.file_name().is_some_and(|f| f == name) {
            n += 1;
        }
    }
    n
}

/// A temporary directory, removed on drop.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("returner-host-test").tempdir().expect("creating a temp dir")
}

/// An HTTP response: status and parsed JSON body (`Value::Null` if not JSON).
#[derive(Debug)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The body parsed as JSON.
    pub json: Value,
    /// The raw body.
    pub body: Vec<u8>,
}

impl Response {
    /// The `result` of a 200 answer; panics with the body otherwise.
    pub fn result(&self) -> &Value {
        assert_eq!(self.status, 200, "expected 200, got {}: {}", self.status, String::from_utf8_lossy(&self.body));
        &self.json["result"]
    }

    /// `(kind, message)` of an error answer.
    pub fn error(&self) -> (&str, &str) {
        let e = &self.json["error"];
        (e["kind"].as_str().unwrap_or(""), e["message"].as_str().unwrap_or(""))
    }
}

/// Send one HTTP/1.1 request over a unix socket and read the answer.
/// [`http_unix`], or `None` when no answer came: nothing listens on
/// `socket`, or the connection broke before a whole answer (the host was
/// killed).
pub fn try_http_unix(socket: &Path, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Option<Response> {
    let stream = UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| exchange(stream, method, path, headers, body)));
    answer.ok().filter(|r| r.status != 0)
}

/// Send one HTTP/1.1 request over a unix socket and read the answer.
pub fn http_unix(socket: &Path, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let stream = UnixStream::connect(socket).unwrap_or_else(|e| panic!("connecting to {}: {e}", socket.display()));
    stream.set_read_timeout(Some(Duration::from_secs(60))).ok();
    exchange(stream, method, path, headers, body)
}

/// Send one HTTP/1.1 request over TCP and read the answer.
pub fn http_tcp(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let stream = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(60))).ok();
    exchange(stream, method, path, headers, body)
}

fn exchange<S: std::io::Read + std::io::Write>(
    mut stream: S,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    write_request(&mut stream, method, path, headers, body, false);
    read_response(&mut BufReader::new(stream))
}

fn write_request<S: std::io::Write>(
    stream: &mut S,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: {connection}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("writing the request head");
    // The server may answer (e.g. 413) before reading all of a large body.
    let _ = stream.write_all(body);
}

fn read_response<R: BufRead>(reader: &mut R) -> Response {
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("reading the status line");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut content_length = None;
    let mut chunked = false;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("reading a header");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse::<usize>().ok();
        }
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).expect("reading a chunk size");
            let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).expect("reading a chunk");
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = content_length {
        body.resize(n, 0);
        reader.read_exact(&mut body).expect("reading the body");
    } else {
        reader.read_to_end(&mut body).expect("reading the body");
    }
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Response { status, json, body }
}

/// A kept-alive HTTP/1.1 connection over a unix socket, for many requests.
pub struct HttpConn {
    reader: BufReader<UnixStream>,
}

impl HttpConn {
    /// Connect to `socket`.
    pub fn connect(socket: &Path) -> HttpConn {
        let stream = UnixStream::connect(socket).unwrap_or_else(|e| panic!("connecting to {}: {e}", socket.display()));
        HttpConn { reader: BufReader::new(stream) }
    }

    /// POST `body` to `path` and read the answer.
    pub fn post(&mut self, path: &str, body: &[u8]) -> Response {
        write_request(self.reader.get_mut(), "POST", path, &[], body, true);
        read_response(&mut self.reader)
    }
}

/// A `returner-host serve` process in a temp dir, killed on drop.
pub struct Daemon {
    child: Child,
    /// The unix socket it listens on (when it listens on one).
    pub socket: PathBuf,
    /// Its stderr, for diagnostics.
    pub log: PathBuf,
}

impl Daemon {
    /// Start `binary serve ARGS...` and wait until `socket` accepts connections.
    pub fn start(binary: &Path, args: &[&str], socket: &Path, log: &Path) -> Daemon {
        let log_file = std::fs::File::create(log).expect("creating the daemon log");
        let child = Command::new(binary)
            .arg("serve")
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let mut daemon = Daemon { child, socket: socket.to_owned(), log: log.to_owned() };
        daemon.wait_ready(|| UnixStream::connect(socket).is_ok());
        daemon
    }

    /// `binary serve --config FILE` where FILE, written to `dir/host.toml`,
    /// holds a `[server]` table listening on `dir/host.sock` with data in
    /// `dir/var` plus `server_extra`, then `config`.
    pub fn with_config(binary: &Path, dir: &Path, server_extra: &str, config: &str) -> Daemon {
        let socket = dir.join("host.sock");
        let text = format!(
            "[server]\nlisten = \"unix:{}\"\ndata_dir = {}\n{server_extra}\n{config}",
            socket.display(),
            toml_path(&dir.join("var"))
        );
        let file = dir.join("host.toml");
        std::fs::write(&file, text).expect("writing the daemon config");
        Daemon::start(binary, &["--config", file.to_str().unwrap()], &socket, &dir.join("daemon.log"))
    }

    /// Start with a TCP listener at `addr` and wait until it accepts.
    pub fn start_tcp(binary: &Path, args: &[&str], addr: &str, log: &Path) -> Daemon {
        let log_file = std::fs::File::create(log).expect("creating the daemon log");
        let child = Command::new(binary)
            .arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let mut daemon = Daemon { child, socket: PathBuf::new(), log: log.to_owned() };
        daemon.wait_ready(|| std::net::TcpStream::connect(addr).is_ok());
        daemon
    }

    fn wait_ready(&mut self, ready: impl Fn() -> bool) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(120) {
            if ready() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("returner-host exited with {status} before it was ready:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("returner-host was not ready within 120 s:\n{}", self.log_text());
    }

    /// What the daemon logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send SIGTERM and wait (at most `within`) for the process to exit;
    /// panics if it does not, or exits unsuccessfully.
    pub fn terminate(&mut self, within: Duration) {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        assert!(sent.is_ok_and(|s| s.success()), "sending SIGTERM");
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "returner-host exited with {status} after SIGTERM:\n{}", self.log_text());
                return;
            }
            assert!(Instant::now() < deadline, "returner-host still runs {within:?} after SIGTERM:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// POST a returner call over the unix socket.
    pub fn call(&self, returner: &str, function: &str, args: &Value) -> Response {
        http_unix(
            &self.socket,
            "POST",
            &format!("/v1/returners/{returner}/{function}"),
            &[("Content-Type", "application/json")],
            args.to_string().as_bytes(),
        )
    }

    /// `GET /v1/spool`: each queue's state.
    pub fn spool_status(&self) -> Vec<Value> {
        let r = http_unix(&self.socket, "GET", "/v1/spool", &[], b"");
        assert_eq!(r.status, 200, "GET /v1/spool: {}", String::from_utf8_lossy(&r.body));
        r.json["queues"].as_array().cloned().unwrap_or_default()
    }

    /// The state of `returner`'s queue.
    pub fn queue(&self, returner: &str) -> Value {
        self.spool_status()
            .into_iter()
            .find(|q| q["returner"] == returner)
            .unwrap_or_else(|| panic!("the spool has no queue `{returner}`"))
    }

    /// The rate, in writes per second, at which `returner`'s spool delivers
    /// a backlog of `count` writes, timed from the first delivery seen
    /// until its queue is empty. Watched through the spool's status, which
    /// costs the backend nothing (a count of its rows many times a second
    /// would not).
    pub fn drain_rate(&self, returner: &str, count: u64) -> f64 {
        let (mut started, mut at_start) = (None, 0);
        loop {
            let queued = self.queue(returner)["items"].as_u64().unwrap();
            if started.is_none() && queued < count {
                started = Some(Instant::now());
                at_start = count - queued;
            }
            if queued == 0 {
                let took = started.map_or(f64::NAN, |t: Instant| t.elapsed().as_secs_f64());
                return (count - at_start) as f64 / took;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait until the spool has delivered (or moved to dead letters) every
    /// write of `returner`; panics after `within` with the queue's state.
    pub fn settle(&self, returner: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let q = self.queue(returner);
            if q["items"] == 0 {
                return;
            }
            if Instant::now() >= deadline {
                let log = self.log_text();
                let tail: Vec<&str> = log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
                panic!("{returner}'s spool did not drain within {within:?}: {q}\nthe host's log ends:\n{}", tail.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The error `returner`'s delivery is failing with, once it reports one
    /// (within `within`); the write stays in the spool meanwhile.
    pub fn delivery_error(&self, returner: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let q = self.queue(returner);
            if let Some(e) = q["last_error"].as_str() {
                assert!(q["items"].as_u64() > Some(0), "a failing delivery holds its writes: {q}");
                return e.to_owned();
            }
            assert!(Instant::now() < deadline, "{returner}'s delivery reported no error within {within:?}: {q}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `returner`'s dead letters.
    pub fn dead_letters(&self, returner: &str) -> Vec<Value> {
        let r = http_unix(&self.socket, "GET", &format!("/v1/spool/{returner}/dead-letters"), &[], b"");
        assert_eq!(r.status, 200, "dead letters of {returner}: {}", String::from_utf8_lossy(&r.body));
        r.json["dead_letters"].as_array().cloned().unwrap_or_default()
    }

    /// A write, and what became of it: the answer when the host refused it,
    /// otherwise the outcome of its delivery: `200 {"result": null}` once
    /// delivered, or, when it went to dead letters, an error carrying the
    /// dead letter's error as `{"error": {"kind", "message"}}`, with the
    /// status a call failing that way is answered with.
    pub fn write(&self, returner: &str, function: &str, args: &Value) -> Response {
        let sent = args.to_string();
        let letters = |d: &Daemon| -> Vec<Value> {
            d.dead_letters(returner).into_iter().filter(|l| l["body"] == sent.as_str()).collect()
        };
        let before = letters(self).len();
        let r = self.call(returner, function, args);
        if r.status != 200 {
            return r;
        }
        self.settle(returner, Duration::from_secs(60));
        match letters(self).into_iter().nth(before) {
            None => r,
            Some(letter) => {
                // The status the host answers a call failing this way with.
                let status = match letter["kind"].as_str().unwrap_or("") {
                    "denied" => 403,
                    "backend" | "bad_output" => 502,
                    "guest_not_found" => 404,
                    "unsupported" => 501,
                    "limit" => 429,
                    "deadline" => 504,
                    "memory_limit" => 507,
                    "trap" | "internal" => 500,
                    _ => 422,
                };
                let json = serde_json::json!({ "error": { "kind": letter["kind"], "message": letter["message"] } });
                Response { status, body: json.to_string().into_bytes(), json }
            }
        }
    }

    /// Salt's `function` and what it did: [`Daemon::write`] for a write
    /// (which the host spools), [`Daemon::call`] for the rest.
    pub fn outcome(&self, returner: &str, function: &str, args: &Value) -> Response {
        const WRITES: [&str; 5] = ["returner", "save_load", "save_minions", "event_return", "update_endtime"];
        if WRITES.contains(&function) { self.write(returner, function, args) } else { self.call(returner, function, args) }
    }

    /// The `name{labels} value` lines of `GET /metrics`, by series.
    pub fn metrics(&self) -> std::collections::HashMap<String, f64> {
        let r = http_unix(&self.socket, "GET", "/metrics", &[], b"");
        assert_eq!(r.status, 200, "GET /metrics");
        String::from_utf8_lossy(&r.body)
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse().ok()?))
            })
            .collect()
    }

    /// Write `count` returns to `returner` from `clients` kept-alive
    /// connections at once: each of `fixtures` in turn, return `n` with jid
    /// `2026` and `first + n` in 16 digits. Panics on any answer but 200;
    /// `done(n)` runs after return `n` is acknowledged.
    pub fn write_returns(&self, returner: &str, fixtures: &[Value], first: u64, count: u64, clients: usize, done: impl Fn(u64) + Sync) {
        let next = std::sync::atomic::AtomicU64::new(0);
        let path = format!("/v1/returners/{returner}/returner");
        std::thread::scope(|s| {
            for _ in 0..clients {
                s.spawn(|| {
                    let mut conn = HttpConn::connect(&self.socket);
                    loop {
                        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if n >= count {
                            return;
                        }
                        let mut ret = fixtures[n as usize % fixtures.len()].clone();
                        ret["jid"] = serde_json::json!(format!("2026{:016}", first + n));
                        let r = conn.post(&path, serde_json::json!({ "ret": ret }).to_string().as_bytes());
                        assert_eq!(r.status, 200, "{:?}", r.json);
                        done(n);
                    }
                });
            }
        });
    }

    /// Call until the answer is 200, every 200 ms for at most `within`
    /// (a backend coming back); panics with the last answer after that.
    pub fn call_until_ok(&self, returner: &str, function: &str, args: &Value, within: Duration) -> Response {
        let deadline = Instant::now() + within;
        loop {
            let r = self.call(returner, function, args);
            if r.status == 200 {
                return r;
            }
            assert!(Instant::now() < deadline, "{returner}.{function} did not recover within {within:?}: {:?}", r.json);
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of a process in KiB, from /proc.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc status")
}

/// The text of an audit log once its writer is quiet: the daemon writes
/// `server.audit_log` from a thread of its own, so the lines of a call just
/// answered may still be on their way. Waits until the file ends a line and
/// has not grown for 200 ms (at most 10 s).
pub fn settled_audit_log(path: &Path) -> String {
    let started = Instant::now();
    let mut last = None;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let whole = text.is_empty() || text.ends_with('\n');
        if (whole && last == Some(text.len())) || started.elapsed() > Duration::from_secs(10) {
            return text;
        }
        last = Some(text.len());
    }
}

/// A TOML string literal of a path.
pub fn toml_path(p: &Path) -> String {
    Value::String(p.display().to_string()).to_string()
}

/// `[returners.good]`: the local-cache returner with `jobs` granted rw, the
/// well-behaved neighbour hostile guests are run beside.
pub fn good_returner_toml(jobs: &Path) -> String {
    std::fs::create_dir_all(jobs).expect("creating the good returner's directory");
    format!("\n[returners.good]\nmodule = \"builtin:local-cache\"\n[returners.good.grants.fs]\ndir = {}\nmode = \"rw\"\n", toml_path(jobs))
}

/// `[returners.*]` of the hostile suite served beside a good returner:
/// `good` (local-cache, `jobs` granted rw), `spin` (loops; 300 ms deadline),
/// `memhog` (grows memory; 32 MiB cap), `trapper` (traps, panics), `abuser`
/// (recurses, answers 100 MB, floods host calls; 640 MiB, 2 s) and `nogrant`
/// (the escaper with no grant, trying every capability).
pub fn hostile_suite_toml(jobs: &Path) -> String {
    let module = |name: &str| toml_path(&guest(name));
    format!(
        r#"{good}
[returners.spin]
module = {spin}
limits = {{ deadline_ms = 300 }}

[returners.memhog]
module = {memhog}
limits = {{ memory_mib = 32, deadline_ms = 20000 }}

[returners.trapper]
module = {trapper}

[returners.abuser]
module = {abuser}
limits = {{ memory_mib = 640, deadline_ms = 2000 }}

[returners.nogrant]
module = {escaper}
"#,
        good = good_returner_toml(jobs),
        spin = module("fixture-spin"),
        memhog = module("fixture-memhog"),
        trapper = module("fixture-trapper"),
        abuser = module("fixture-abuser"),
        escaper = module("fixture-escaper"),
    )
}
