//! The spool through the real daemon: what it acknowledges survives kill -9
//! and is stored once; a full spool, or a full disk under it, answers 507
//! and loses nothing; a write that can never succeed goes to dead letters
//! while the rest are delivered, and comes back with `spool dead-letters
//! retry`; reads see every earlier write; SIGTERM drains; a damaged spool
//! file does not stop the host.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use returner_host_tests::etcd::EtcdServer;
use returner_host_tests::temp_dir;
use serde_json::{Value, json};

use super::etcd::{etcd_profile_toml, etcd_returner_toml};
use super::{bin, config_daemon, default_daemon};

fn ret(n: u64) -> Value {
    json!({ "ret": { "id": format!("m{}", n % 7), "jid": format!("2026113000{n:010}"), "fun": "test.ping", "return": n, "retcode": 0, "success": true } })
}

fn etcd_config(etcd: &EtcdServer) -> String {
    format!("{}{}", etcd_profile_toml("main", etcd), etcd_returner_toml("main"))
}

/// Keys etcd holds for the return of job `n`, as the etcd returner lays them out.
fn etcd_return_keys(etcd: &EtcdServer, n: u64) -> Vec<(String, String)> {
    let r = ret(n);
    etcd.dump(&format!("/salt/return/jobs/{}/{}/", r["ret"]["jid"].as_str().unwrap(), r["ret"]["id"].as_str().unwrap()))
}

#[test]
fn acknowledged_returns_survive_kill_9_and_are_stored_once() {
    let dir = temp_dir();
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let next = Arc::new(AtomicU64::new(1));
    for round in 0..2 {
        let d = default_daemon(dir.path());
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let (socket, acked, next, stop) = (d.socket.clone(), acked.clone(), next.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        let body = ret(n).to_string();
                        let r = returner_host_tests::try_http_unix(&socket, "POST", "/v1/returners/local_cache/returner", &[], body.as_bytes());
                        match r {
                            Some(r) if r.status == 200 => acked.lock().unwrap().push(n),
                            // The kill came before the answer: not acknowledged.
                            None => return,
                            Some(r) => panic!("round {round}: return {n} answered {}: {:?}", r.status, r.json),
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1500));
        // kill -9 mid-stream (dropping the daemon kills it with SIGKILL).
        drop(d);
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().expect("a writer failed");
        }
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 50, "the writers ran: {}", acked.len());
    let d = default_daemon(dir.path());
    assert!(d.log_text().contains("not closed cleanly"), "a kill -9 is reported at the next start:\n{}", d.log_text());
    d.settle("local_cache", Duration::from_secs(120));
    for n in &acked {
        let r = ret(*n);
        let (jid, id) = (r["ret"]["jid"].as_str().unwrap(), r["ret"]["id"].as_str().unwrap());
        let got = d.call("local_cache", "get_jid", &json!({ "jid": jid }));
        assert_eq!(got.result(), &json!({ id: { "return": n, "retcode": 0, "success": true } }), "return {n}");
        // Salt's layout: one return file per minion per job.
        let jid_dir = super::local_cache_api::jid_dir(&dir.path().join("var/jobs"), jid);
        let files: Vec<_> = std::fs::read_dir(&jid_dir).unwrap().flatten().filter(|e| e.path().is_dir()).collect();
        assert_eq!(files.len(), 1, "return {n}: {files:?}");
    }
    assert!(d.dead_letters("local_cache").is_empty());
}

#[test]
fn reads_see_every_write_acknowledged_before_them() {
    let dir = temp_dir();
    let d = default_daemon(dir.path());
    for n in 1..=200 {
        d.call("local_cache", "returner", &ret(n)).result();
    }
    // No waiting: the read waits for the 200 writes before it.
    let last = ret(200);
    let got = d.call("local_cache", "get_jid", &json!({ "jid": last["ret"]["jid"] }));
    assert_eq!(got.result()["m4"]["return"], json!(200));
    let load = json!({ "jid": "20261130000000009999", "load": { "fun": "test.ping", "arg": [], "tgt": "*", "tgt_type": "glob", "user": "root" } });
    d.call("local_cache", "save_load", &load).result();
    assert_eq!(d.call("local_cache", "get_load", &json!({ "jid": "20261130000000009999" })).result()["fun"], "test.ping");
}

#[test]
fn a_full_spool_answers_507_loses_nothing_and_takes_writes_again_once_drained() {
    let mut etcd = EtcdServer::start();
    let dir = temp_dir();
    let d = config_daemon(dir.path(), "spool = { max_bytes = 1048576 }", &etcd_config(&etcd));
    etcd.stop();
    let big = |n: u64| {
        let mut r = ret(n);
        r["ret"]["return"] = json!("x".repeat(100 * 1024));
        r
    };
    let mut accepted = Vec::new();
    let refusal = loop {
        let n = accepted.len() as u64 + 1;
        let r = d.call("etcd", "returner", &big(n));
        if r.status != 200 {
            break r;
        }
        accepted.push(n);
        assert!(n < 100, "1 MiB of spool took {n} returns of 100 KiB");
    };
    assert_eq!((refusal.status, refusal.error().0), (507, "spool_full"), "{:?}", refusal.json);
    assert!(refusal.error().1.contains("server.spool.max_bytes"), "names the setting: {:?}", refusal.json);
    assert!((8..=10).contains(&accepted.len()), "about 1 MiB accepted: {}", accepted.len());
    let q = d.queue("etcd");
    assert_eq!(q["items"].as_u64(), Some(accepted.len() as u64), "{q}");

    etcd.restart();
    d.settle("etcd", Duration::from_secs(60));
    for n in &accepted {
        assert!(!etcd_return_keys(&etcd, *n).is_empty(), "return {n} was acknowledged and must be stored");
    }
    d.write("etcd", "returner", &big(500)).result();
    assert!(!etcd_return_keys(&etcd, 500).is_empty());
}

/// A small tmpfs mounted on a directory, so a test can fill a filesystem
/// without filling the machine's; unmounted on drop, also when the test
/// panics (declare it after the temp dir and before the daemon, which must
/// be gone first).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let needs = "this test needs root (CAP_SYS_ADMIN) to mount a small tmpfs";
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap_or_else(|e| panic!("running mount: {e}; {needs}"));
        assert!(out.status.success(), "mounting a tmpfs on {} failed: {}; {needs}", dir.display(), String::from_utf8_lossy(&out.stderr).trim());
        Tmpfs { dir: dir.to_owned() }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if !Command::new("umount").arg(&self.dir).status().is_ok_and(|s| s.success()) {
            // Still held by something: detach it now, freed once let go.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

#[test]
fn a_spool_whose_disk_fills_answers_507_keeps_what_it_acknowledged_and_takes_writes_once_there_is_room() {
    let mut etcd = EtcdServer::start();
    let dir = temp_dir();
    let spool = dir.path().join("var/spool");
    let _disk = Tmpfs::mount(&spool, "4m");
    // Other files on the same disk, for the admin to remove.
    let ballast = spool.join("ballast");
    std::fs::write(&ballast, vec![0u8; 1024 * 1024]).unwrap();
    let more_ballast = spool.join("more-ballast");
    std::fs::write(&more_ballast, vec![0u8; 512 * 1024]).unwrap();
    let config = etcd_config(&etcd);
    let reserve = "spool = { reserve_bytes = 262144 }";
    let mut d = config_daemon(dir.path(), reserve, &config);
    assert_eq!(std::fs::metadata(spool.join("reserve")).map(|m| m.len()).ok(), Some(262144), "the spool holds its disk reserve");
    etcd.stop();
    let big = |n: u64| {
        let mut r = ret(n);
        r["ret"]["return"] = json!("x".repeat(64 * 1024));
        r
    };
    let next = AtomicU64::new(1);
    let mut accepted = Vec::new();
    // Writes until the disk has no room for one; the refusal.
    let fill = |d: &returner_host_tests::Daemon, accepted: &mut Vec<u64>| {
        let mut taken = 0;
        loop {
            let n = next.fetch_add(1, Ordering::Relaxed);
            let r = d.call("etcd", "returner", &big(n));
            if r.status != 200 {
                return r;
            }
            accepted.push(n);
            taken += 1;
            assert!(taken < 200, "4 MiB of disk took {taken} returns of 64 KiB");
        }
    };

    let refusal = fill(&d, &mut accepted);
    assert_eq!((refusal.status, refusal.error().0), (507, "spool_full"), "{:?}", refusal.json);
    let message = refusal.error().1;
    assert!(message.contains("disk") && message.contains("full") && message.contains(spool.to_str().unwrap()), "names the problem and where: {message}");
    assert!(accepted.len() >= 5, "the spool took writes until the disk filled: {}", accepted.len());
    let filled = accepted.len() as u64;
    // Still full: refused again, the same way, and the host serves on.
    let again = d.call("etcd", "returner", &big(next.fetch_add(1, Ordering::Relaxed)));
    assert_eq!((again.status, again.error().0), (507, "spool_full"), "{:?}", again.json);
    assert!(d.is_running());
    // Every acknowledged write is queued. A refused one is too when its
    // commit reached the disk but the store could not open the file again
    // to tell (it is then delivered: at least once, never lost).
    let queued = d.queue("etcd")["items"].as_u64().unwrap();
    assert!((filled..=filled + 2).contains(&queued), "{queued} queued, {filled} acknowledged, 2 refused");

    // The admin frees room on the disk: writes are taken again.
    std::fs::remove_file(&ballast).unwrap();
    let r = d.call("etcd", "returner", &big(next.fetch_add(1, Ordering::Relaxed)));
    assert_eq!(r.status, 200, "{:?}", r.json);
    accepted.push(next.load(Ordering::Relaxed) - 1);
    // Full again; then the backend comes back and the queue drains while
    // clients keep writing into the room that makes inside the spool's file
    // (refused while there is none).
    let refusal = fill(&d, &mut accepted);
    assert_eq!((refusal.status, refusal.error().0), (507, "spool_full"), "{:?}", refusal.json);
    etcd.restart();
    let writing = Instant::now();
    let taken = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                while writing.elapsed() < Duration::from_secs(3) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    match d.call("etcd", "returner", &big(n)) {
                        r if r.status == 200 => taken.lock().unwrap().push(n),
                        r => assert_eq!((r.status, r.error().0), (507, "spool_full"), "{:?}", r.json),
                    }
                }
            });
        }
    });
    accepted.extend(taken.into_inner().unwrap());
    // Every acknowledged write is delivered, even if the disk is too full
    // for the spool to record that (the writes it delivered then count as
    // queued until it can, and would be delivered again, harmlessly, after a
    // restart); room freed on the disk lets it catch up.
    let deadline = Instant::now() + Duration::from_secs(60);
    for n in &accepted {
        while etcd_return_keys(&etcd, *n).is_empty() {
            assert!(Instant::now() < deadline, "return {n} was acknowledged and must be stored: {}", d.queue("etcd"));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    std::fs::remove_file(&more_ballast).unwrap();
    d.settle("etcd", Duration::from_secs(60));
    assert!(d.dead_letters("etcd").is_empty(), "{:?}", d.dead_letters("etcd"));
    let n = next.fetch_add(1, Ordering::Relaxed);
    d.write("etcd", "returner", &big(n)).result();
    assert!(!etcd_return_keys(&etcd, n).is_empty());

    // Full once more, the backend down, and the host killed (kill -9): the
    // next start finds every write acknowledged, and delivers them.
    etcd.stop();
    let before = accepted.len();
    let refusal = fill(&d, &mut accepted);
    assert_eq!((refusal.status, refusal.error().0), (507, "spool_full"), "{:?}", refusal.json);
    assert!(accepted.len() > before, "the drained spool took writes again");
    drop(d);
    let d = config_daemon(dir.path(), reserve, &config);
    assert!(!d.log_text().contains("cannot be opened"), "{}", d.log_text());
    let (queued, acknowledged) = (d.queue("etcd")["items"].as_u64().unwrap(), (accepted.len() - before) as u64);
    assert!((acknowledged..=acknowledged + 1).contains(&queued), "{queued} queued, {acknowledged} acknowledged, 1 refused: {}", d.log_text());
    etcd.restart();
    d.settle("etcd", Duration::from_secs(60));
    for n in &accepted[before..] {
        assert!(!etcd_return_keys(&etcd, *n).is_empty(), "return {n} was acknowledged before the kill and must be stored");
    }
    assert!(d.dead_letters("etcd").is_empty(), "{:?}", d.dead_letters("etcd"));
}

#[test]
fn a_poison_return_goes_to_dead_letters_the_rest_are_delivered_and_retry_brings_it_back() {
    let etcd = EtcdServer::start();
    let dir = temp_dir();
    let d = config_daemon(dir.path(), "", &etcd_config(&etcd));
    // Over etcd's request limit: the returner answers `invalid`, every time.
    let mut poison = ret(2);
    poison["ret"]["return"] = json!("x".repeat(3 * 1024 * 1024));
    for n in [1, 3] {
        d.call("etcd", "returner", &ret(n)).result();
        if n == 1 {
            d.call("etcd", "returner", &poison).result();
        }
    }
    d.settle("etcd", Duration::from_secs(60));
    assert!(!etcd_return_keys(&etcd, 1).is_empty() && !etcd_return_keys(&etcd, 3).is_empty(), "the others are delivered");
    assert!(etcd_return_keys(&etcd, 2).is_empty());
    let letters = d.dead_letters("etcd");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!((letters[0]["kind"].as_str(), letters[0]["function"].as_str()), (Some("invalid"), Some("returner")));
    assert!(letters[0]["message"].as_str().unwrap().contains("too large"), "{:?}", letters[0]["message"]);
    assert_eq!(letters[0]["body"].as_str().unwrap(), poison.to_string(), "kept as it arrived");
    let m = d.metrics();
    assert_eq!(m[r#"returner_host_dead_lettered_total{returner="etcd"}"#], 1.0);
    assert_eq!(m[r#"returner_host_spool_dead_letters{returner="etcd"}"#], 1.0);
    assert!(m[r#"returner_host_delivered_total{returner="etcd"}"#] >= 2.0);

    // The command line lists it, and retry queues it again: still too large,
    // so it comes back to dead letters, once.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(bin())
            .args(["spool"])
            .args(args)
            .args(["--config", dir.path().join("host.toml").to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "spool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed: Value = serde_json::from_str(&cli(&["dead-letters", "list", "etcd"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let status = cli(&["status"]);
    assert!(status.lines().any(|l| l.starts_with("etcd ") && l.trim_end().ends_with('-') && l.contains(" 1 ")), "{status}");
    let seq = listed[0]["seq"].as_u64().unwrap().to_string();
    assert_eq!(cli(&["dead-letters", "retry", "etcd", "--seq", &seq]).trim(), "1 dead letter queued again");
    d.settle("etcd", Duration::from_secs(60));
    assert_eq!(d.dead_letters("etcd").len(), 1, "failed again, kept once");
    assert_eq!(cli(&["dead-letters", "drop", "etcd"]).trim(), "1 dead letter dropped");
    assert!(d.dead_letters("etcd").is_empty());
    assert_eq!(d.queue("etcd")["dead_bytes"], 0);
}

#[test]
fn a_denied_write_is_retried_after_the_grant_is_fixed() {
    let etcd = EtcdServer::start();
    let dir = temp_dir();
    let read_only = etcd_config(&etcd).replace(r#"ops = ["read", "write", "delete"]"#, r#"ops = ["read"]"#);
    let mut d = config_daemon(dir.path(), "", &read_only);
    let r = d.write("etcd", "returner", &ret(1));
    assert_eq!(r.error().0, "denied", "{:?}", r.json);
    assert!(etcd_return_keys(&etcd, 1).is_empty());
    // The admin widens the grant and reloads, then retries.
    let config = dir.path().join("host.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(r#"ops = ["read"]"#, r#"ops = ["read", "write", "delete"]"#);
    std::fs::write(&config, text).unwrap();
    std::process::Command::new("kill").args(["-HUP", &d.pid().to_string()]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !d.log_text().contains("grants, limits and options applied") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let retried = returner_host_tests::http_unix(&d.socket, "POST", "/v1/spool/etcd/dead-letters/retry", &[], b"");
    assert_eq!(retried.result(), &json!(1));
    d.settle("etcd", Duration::from_secs(60));
    assert!(!etcd_return_keys(&etcd, 1).is_empty(), "delivered after the fix");
    assert!(d.dead_letters("etcd").is_empty());
    assert!(d.is_running());
}

#[test]
fn sigterm_drains_what_it_can_and_the_rest_goes_after_restart() {
    let mut etcd = EtcdServer::start();
    let dir = temp_dir();
    let config = etcd_config(&etcd);
    let mut d = config_daemon(dir.path(), "spool = { drain_timeout_ms = 1000 }", &config);
    etcd.stop();
    for n in 1..=20 {
        d.call("etcd", "returner", &ret(n)).result();
    }
    let started = Instant::now();
    d.terminate(Duration::from_secs(20));
    assert!(started.elapsed() >= Duration::from_millis(900), "it delivered for the drain timeout: {:?}", started.elapsed());
    assert!(d.log_text().contains("not delivered before the drain timeout"), "{}", d.log_text());
    drop(d);
    etcd.restart();
    let d = config_daemon(dir.path(), "spool = { drain_timeout_ms = 1000 }", &config);
    d.settle("etcd", Duration::from_secs(60));
    for n in 1..=20 {
        assert!(!etcd_return_keys(&etcd, n).is_empty(), "return {n}");
    }
    // With the backend up, SIGTERM delivers everything before exiting.
    let mut d = d;
    for n in 21..=60 {
        d.call("etcd", "returner", &ret(n)).result();
    }
    d.terminate(Duration::from_secs(20));
    for n in 21..=60 {
        assert!(!etcd_return_keys(&etcd, n).is_empty(), "return {n} delivered during the drain");
    }
}

#[test]
fn a_damaged_spool_file_does_not_stop_the_host() {
    let dir = temp_dir();
    let d = default_daemon(dir.path());
    d.write("local_cache", "returner", &ret(1)).result();
    drop(d);
    let file = dir.path().join("var/spool/spool.redb");
    // Garbage over the whole file: nothing of it can be read.
    let len = std::fs::metadata(&file).unwrap().len() as usize;
    std::fs::write(&file, vec![0x5a; len]).unwrap();
    let d = default_daemon(dir.path());
    let log = d.log_text();
    assert!(log.contains("the spool cannot be opened; it is moved aside"), "{log}");
    let aside: Vec<_> = std::fs::read_dir(dir.path().join("var/spool"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("spool.redb.unreadable-"))
        .collect();
    assert_eq!(aside.len(), 1, "kept for inspection");
    d.write("local_cache", "returner", &ret(2)).result();
    assert_eq!(d.call("local_cache", "get_jid", &json!({ "jid": ret(2)["ret"]["jid"] })).result()["m2"]["return"], json!(2));
    // What was delivered before stays delivered.
    assert_eq!(d.call("local_cache", "get_jid", &json!({ "jid": ret(1)["ret"]["jid"] })).result()["m1"]["return"], json!(1));
}

#[test]
fn fan_out_puts_each_write_in_every_returner_and_a_dead_backend_holds_only_its_own() {
    let mut etcd = EtcdServer::start();
    let dir = temp_dir();
    let jobs = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    let config = format!(
        "{}\n[returners.local_cache]\nmodule = \"builtin:local-cache\"\ngrants.fs = {{ dir = {}, mode = \"rw\" }}\n\n\
         [returners.everything]\nfan_out = [\"local_cache\", \"etcd\"]\n",
        etcd_config(&etcd),
        returner_host_tests::toml_path(&jobs)
    );
    let d = config_daemon(dir.path(), "", &config);
    etcd.stop();
    for n in 1..=5 {
        d.call("everything", "returner", &ret(n)).result();
    }
    // local_cache delivers; etcd's queue holds its copies until etcd is back.
    d.settle("local_cache", Duration::from_secs(30));
    let error = d.delivery_error("etcd", Duration::from_secs(30));
    assert!(error.contains(&etcd.endpoint()), "{error}");
    assert_eq!(d.queue("etcd")["items"], 5);
    // Reads go to the first returner of the fan-out.
    let got = d.call("everything", "get_jid", &json!({ "jid": ret(3)["ret"]["jid"] }));
    assert_eq!(got.result()["m3"]["return"], json!(3));
    // A write only some of them implement goes to those: local-cache has no event_return.
    d.call("everything", "event_return", &json!({ "events": [{ "tag": "salt/test", "data": { "a": 1 } }] })).result();
    assert_eq!(d.queue("etcd")["items"], 6);
    assert_eq!(d.queue("local_cache")["items"], 0);

    etcd.restart();
    d.settle("etcd", Duration::from_secs(60));
    for n in 1..=5 {
        assert!(!etcd_return_keys(&etcd, n).is_empty(), "return {n} reached etcd after it came back");
    }
    assert!(!etcd.dump("/salt/return/events/").is_empty(), "the event reached etcd");
    assert!(d.dead_letters("etcd").is_empty() && d.dead_letters("local_cache").is_empty());
    // A name that fans out to returners none of which implement the write refuses it, Salt's way.
    let only_cache = "[returners.cache_only]\nfan_out = [\"local_cache\"]\n";
    drop(d);
    let d = config_daemon(dir.path(), "", &format!("{config}{only_cache}"));
    let r = d.call("cache_only", "event_return", &json!({ "events": [] }));
    assert_eq!((r.status, r.error().0), (501, "unsupported"), "{:?}", r.json);
    assert!(r.error().1.contains("'local_cache.event_return' is not available."), "{:?}", r.json);
}
