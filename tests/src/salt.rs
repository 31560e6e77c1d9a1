//! Real Salt for the tests, from the venvs `scripts/setup` makes: a local
//! `salt-call`, a `salt-master` and `salt-minion` pair on free loopback
//! ports in a temp dir (stopped on drop), and Salt's own returner modules
//! called through Salt's loader.

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::free_port;

/// The minion id of every Salt minion here.
pub const MINION_ID: &str = "minion1";

/// A line of Salt releases the shim is run on end to end: sites upgrade
/// line by line, so each supported line's newest installable release gets
/// its own venv from `scripts/setup`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SaltLine {
    /// Salt 3008, with saltext.mysql and PyMySQL: what most tests run.
    #[default]
    V3008,
    /// Salt 3007, the last line with `etcd_return`, with etcd3-py.
    V3007,
    /// Salt 3006, the older long-term-support line.
    V3006,
}

impl SaltLine {
    /// The venv `scripts/setup` installs this line into (same variables, same defaults).
    pub fn venv(self) -> PathBuf {
        match self {
            SaltLine::V3008 => find_venv("RETURNER_HOST_SALT_VENV", "salt-venv"),
            SaltLine::V3007 => find_venv("RETURNER_HOST_SALT3007_VENV", "salt3007-venv"),
            SaltLine::V3006 => find_venv("RETURNER_HOST_SALT3006_VENV", "salt3006-venv"),
        }
    }
}

/// The venv with Salt 3008, saltext.mysql and PyMySQL.
pub fn venv() -> PathBuf {
    SaltLine::V3008.venv()
}

/// The venv with Salt 3007 (the last with `etcd_return`) and etcd3-py.
pub fn venv_3007() -> PathBuf {
    SaltLine::V3007.venv()
}

fn find_venv(var: &str, default: &str) -> PathBuf {
    let dir = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| "/root".into());
        home.join(".cache/returner-host").join(default)
    });
    assert!(
        dir.join("bin/salt-call").is_file(),
        "no Salt venv at {} (${var}): run scripts/setup, which installs Salt from PyPI there",
        dir.display()
    );
    dir
}

/// `salt/_returners` of this checkout: the shim.
pub fn shim_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../salt/_returners")
}

/// What a Salt command printed, and how it ended.
#[derive(Debug)]
pub struct SaltOutput {
    /// Exit code (-1 if killed).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl SaltOutput {
    /// Stdout parsed as JSON (`--out json`); panics with both streams otherwise.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

fn run(mut cmd: Command) -> SaltOutput {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    SaltOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// YAML for the directories every Salt daemon needs, under `root`.
fn dirs_yaml(root: &Path, log: &str) -> String {
    let r = root.display();
    format!(
        "user: root\nroot_dir: {r}\npki_dir: {r}/pki\ncachedir: {r}/cache\nsock_dir: {r}/sock\n\
         extension_modules: {r}/extmods\nlog_file: {r}/{log}\nlog_level_logfile: info\n"
    )
}

/// A YAML list of paths.
fn yaml_paths(paths: &[&Path]) -> String {
    let items: Vec<String> = paths.iter().map(|p| Value::String(p.display().to_string()).to_string()).collect();
    format!("[{}]", items.join(", "))
}

/// A masterless minion for `salt-call --local`, its config in `dir/local`.
pub struct LocalMinion {
    config_dir: PathBuf,
    line: SaltLine,
}

impl LocalMinion {
    /// Config with the shim and `returner_dirs` on the path, file_roots
    /// in `dir/states`, and `extra` YAML (e.g. `wasm.url: ...`); Salt 3008.
    pub fn new(dir: &Path, returner_dirs: &[&Path], extra: &str) -> LocalMinion {
        LocalMinion::new_on(SaltLine::default(), dir, returner_dirs, extra)
    }

    /// As [`LocalMinion::new`], run by Salt of `line`.
    pub fn new_on(line: SaltLine, dir: &Path, returner_dirs: &[&Path], extra: &str) -> LocalMinion {
        let config_dir = dir.join("local");
        let states = dir.join("states");
        std::fs::create_dir_all(&config_dir).unwrap();
        std::fs::create_dir_all(&states).unwrap();
        let config = format!(
            "id: {MINION_ID}\nfile_client: local\n{}returner_dirs: {}\nfile_roots: {{base: [{}]}}\n{extra}\n",
            dirs_yaml(&dir.join("local-root"), "minion.log"),
            yaml_paths(returner_dirs),
            states.display()
        );
        std::fs::write(config_dir.join("minion"), config).unwrap();
        LocalMinion { config_dir, line }
    }

    /// The directory of its state files.
    pub fn states(&self) -> PathBuf {
        self.config_dir.parent().unwrap().join("states")
    }

    /// `salt-call --local --out json ARGS`.
    pub fn call(&self, args: &[&str]) -> SaltOutput {
        let mut cmd = Command::new(self.line.venv().join("bin/salt-call"));
        cmd.arg("-c").arg(&self.config_dir).args(["--local", "--out", "json", "-l", "error"]).args(args);
        run(cmd)
    }
}

/// `jobs.lookup_jid` of every jid of `request["jids"]` with the master
/// config `request["config"]`, in one Python process (see
/// [`SaltMaster::lookup_jids`]).
const LOOKUP: &str = r#"
import json, sys
import salt.config, salt.minion, salt.runner
request = json.load(sys.stdin)
opts = salt.config.master_config(request["config"])
built = salt.minion.MasterMinion(opts)
salt.minion.MasterMinion = lambda *args, **kwargs: built
runner = salt.runner.RunnerClient(opts)
print(json.dumps({jid: runner.cmd("jobs.lookup_jid", [jid], print_event=False) for jid in request["jids"]}, default=str))
"#;

/// A `salt-master` and one `salt-minion` (`MINION_ID`) on loopback, both
/// stopped (with every process they forked) on drop.
pub struct SaltMaster {
    master: Option<Child>,
    minion: Option<Child>,
    config_dir: PathBuf,
    root: PathBuf,
    line: SaltLine,
}

impl SaltMaster {
    /// Start both with the shim and `returner_dirs` on the path, `master`
    /// and `minion` YAML added to their configs; wait until the minion
    /// answers. Salt 3008.
    pub fn start(dir: &Path, returner_dirs: &[&Path], master: &str, minion: &str) -> SaltMaster {
        SaltMaster::start_on(SaltLine::default(), dir, returner_dirs, master, minion)
    }

    /// As [`SaltMaster::start`], both daemons (and every command run
    /// against them) from Salt of `line`.
    pub fn start_on(line: SaltLine, dir: &Path, returner_dirs: &[&Path], master: &str, minion: &str) -> SaltMaster {
        let (publish, ret) = (free_port(), free_port());
        let config_dir = dir.join("master-config");
        let minion_dir = dir.join("minion-config");
        std::fs::create_dir_all(&config_dir).unwrap();
        std::fs::create_dir_all(&minion_dir).unwrap();
        let returner_dirs = yaml_paths(returner_dirs);
        std::fs::write(
            config_dir.join("master"),
            format!(
                "interface: 127.0.0.1\npublish_port: {publish}\nret_port: {ret}\nauto_accept: true\nworker_threads: 2\n\
                 {}returner_dirs: {returner_dirs}\n{master}\n",
                dirs_yaml(&dir.join("master-root"), "master.log")
            ),
        )
        .unwrap();
        std::fs::write(
            minion_dir.join("minion"),
            format!(
                "id: {MINION_ID}\nmaster: 127.0.0.1\nmaster_port: {ret}\npublish_port: {publish}\nacceptance_wait_time: 1\n\
                 {}returner_dirs: {returner_dirs}\n{minion}\n",
                dirs_yaml(&dir.join("minion-root"), "minion.log")
            ),
        )
        .unwrap();
        let daemon = |name: &str, config: &Path| daemon(line, name, config);
        let mut salt = SaltMaster {
            master: Some(daemon("salt-master", &config_dir)),
            minion: None,
            config_dir,
            root: dir.to_owned(),
            line,
        };
        salt.minion = Some(daemon("salt-minion", &minion_dir));
        salt.wait_for_minion();
        salt
    }

    fn wait_for_minion(&mut self) {
        let started = Instant::now();
        loop {
            let out = self.salt(&[MINION_ID, "test.ping", "-t", "5"]);
            if out.stdout.contains("true") {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "the Salt minion did not answer within 90 s: {out:?}\nmaster log:\n{}\nminion log:\n{}",
                self.master_log(),
                self.minion_log()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// `salt --out json -t 60 ARGS`.
    pub fn salt(&self, args: &[&str]) -> SaltOutput {
        let mut cmd = Command::new(self.line.venv().join("bin/salt"));
        cmd.arg("-c").arg(&self.config_dir).args(["--out", "json", "-t", "60"]).args(args);
        run(cmd)
    }

    /// `salt-run --out json ARGS`.
    pub fn run(&self, args: &[&str]) -> SaltOutput {
        let mut cmd = Command::new(self.line.venv().join("bin/salt-run"));
        cmd.arg("-c").arg(&self.config_dir).args(["--out", "json", "-l", "error"]).args(args);
        run(cmd)
    }

    /// Run `args` with `salt`, and the jid it ran under.
    pub fn job(&self, args: &[&str]) -> (String, Value) {
        let mut all = vec!["--show-jid"];
        all.extend_from_slice(args);
        let out = self.salt(&all);
        let (jid_line, rest) = out.stdout.split_once('\n').unwrap_or_else(|| panic!("no jid line: {out:?}"));
        let jid = jid_line.strip_prefix("jid: ").unwrap_or_else(|| panic!("no jid line: {out:?}")).trim().to_owned();
        let json = serde_json::from_str(rest).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"));
        (jid, json)
    }

    /// Run `fun` on `MINION_ID` once per entry of `args` (`salt --async`),
    /// spread evenly over `over`, with at most `in_flight` jobs awaiting
    /// their return at once, and wait for the rest; all within `within`.
    /// The jid of each job, in order, and those whose return the master had
    /// not announced by then. One Python process runs them all (a `salt`
    /// command per job costs a second of its own); the bound keeps the
    /// minion quick: each job's process hands its return to the minion over
    /// the minion's event bus, which every waiting job listens to, so a
    /// crowd of them slows every return.
    pub fn run_jobs(
        &self,
        fun: &str,
        args: &[Vec<String>],
        in_flight: usize,
        over: Duration,
        within: Duration,
    ) -> (Vec<String>, Vec<String>) {
        const RUN: &str = r#"
import json, sys, time
import salt.client, salt.config, salt.utils.event
request = json.load(sys.stdin)
opts = salt.config.client_config(request["config"])
events = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True)
client = salt.client.LocalClient(mopts=opts)
started = time.monotonic()
deadline = started + request["within"]
jids, pending = [], set()
def hear():
    event = events.get_event(wait=0.2, tag="salt/job/", full=True)
    if event and event["tag"].endswith("/ret/" + request["tgt"]):
        pending.discard(event["data"].get("jid"))
for n, args in enumerate(request["args"]):
    due = started + n * request["every"]
    while time.monotonic() < deadline and (len(pending) >= request["in_flight"] or time.monotonic() < due):
        hear()
    if time.monotonic() >= deadline:
        break
    jid = client.cmd_async(request["tgt"], request["fun"], args)
    jids.append(jid)
    pending.add(jid)
while pending and time.monotonic() < deadline:
    hear()
print(json.dumps({"jids": jids, "pending": sorted(pending)}))
"#;
        let every = over.as_secs_f64() / args.len().max(1) as f64;
        let request = serde_json::json!({
            "config": self.config_dir.join("master"), "tgt": MINION_ID, "fun": fun, "args": args,
            "in_flight": in_flight, "every": every, "within": within.as_secs_f64(),
        });
        let what = format!("running {} jobs of {fun}", args.len());
        let run = python_json(&self.line.venv(), RUN, &request, &what);
        let jids_of = |key: &str| -> Vec<String> {
            let jids = run[key].as_array().into_iter().flatten();
            jids.map(|j| match j.as_str() {
                Some(jid) if !jid.is_empty() => jid.to_owned(),
                // cmd_async gives 0 for a job the master refused.
                _ => panic!("{what}: the master refused a job: {run}"),
            })
            .collect()
        };
        let jids = jids_of("jids");
        assert_eq!(jids.len(), args.len(), "{what}: not all started within {within:?}: {run}");
        (jids, jids_of("pending"))
    }

    /// What `salt-run jobs.lookup_jid JID` answers for each of `jids`, by
    /// jid: the master's own runner, called for them all in one Python
    /// process. The runner builds a MasterMinion (loading every module) on
    /// each call, half a second apiece; here the first one built serves
    /// every call, and the rest of the runner runs as it is.
    pub fn lookup_jids(&self, jids: &[String]) -> serde_json::Map<String, Value> {

        let request = serde_json::json!({ "config": self.config_dir.join("master"), "jids": jids });
        match python_json(&self.line.venv(), LOOKUP, &request, &format!("jobs.lookup_jid of {} jobs", jids.len())) {
            Value::Object(found) => found,
            other => panic!("jobs.lookup_jid answered no object: {other}"),
        }
    }

    /// `salt-call --out json ARGS` on the minion's config: run there,
    /// returned to the master.
    pub fn minion_call(&self, args: &[&str]) -> SaltOutput {
        let mut cmd = Command::new(self.line.venv().join("bin/salt-call"));
        cmd.arg("-c").arg(self.root.join("minion-config")).args(["--out", "json", "-l", "error"]).args(args);
        run(cmd)
    }

    /// What the master logged.
    pub fn master_log(&self) -> String {
        std::fs::read_to_string(self.root.join("master-root/master.log")).unwrap_or_default()
    }

    /// What the minion logged.
    pub fn minion_log(&self) -> String {
        std::fs::read_to_string(self.root.join("minion-root/minion.log")).unwrap_or_default()
    }

    /// Whether both daemons still run.
    pub fn running(&mut self) -> bool {
        [&mut self.master, &mut self.minion]
            .into_iter()
            .all(|c| c.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None))))
    }
}

impl Drop for SaltMaster {
    fn drop(&mut self) {
        for child in [self.minion.take(), self.master.take()].into_iter().flatten() {
            stop_group(child);
        }
    }
}

/// Salt multi-master on loopback: `masters` masters sharing one key pair
/// (each on an address of its own, `127.0.0.N`), and `minions` minions
/// (`minion0`, ...) in failover mode (`master_type: failover`): each
/// connected to the first master that answers, in order, and moving to the
/// next when it stops answering. Salt 3008. Stopped on drop.
pub struct SaltMultiMaster {
    masters: Vec<Option<Child>>,
    minions: Vec<Option<Child>>,
    config_dirs: Vec<PathBuf>,
    root: PathBuf,
}

impl SaltMultiMaster {
    /// Start them, with the shim and `returner_dirs` on the path,
    /// `master(i)` YAML added to master `i`'s config and `minion` to every
    /// minion's; wait until every minion answers the first master.
    pub fn start(dir: &Path, returner_dirs: &[&Path], masters: usize, minions: usize, master: impl Fn(usize) -> String, minion: &str) -> Self {
        let line = SaltLine::default();
        let returner_dirs = yaml_paths(returner_dirs);
        let (publish, ret) = (free_port(), free_port());
        let address = |i: usize| format!("127.0.0.{}", 2 + i);
        let daemon = |name: &str, config: &Path| daemon(line, name, config);
        let mut salt = SaltMultiMaster { masters: Vec::new(), minions: Vec::new(), config_dirs: Vec::new(), root: dir.to_owned() };
        for i in 0..masters {
            let config_dir = dir.join(format!("master{i}-config"));
            let root = dir.join(format!("master{i}-root"));
            std::fs::create_dir_all(&config_dir).unwrap();
            if i > 0 {
                // Multi-master: every master has the first one's key pair.
                let keys = root.join("pki");
                std::fs::create_dir_all(&keys).unwrap();
                for key in ["master.pem", "master.pub"] {
                    std::fs::copy(dir.join("master0-root/pki").join(key), keys.join(key)).unwrap();
                }
            }
            std::fs::write(
                config_dir.join("master"),
                format!(
                    "interface: {}\npublish_port: {publish}\nret_port: {ret}\nauto_accept: true\nworker_threads: 2\n\
                     {}returner_dirs: {returner_dirs}\n{}\n",
                    address(i),
                    dirs_yaml(&root, "master.log"),
                    master(i)
                ),
            )
            .unwrap();
            salt.masters.push(Some(daemon("salt-master", &config_dir)));
            salt.config_dirs.push(config_dir);
            if i == 0 {
                let key = dir.join("master0-root/pki/master.pub");
                let started = Instant::now();
                while !key.is_file() {
                    assert!(started.elapsed() < Duration::from_secs(60), "master 0 made no key pair:\n{}", salt.master_log(0));
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        let list: Vec<String> = (0..masters).map(|i| format!("\"{}\"", address(i))).collect();
        for j in 0..minions {
            let config_dir = dir.join(format!("minion{j}-config"));
            std::fs::create_dir_all(&config_dir).unwrap();
            std::fs::write(
                config_dir.join("minion"),
                format!(
                    "id: minion{j}\nmaster: [{}]\nmaster_port: {ret}\npublish_port: {publish}\nmaster_type: failover\nmaster_alive_interval: 2\nretry_dns: 0\nacceptance_wait_time: 1\n\
                     {}returner_dirs: {returner_dirs}\n{minion}\n",
                    list.join(", "),
                    dirs_yaml(&dir.join(format!("minion{j}-root")), "minion.log")
                ),
            )
            .unwrap();
            salt.minions.push(Some(daemon("salt-minion", &config_dir)));
        }
        salt.wait_for_minions(0, minions);
        salt
    }

    /// Wait until `minions` minions answer master `master`.
    pub fn wait_for_minions(&self, master: usize, minions: usize) {
        let started = Instant::now();
        loop {
            let out = self.salt(master, &["*", "test.ping", "-t", "5"]);
            let answered = serde_json::from_str::<Value>(&out.stdout).ok().and_then(|v| v.as_object().map(|o| o.len())).unwrap_or(0);
            if answered == minions {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{answered} of {minions} minions answered master {master} within 120 s: {out:?}\nmaster log:\n{}\nminion0 log:\n{}",
                self.master_log(master),
                std::fs::read_to_string(self.root.join("minion0-root/minion.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// `salt --out json --static -t 60 ARGS` on master `i`.
    pub fn salt(&self, i: usize, args: &[&str]) -> SaltOutput {
        let mut cmd = Command::new(SaltLine::default().venv().join("bin/salt"));
        cmd.arg("-c").arg(&self.config_dirs[i]).args(["--out", "json", "--static", "-t", "60"]).args(args);
        run(cmd)
    }

    /// What `salt-run jobs.lookup_jid JID` on master `i` answers for each
    /// of `jids`, by jid (one Python process, as [`SaltMaster::lookup_jids`]).
    pub fn lookup_jids(&self, i: usize, jids: &[String]) -> serde_json::Map<String, Value> {
        let request = serde_json::json!({ "config": self.config_dirs[i].join("master"), "jids": jids });
        match python_json(&SaltLine::default().venv(), LOOKUP, &request, &format!("jobs.lookup_jid of {} jobs on master {i}", jids.len())) {
            Value::Object(found) => found,
            other => panic!("jobs.lookup_jid answered no object: {other}"),
        }
    }

    /// Run `test.echo PREFIX-N` on every minion from master `i`, `count`
    /// times, one job after another, each waiting for every minion's
    /// answer (one Python process): each job's jid and answers.
    pub fn echo_jobs(&self, i: usize, prefix: &str, count: usize) -> Vec<(String, Value)> {
        const RUN: &str = r#"
import json, sys
import salt.client, salt.config
request = json.load(sys.stdin)
opts = salt.config.client_config(request["config"])
client = salt.client.LocalClient(mopts=opts)
done = []
for n in range(request["count"]):
    text = "%s-%d" % (request["prefix"], n)
    pub = client.run_job("*", "test.echo", [text], timeout=30, listen=True)
    answers = {}
    for ret in client.get_iter_returns(pub["jid"], pub["minions"], timeout=30):
        for minion, value in (ret or {}).items():
            answers[minion] = value.get("ret")
    done.append([pub["jid"], answers])
print(json.dumps(done))
"#;
        let request = serde_json::json!({ "config": self.config_dirs[i].join("master"), "prefix": prefix, "count": count });
        let ran = python_json(&SaltLine::default().venv(), RUN, &request, &format!("{count} jobs on master {i}"));
        ran.as_array()
            .unwrap_or_else(|| panic!("no list of jobs: {ran}"))
            .iter()
            .map(|j| (j[0].as_str().unwrap_or_default().to_owned(), j[1].clone()))
            .collect()
    }

    /// Kill master `i` and every process it forked (SIGKILL: it dies).
    pub fn kill_master(&mut self, i: usize) {
        if let Some(child) = self.masters[i].take() {
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
            stop_group(child);
        }
    }

    /// What master `i` logged.
    pub fn master_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.root.join(format!("master{i}-root/master.log"))).unwrap_or_default()
    }
}

impl Drop for SaltMultiMaster {
    fn drop(&mut self) {
        for child in self.minions.iter_mut().chain(self.masters.iter_mut()).filter_map(Option::take) {
            stop_group(child);
        }
    }
}

/// Start Salt daemon `name` (`salt-master`, `salt-minion`) of `line` on
/// `config`, quiet, in its own process group, so that stopping it stops
/// every worker it forks.
fn daemon(line: SaltLine, name: &str, config: &Path) -> Child {
    Command::new(line.venv().join("bin").join(name))
        .arg("-c")
        .arg(config)
        .args(["-l", "quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"))
}

/// TERM the process group led by `child`, KILL what is left after 5 s.
fn stop_group(mut child: Child) {
    let group = format!("-{}", child.id());
    let signal = |sig: &str| {
        let _ = Command::new("kill").args([sig, "--", &group]).stderr(Stdio::null()).status();
    };
    signal("-TERM");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Workers may outlive the leader; the group id stays theirs.
    signal("-KILL");
    let _ = child.wait();
}

/// Call functions of Salt returner modules through Salt's loader in the
/// venv `venv`, with `opts` added to a minion config: each call is
/// `["returner.function", args...]`; the results as JSON. Panics if one raises.
/// An object `{"__bytes__": "text"}` in a call's arguments is passed as
/// Python `bytes` (UTF-8 of the text), which JSON has no type for.
pub fn salt_returner_calls(venv: &Path, opts: &Value, calls: &[Value]) -> Vec<Value> {
    salt_returner_outcomes(venv, opts, calls)
        .into_iter()
        .zip(calls)
        .map(|(outcome, call)| outcome.unwrap_or_else(|e| panic!("{call} raised {e}")))
        .collect()
}

/// As [`salt_returner_calls`], with each call's exception (`Type: message`,
/// and `KeyError` among the types when it is one) instead of a panic.
pub fn salt_returner_outcomes(venv: &Path, opts: &Value, calls: &[Value]) -> Vec<Result<Value, String>> {
    const DRIVER: &str = r#"
import json, sys
import salt.config, salt.loader
request = json.load(sys.stdin, object_hook=lambda o: o["__bytes__"].encode() if list(o) == ["__bytes__"] else o)
opts = salt.config.minion_config(None)
opts.update(request["opts"])
returners = salt.loader.returners(opts, {})
results = []
for call in request["calls"]:
    try:
        results.append({"ok": returners[call[0]](*call[1:])})
    except Exception as exc:
        kinds = " ".join(t.__name__ for t in type(exc).__mro__ if t.__name__ in ("KeyError",))
        results.append({"raised": "{} {}: {}".format(type(exc).__name__, kinds, exc)})
print(json.dumps(results, default=str))
"#;
    let what = format!("Salt's returner calls {calls:?}");
    let request = serde_json::json!({ "opts": opts, "calls": calls });
    let results: Vec<Value> = serde_json::from_value(python_json(venv, DRIVER, &request, &what))
        .unwrap_or_else(|e| panic!("{what} printed no list ({e})"));
    results
        .into_iter()
        .map(|r| match r.get("raised") {
            Some(e) => Err(e.as_str().unwrap_or_default().to_owned()),
            None => Ok(r["ok"].clone()),
        })
        .collect()
}

/// Run `script` with the Python of `venv`, `request` as JSON on its stdin;
/// the JSON of the last line it printed. Panics, naming `what`, if it fails.
fn python_json(venv: &Path, script: &str, request: &Value, what: &str) -> Value {
    let mut child = Command::new(venv.join("bin/python"))
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {}/bin/python: {e}", venv.display()));
    child.stdin.take().unwrap().write_all(request.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{what} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{what} printed no JSON ({e}): {stdout}"))
}
