//! Salt's own tests of the returners we ship (local_cache, etcd_return,
//! mysql) and of the jobs runner that reads them, ported: every assertion
//! about what a returner stores and answers, made through the daemon's API
//! against the real backends (the job cache's files, keys in etcd, rows in
//! MariaDB). Each test is named after the Salt test it follows and says
//! which file, function and Salt version that is; where ours differs from
//! Salt on purpose (the returners' READMEs), the test asserts ours and says
//! so. Salt's assertions left out, and why, are listed in
//! docs/design-notes.md ("Salt's own tests, ported").

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use returner_host_tests::etcd::EtcdServer;
use returner_host_tests::mariadb::TestDb;
use returner_host_tests::salt::{salt_returner_calls, shim_dir, venv};
use returner_host_tests::{Daemon, temp_dir};
use serde_json::{Value, json};

use super::etcd::{etcd_profile_toml, etcd_returner_toml};
use super::local_cache_api::jid_dir;
use super::mysql::database;
use super::salt::start_host;
use super::{config_daemon, toml_path};

/// A daemon serving the embedded local-cache returner as `local_cache`
/// with `options` (a TOML inline table's body); its job cache directory.
fn local_cache(dir: &Path, options: &str) -> (Daemon, PathBuf) {
    let jobs = dir.join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    let config = format!(
        "[returners.local_cache]\nmodule = \"builtin:local-cache\"\noptions = {{ {options} }}\n\
         [returners.local_cache.grants.fs]\ndir = {}\nmode = \"rw\"\n",
        toml_path(&jobs)
    );
    (config_daemon(dir, "", &config), jobs)
}

/// Set the modification time of `path` (a file or a directory) to `secs`
/// seconds ago, as time passing would.
fn age(path: &Path, secs: u64) {
    let when = SystemTime::now() - Duration::from_secs(secs);
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    file.set_modified(when).unwrap_or_else(|e| panic!("setting the mtime of {}: {e}", path.display()));
}

/// The JSON in a file of the job cache.
fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON ({e}): {text}", path.display()))
}

/// What Salt's `salt.utils.job.store_job` does with a return on a master
/// whose `master_job_cache` is `returner`: a `req` return gets a new jid
/// and its own load (targeting the minion); a return of a known jid has
/// its jid stored; the load is saved unless the job has one; then the
/// return. The return's jid.
fn store_job(d: &Daemon, returner: &str, load: &Value) -> String {
    let mut load = load.clone();
    if load["jid"] == "req" {
        let args = load.get("arg").or(load.get("fun_args")).cloned().unwrap_or(json!([]));
        load["arg"] = args;
        load["tgt_type"] = json!("glob");
        load["tgt"] = load["id"].clone();
        let nocache = load.get("nocache").cloned().unwrap_or(json!(false));
        let jid = d.call(returner, "prep_jid", &json!({ "nocache": nocache })).result().clone();
        load["jid"] = jid.clone();
        d.write(returner, "save_load", &json!({ "jid": jid, "load": load })).result();
    } else {
        let jid = &load["jid"];
        assert_eq!(d.call(returner, "prep_jid", &json!({ "nocache": false, "passed_jid": jid })).result(), jid);
    }
    if load.get("fun").is_none() {
        for key in ["fun", "user"] {
            if let Some(v) = load["return"].get(key) {
                load[key] = v.clone();
            }
        }
    }
    let jid = load["jid"].as_str().unwrap().to_owned();
    let saved = d.call(returner, "get_load", &json!({ "jid": jid }));
    if saved.result().as_object().is_none_or(|o| o.is_empty()) {
        d.write(returner, "save_load", &json!({ "jid": jid, "load": load })).result();
    }
    assert_eq!(d.write(returner, "returner", &json!({ "ret": load })).result(), &Value::Null);
    jid
}

// ---------------------------------------------------------------------------
// local_cache: tests/pytests/unit/returners/local_cache/test_local_cache.py
// ---------------------------------------------------------------------------

/// The fixture job of Salt's `add_job`: a `test.ping` return of `minion`
/// stored by `store_job`; the job's `jid` file and `minion/return.p`,
/// which must be there.
fn add_job(d: &Daemon, jobs: &Path) -> [PathBuf; 2] {
    let load = json!({ "fun_args": [], "jid": "20160603132323715452", "return": true, "retcode": 0,
                       "success": true, "cmd": "_return", "fun": "test.ping", "id": "minion" });
    let jid = store_job(d, "local_cache", &load);
    d.call("local_cache", "get_jid", &json!({ "jid": jid })).result();
    let dir = jid_dir(jobs, &jid);
    let files = [dir.join("jid"), dir.join("minion/return.p")];
    for f in &files {
        assert!(f.is_file(), "Dir/file does not exist: {}", f.display());
    }
    files
}

/// `clean_old_jobs`, which answers `None`; then each of `files` is gone
/// (`removed`) or still there.
fn clean_old_jobs(d: &Daemon, files: &[PathBuf], removed: bool) {
    assert_eq!(d.call("local_cache", "clean_old_jobs", &json!({})).result(), &Value::Null);
    for f in files {
        assert_eq!(!f.exists(), removed, "job cache was {}removed: {}", if removed { "not " } else { "" }, f.display());
    }
}

/// Salt 3008.3 and 3007.8, `test_local_cache.py::test_clean_old_jobs`:
/// a job older than `keep_jobs_seconds` is removed by `clean_old_jobs`,
/// which answers `None`. Salt sets `keep_jobs_seconds` to 1e-9; ours takes
/// whole seconds, so the job is aged two days past the default instead.
#[test]
fn salt_local_cache_test_clean_old_jobs() {
    let dir = temp_dir();
    let (d, jobs) = local_cache(dir.path(), "");
    let files = add_job(&d, &jobs);
    age(&files[0], 2 * 86400);
    clean_old_jobs(&d, &files, true);
}

/// Salt 3008.3 and 3007.8, `test_local_cache.py::test_not_clean_new_jobs`:
/// with `keep_jobs_seconds = 86400`, a new job stays.
#[test]
fn salt_local_cache_test_not_clean_new_jobs() {
    let dir = temp_dir();
    let (d, jobs) = local_cache(dir.path(), "keep_jobs_seconds = 86400");
    let files = add_job(&d, &jobs);
    clean_old_jobs(&d, &files, false);
}

/// Salt 3008.3 and 3007.8, `test_local_cache.py::test_override_clean_jobs`:
/// `keep_jobs_seconds = 1` wins over `keep_jobs = 4` (hours): a job 2 s old
/// is removed. (Salt sleeps 1.5 s; the job is aged instead.)
#[test]
fn salt_local_cache_test_override_clean_jobs() {
    let dir = temp_dir();
    let (d, jobs) = local_cache(dir.path(), "keep_jobs_seconds = 1, keep_jobs = 4");
    let files = add_job(&d, &jobs);
    age(&files[0], 2);
    clean_old_jobs(&d, &files, true);
}

/// Salt 3007.8, `test_local_cache.py::test_override_clean_jobs_seconds`:
/// `keep_jobs = 1` (hour) with `keep_jobs_seconds` at its default keeps a
/// new job. And, what makes `keep_jobs` still count there, a job two hours
/// old is removed.
#[test]
fn salt_local_cache_test_override_clean_jobs_seconds() {
    let dir = temp_dir();
    let (d, jobs) = local_cache(dir.path(), "keep_jobs_seconds = 86400, keep_jobs = 1");
    let files = add_job(&d, &jobs);
    clean_old_jobs(&d, &files, false);
    age(&files[0], 2 * 3600);
    clean_old_jobs(&d, &files, true);
}

/// Salt 3008.3, `tests/pytests/unit/returners/test_returners_init.py::test_options_browser_yields_falsy_configured_value`
/// (salt#63980): an option set to a falsy value is that value, not the
/// default: `keep_jobs_seconds = 0` keeps a job two days old (the default,
/// 86400, would remove it), as Salt's `local_cache` reads 0.
#[test]
fn salt_returners_init_test_options_browser_yields_falsy_configured_value() {
    let dir = temp_dir();
    let (d, jobs) = local_cache(dir.path(), "keep_jobs_seconds = 0");
    let files = add_job(&d, &jobs);
    age(&files[0], 2 * 86400);
    clean_old_jobs(&d, &files, false);
}

/// Salt 3008.3 and 3007.8, `test_local_cache.py::test_empty_jid_dir`: an
/// empty directory `jobs/z0` older than `keep_jobs_seconds` is removed.
#[test]
fn salt_local_cache_test_empty_jid_dir() {
    let dir = temp_dir();
    let (d, jobs) = local_cache(dir.path(), "");
    let empty = jobs.join("z0");
    std::fs::create_dir(&empty).unwrap();
    age(&empty, 2 * 86400);
    assert_eq!(d.call("local_cache", "clean_old_jobs", &json!({})).result(), &Value::Null);
    assert!(!empty.exists(), "new_jid_dir was not removed");
}

/// Salt 3008.3, `test_local_cache.py::test_save_load_concurrent_writes`:
/// 15 writers `save_load` the same job at once, each reading it back with
/// `get_load`; every read has the load's `jid`.
#[test]
fn salt_local_cache_test_save_load_concurrent_writes() {
    let dir = temp_dir();
    let (d, _) = local_cache(dir.path(), "");
    let jid = "20160603132323715452";
    let load = json!({ "fun": "test.ping", "jid": jid, "tgt": "*", "tgt_type": "glob", "user": "root" });
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..15)
            .map(|_| {
                s.spawn(|| {
                    d.write("local_cache", "save_load", &json!({ "jid": jid, "load": load })).result();
                    d.call("local_cache", "get_load", &json!({ "jid": jid })).result().clone()
                })
            })
            .collect();
        for h in handles {
            let got = h.join().unwrap();
            assert_eq!(got["jid"], jid, "get_load failed: {got}");
        }
    });
}

/// Salt 3008.3, `test_local_cache.py::test_get_load_minions_data_invalid_no_exception`:
/// a `.minions.p` that holds no list (`1234`) does not fail `get_load`: the
/// load comes back without `Minions`, and a warning says the file
/// "contains invalid minion data". (Our files are JSON, not msgpack.)
#[test]
fn salt_local_cache_test_get_load_minions_data_invalid_no_exception() {
    let dir = temp_dir();
    let (d, jobs) = local_cache(dir.path(), "");
    let jid = "20160603132323715452";
    let job = jid_dir(&jobs, jid);
    std::fs::create_dir_all(&job).unwrap();
    std::fs::write(job.join("jid"), jid).unwrap();
    std::fs::write(job.join(".load.p"), json!({ "jid": jid, "fun": "test.ping" }).to_string()).unwrap();
    std::fs::write(job.join(".minions.p"), "1234").unwrap();
    let load = d.call("local_cache", "get_load", &json!({ "jid": jid }));
    assert_eq!(load.result(), &json!({ "jid": jid, "fun": "test.ping" }), "no Minions");
    let log = d.log_text();
    assert!(
        log.lines().any(|l| l.contains("WARN") && l.contains("contains invalid minion data")),
        "a warning about the minions file: {log}"
    );
}

/// `.minions.p` of job `jid` in `jobs`, as stored.
fn minions_file(jobs: &Path, jid: &str) -> Value {
    read_json(&jid_dir(jobs, jid).join(".minions.p"))
}

/// Salt 3008.3, `test_local_cache.py::test_save_minions_merges_on_same_jid`:
/// two `save_minions` of disjoint lists leave their union in `.minions.p`.
#[test]
fn salt_local_cache_test_save_minions_merges_on_same_jid() {
    let dir = temp_dir();
    let (d, jobs) = local_cache(dir.path(), "");
    let jid = "20240101120000000000";
    d.write("local_cache", "save_minions", &json!({ "jid": jid, "minions": ["minion1", "minion2"] })).result();
    d.write("local_cache", "save_minions", &json!({ "jid": jid, "minions": ["minion3", "minion4"] })).result();
    d.call("local_cache", "get_load", &json!({ "jid": jid })).result();
    let mut got: Vec<String> = serde_json::from_value(minions_file(&jobs, jid)).unwrap();
    got.sort();
    assert_eq!(got, ["minion1", "minion2", "minion3", "minion4"]);
}

/// Salt 3008.3, `test_local_cache.py::test_save_minions_no_duplicates_on_overlap`:
/// overlapping lists are merged without duplicates, sorted.
#[test]
fn salt_local_cache_test_save_minions_no_duplicates_on_overlap() {
    let dir = temp_dir();
    let (d, jobs) = local_cache(dir.path(), "");
    let jid = "20240101120000000000";
    d.write("local_cache", "save_minions", &json!({ "jid": jid, "minions": ["minion1", "minion2", "minion3"] })).result();
    d.write("local_cache", "save_minions", &json!({ "jid": jid, "minions": ["minion2", "minion3", "minion4"] })).result();
    d.call("local_cache", "get_load", &json!({ "jid": jid })).result();
    assert_eq!(minions_file(&jobs, jid), json!(["minion1", "minion2", "minion3", "minion4"]));
}

/// Salt 3008.3, `test_local_cache.py::test_save_minions_first_call_creates_file`:
/// the first `save_minions` of a job creates `.minions.p` with its list.
#[test]
fn salt_local_cache_test_save_minions_first_call_creates_file() {
    let dir = temp_dir();
    let (d, jobs) = local_cache(dir.path(), "");
    let jid = "20240101120000000000";
    d.write("local_cache", "save_minions", &json!({ "jid": jid, "minions": ["minion1", "minion2"] })).result();
    d.call("local_cache", "get_load", &json!({ "jid": jid })).result();
    assert!(jid_dir(&jobs, jid).join(".minions.p").is_file());
    assert_eq!(minions_file(&jobs, jid), json!(["minion1", "minion2"]));
}

/// Salt 3008.3, `test_local_cache.py::test_save_minions_handles_corrupt_existing_file`:
/// a `.minions.p` that cannot be read is replaced by the saved list.
#[test]
fn salt_local_cache_test_save_minions_handles_corrupt_existing_file() {
    let dir = temp_dir();
    let (d, jobs) = local_cache(dir.path(), "");
    let jid = "20240101120000000000";
    let job = jid_dir(&jobs, jid);
    std::fs::create_dir_all(&job).unwrap();
    std::fs::write(job.join("jid"), jid).unwrap();
    std::fs::write(job.join(".minions.p"), b"corrupt data that is not valid msgpack").unwrap();
    d.write("local_cache", "save_minions", &json!({ "jid": jid, "minions": ["minion1", "minion2"] })).result();
    d.call("local_cache", "get_load", &json!({ "jid": jid })).result();
    assert_eq!(minions_file(&jobs, jid), json!(["minion1", "minion2"]));
}

/// Salt 3008.3, `test_local_cache.py::test_get_load_returns_merged_minions`:
/// `save_load`, then two `save_minions` of different lists: `get_load`'s
/// `Minions` is their union, sorted.
#[test]
fn salt_local_cache_test_get_load_returns_merged_minions() {
    let dir = temp_dir();
    let (d, _) = local_cache(dir.path(), "");
    let jid = "20240101120000000000";
    let load = json!({ "fun": "test.ping", "jid": jid, "tgt": "", "tgt_type": "list", "user": "root" });
    d.write("local_cache", "save_load", &json!({ "jid": jid, "load": load })).result();
    d.write("local_cache", "save_minions", &json!({ "jid": jid, "minions": ["minion1", "minion2"] })).result();
    d.write("local_cache", "save_minions", &json!({ "jid": jid, "minions": ["minion3", "minion4"] })).result();
    let got = d.call("local_cache", "get_load", &json!({ "jid": jid }));
    assert_eq!(got.result()["Minions"], json!(["minion1", "minion2", "minion3", "minion4"]));
}

/// Lines the guests logged at `level` (`WARN`, `ERROR`) in `d`'s log.
fn guest_log_lines(d: &Daemon, level: &str) -> Vec<String> {
    d.log_text().lines().filter(|l| l.contains("returner_host::guest") && l.contains(level)).map(str::to_owned).collect()
}

/// Salt 3008.3, `test_local_cache.py::test_returner_duplicate_identical_does_not_log_replay_attack`
/// (salt#65301): the same return twice keeps the one stored and logs no
/// error and no "replay attack". Salt's second `returner` answers `False`;
/// ours is accepted by the spool and answers `null` (the contract's
/// `returner` has no result, see returners/local-cache/README.md), and its
/// debug line is below the daemon's log level here.
#[test]
fn salt_local_cache_test_returner_duplicate_identical_does_not_log_replay_attack() {
    let dir = temp_dir();
    let (d, jobs) = local_cache(dir.path(), "");
    let jid = "20160603132323715301";
    let load = json!({ "fun_args": [], "jid": jid, "return": true, "retcode": 0, "success": true,
                       "cmd": "_return", "fun": "test.ping", "id": "minion-1" });
    assert_eq!(d.call("local_cache", "prep_jid", &json!({ "passed_jid": jid })).result(), jid);
    assert_eq!(d.write("local_cache", "returner", &json!({ "ret": load })).result(), &Value::Null);
    let first = d.call("local_cache", "get_jid", &json!({ "jid": jid })).result().clone();
    let file = jid_dir(&jobs, jid).join("minion-1/return.p");
    let stored = std::fs::read(&file).unwrap();
    assert_eq!(d.write("local_cache", "returner", &json!({ "ret": load })).result(), &Value::Null);
    assert_eq!(d.call("local_cache", "get_jid", &json!({ "jid": jid })).result(), &first);
    assert_eq!(std::fs::read(&file).unwrap(), stored, "one cached return per minion");
    assert!(!d.log_text().contains("replay attack"), "{}", d.log_text());
    assert_eq!(guest_log_lines(&d, "ERROR"), Vec::<String>::new());
    assert_eq!(guest_log_lines(&d, "WARN"), Vec::<String>::new());
}

/// Salt 3008.3, `test_local_cache.py::test_returner_duplicate_differing_payload_logs_warning`
/// (salt#65301): a second, different return of the same minion and job is
/// not stored, and a warning names the minion, without "replay attack".
/// (Salt's `returner` answers `False`; ours `null`, as above.)
#[test]
fn salt_local_cache_test_returner_duplicate_differing_payload_logs_warning() {
    let dir = temp_dir();
    let (d, _) = local_cache(dir.path(), "");
    let jid = "20160603132323715302";
    let first = json!({ "fun_args": [], "jid": jid, "return": { "value": "first" }, "retcode": 0, "success": true,
                        "cmd": "_return", "fun": "test.ping", "id": "minion-2" });
    let mut second = first.clone();
    second["return"] = json!({ "value": "second" });
    second["retcode"] = json!(1);
    second["success"] = json!(false);
    assert_eq!(d.call("local_cache", "prep_jid", &json!({ "passed_jid": jid })).result(), jid);
    assert_eq!(d.write("local_cache", "returner", &json!({ "ret": first })).result(), &Value::Null);
    assert_eq!(d.write("local_cache", "returner", &json!({ "ret": second })).result(), &Value::Null);
    let got = d.call("local_cache", "get_jid", &json!({ "jid": jid }));
    assert_eq!(got.result(), &json!({ "minion-2": { "return": { "value": "first" }, "retcode": 0, "success": true } }));
    assert!(!d.log_text().contains("replay attack"), "{}", d.log_text());
    let warnings = guest_log_lines(&d, "WARN");
    assert!(warnings.iter().any(|l| l.contains("minion-2")), "a warning naming the minion: {warnings:?}");
}

// ---------------------------------------------------------------------------
// local_cache: tests/pytests/unit/returners/local_cache/test_local_cache_clean_old_jobs.py
// ---------------------------------------------------------------------------

/// Salt's `make_tmp_jid_dirs`: `jobs/tmp_dir/`, and in it, with
/// `create_files`, a job directory `jid/` holding a `jid` file. The two
/// directories.
fn make_tmp_jid_dirs(jobs: &Path, create_files: bool) -> (PathBuf, PathBuf) {
    let top = jobs.join("tmp_dir");
    std::fs::create_dir_all(&top).unwrap();
    let job = top.join("jid");
    if create_files {
        std::fs::create_dir(&job).unwrap();
        std::fs::write(job.join("jid"), "this is a jid file").unwrap();
    }
    (top, job)
}

/// The names in `dir`.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// Salt 3008.3 and 3007.8, `test_local_cache_clean_old_jobs.py::test_clean_old_jobs_no_jid_root`:
/// `clean_old_jobs` with no jobs answers `None`. (Our granted directory
/// always exists; it is empty here.)
#[test]
fn salt_local_cache_test_clean_old_jobs_no_jid_root() {
    let dir = temp_dir();
    let (d, jobs) = local_cache(dir.path(), "keep_jobs_seconds = 3600");
    assert_eq!(d.call("local_cache", "clean_old_jobs", &json!({})).result(), &Value::Null);
    assert_eq!(names(&jobs), Vec::<String>::new());
}

/// Salt 3008.3 and 3007.8, `test_local_cache_clean_old_jobs.py::test_clean_old_jobs_empty_jid_dir_removed`:
/// an empty directory under `jobs` older than `keep_jobs_seconds` is
/// removed. (Salt's 1e-8 s becomes 1 s and a directory 2 s old.)
#[test]
fn salt_local_cache_test_clean_old_jobs_empty_jid_dir_removed() {
    let dir = temp_dir();
    let (d, jobs) = local_cache(dir.path(), "keep_jobs_seconds = 1");
    let (top, _) = make_tmp_jid_dirs(&jobs, false);
    age(&top, 2);
    d.call("local_cache", "clean_old_jobs", &json!({})).result();
    assert_eq!(names(&jobs), Vec::<String>::new());
}

/// Salt 3008.3 and 3007.8, `test_local_cache_clean_old_jobs.py::test_clean_old_jobs_empty_jid_dir_remains`:
/// an empty directory newer than `keep_jobs_seconds` (3600) stays.
#[test]
fn salt_local_cache_test_clean_old_jobs_empty_jid_dir_remains() {
    let dir = temp_dir();
    let (d, jobs) = local_cache(dir.path(), "keep_jobs_seconds = 3600");
    make_tmp_jid_dirs(&jobs, false);
    d.call("local_cache", "clean_old_jobs", &json!({})).result();
    assert_eq!(names(&jobs), ["tmp_dir"]);
}

/// `clean_old_jobs` removes `job` (under `jobs/tmp_dir`) and nothing else:
/// `tmp_dir` stays, as in Salt, for a later sweep.
fn clean_removes_only_the_job(d: &Daemon, jobs: &Path, job: &Path) {
    assert_eq!(d.call("local_cache", "clean_old_jobs", &json!({})).result(), &Value::Null);
    assert_eq!(names(jobs), ["tmp_dir"]);
    assert!(jobs.join("tmp_dir").is_dir());
    assert!(!job.exists(), "the job {} is removed", job.display());
}

/// Salt 3008.3 and 3007.8, `test_local_cache_clean_old_jobs.py::test_clean_old_jobs_jid_file_corrupted`:
/// a job directory whose `jid` is not a file is corrupt and removed whole,
/// while the directory above it stays. Salt mocks `os.path.isfile`; here
/// `jid` is a directory. Ours removes a corrupt job once it is a minute
/// old (returners/local-cache/README.md), so it is aged two minutes.
#[test]
fn salt_local_cache_test_clean_old_jobs_jid_file_corrupted() {
    let dir = temp_dir();
    let (d, jobs) = local_cache(dir.path(), "keep_jobs_seconds = 3600");
    let (_, job) = make_tmp_jid_dirs(&jobs, false);
    std::fs::create_dir_all(job.join("jid")).unwrap();
    age(&job, 120);
    clean_removes_only_the_job(&d, &jobs, &job);
}

/// Salt 3008.3 and 3007.8, `test_local_cache_clean_old_jobs.py::test_clean_old_jobs_jid_file_is_cleaned`:
/// a job older than `keep_jobs_seconds` is removed whole; the directory
/// above it stays until a later sweep. (Salt's 1e-8 s becomes 1 s and a
/// `jid` file 2 s old.)
#[test]
fn salt_local_cache_test_clean_old_jobs_jid_file_is_cleaned() {
    let dir = temp_dir();
    let (d, jobs) = local_cache(dir.path(), "keep_jobs_seconds = 1");
    let (_, job) = make_tmp_jid_dirs(&jobs, true);
    age(&job.join("jid"), 2);
    clean_removes_only_the_job(&d, &jobs, &job);
}

/// Salt 3008.3, `test_local_cache_clean_old_jobs.py::test_clean_old_jobs_uses_mtime_not_ctime_68351`
/// (salt#68351): a job whose `jid` file was modified two days ago but whose
/// inode changed just now (a `chmod`, as `chown -R` on upgrade) is old:
/// `clean_old_jobs` with `keep_jobs_seconds = 86400` removes it.
#[test]
fn salt_local_cache_test_clean_old_jobs_uses_mtime_not_ctime_68351() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = temp_dir();
    let (d, jobs) = local_cache(dir.path(), "keep_jobs_seconds = 86400");
    let (_, job) = make_tmp_jid_dirs(&jobs, true);
    let jid_file = job.join("jid");
    age(&jid_file, 2 * 86400);
    let mode = std::fs::metadata(&jid_file).unwrap().permissions();
    std::fs::set_permissions(&jid_file, std::fs::Permissions::from_mode(mode.mode())).unwrap();
    let meta = std::fs::metadata(&jid_file).unwrap();
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!(now - meta.mtime() > 86400, "mtime-old");
    assert!(now - meta.ctime() < 60, "ctime-fresh");
    clean_removes_only_the_job(&d, &jobs, &job);
}

// ---------------------------------------------------------------------------
// local_cache through the master: tests/pytests/functional/utils/test_job.py
// and tests/pytests/functional/master/test_async_handlers.py
// ---------------------------------------------------------------------------

/// Salt 3008.3, `tests/pytests/functional/utils/test_job.py::test_store_job_save_load`:
/// `store_job` of a runner's return (the master's own id, the function in
/// the return) leaves the job's `jid`, `.load.p` and `<id>/return.p`.
#[test]
fn salt_utils_job_test_store_job_save_load() {
    let dir = temp_dir();
    let (d, jobs) = local_cache(dir.path(), "");
    let jid = "20230822145508520090";
    let load = json!({
        "id": "test_master", "tgt": "test_master", "jid": jid,
        "return": { "fun": "runner.test.arg", "jid": jid, "user": "sudo_ch3ll", "fun_args": ["go", "home"],
                    "_stamp": "2023-08-22T14:55:08.796680", "return": { "args": ["go", "home"], "kwargs": {} },
                    "success": true },
    });
    store_job(&d, "local_cache", &load);
    d.call("local_cache", "get_jid", &json!({ "jid": jid })).result();
    let job = jid_dir(&jobs, jid);
    for f in ["test_master/return.p", ".load.p", "jid"] {
        assert!(job.join(f).is_file(), "{f} in {}: {:?}", job.display(), names(&job));
    }
}

/// Salt 3008.3, `tests/pytests/functional/master/test_async_handlers.py::test_concurrent_return_writes_all_jobs_to_local_cache`:
/// 20 returns of distinct jobs and minions written at once are all stored:
/// `get_jid` of each has its minion, `return` and `success` true.
#[test]
fn salt_async_handlers_test_concurrent_return_writes_all_jobs_to_local_cache() {
    let dir = temp_dir();
    let (d, _) = local_cache(dir.path(), "keep_jobs_seconds = 3600");
    let jids: Vec<String> = (0..20).map(|i| format!("2026113010000000{i:04}")).collect();
    std::thread::scope(|s| {
        for (i, jid) in jids.iter().enumerate() {
            let d = &d;
            s.spawn(move || {
                let ret = json!({ "cmd": "_return", "id": format!("minion-{i:02}"), "jid": jid, "fun": "test.ping",
                                  "fun_args": [], "return": true, "retcode": 0, "success": true, "out": "nested" });
                d.write("local_cache", "returner", &json!({ "ret": ret })).result();
            });
        }
    });
    for (i, jid) in jids.iter().enumerate() {
        let entry = d.call("local_cache", "get_jid", &json!({ "jid": jid })).result().clone();
        let key = format!("minion-{i:02}");
        assert_eq!(entry[&key]["return"], true, "jid {jid}: {entry}");
        assert_eq!(entry[&key]["success"], true, "jid {jid}: {entry}");
    }
}

// ---------------------------------------------------------------------------
// The jobs runner on every shipped returner:
// tests/pytests/unit/runners/test_jobs.py, tests/pytests/integration/runners/test_jobs.py
// ---------------------------------------------------------------------------

/// The three shipped returners behind one daemon, each on its real backend:
/// `local_cache`, `etcd` and `mysql`.
struct Backends {
    daemon: Daemon,
    _etcd: EtcdServer,
    _db: TestDb,
    _dir: tempfile::TempDir,
}

const RETURNERS: [&str; 3] = ["local_cache", "etcd", "mysql"];

fn backends() -> Backends {
    let dir = temp_dir();
    let etcd = EtcdServer::start();
    let db = database();
    let daemon = start_host(dir.path(), Some(&etcd), Some(&db));
    Backends { daemon, _etcd: etcd, _db: db, _dir: dir }
}

/// A master publishing `load` and its minion `id` returning `ret`: the
/// master's `prep_jid` and `save_load`, then `store_job` of the return.
fn publish_and_return(d: &Daemon, returner: &str, load: &Value, ret: &Value) {
    let jid = &load["jid"];
    assert_eq!(d.call(returner, "prep_jid", &json!({ "nocache": false, "passed_jid": jid })).result(), jid);
    d.write(returner, "save_load", &json!({ "jid": jid, "load": load, "minions": [ret["id"]] })).result();
    store_job(d, returner, ret);
}

/// Salt 3008.3 and 3007.8, `tests/pytests/integration/runners/test_jobs.py::test_lookup_jid`:
/// `jobs.lookup_jid` of a jid nobody ran is `{}`: `get_jid` and `get_load`
/// answer `{}`, on every returner.
#[test]
fn salt_jobs_runner_test_lookup_jid() {
    let b = backends();
    for r in RETURNERS {
        for f in ["get_jid", "get_load"] {
            assert_eq!(b.daemon.call(r, f, &json!({ "jid": "23974239742394" })).result(), &json!({}), "{r}.{f}");
        }
    }
}

/// A `test.echo` job of `arg` on minion `minion`, published by glob of its
/// id, through `returner`.
fn echo_job(d: &Daemon, returner: &str, jid: &str, minion: &str, arg: &str) {
    let load = json!({ "fun": "test.echo", "arg": [arg], "tgt": minion, "tgt_type": "glob", "jid": jid, "user": "root", "ret": "" });
    let ret = json!({ "id": minion, "jid": jid, "fun": "test.echo", "fun_args": [arg], "return": arg, "retcode": 0, "success": true });
    publish_and_return(d, returner, &load, &ret);
}

/// Salt 3008.3 and 3007.8, `tests/pytests/integration/runners/test_jobs.py::test_list_jobs`
/// and `::test_target_info`: after `salt MINION test.echo ARG`,
/// `jobs.list_jobs` (`get_jids`) lists the job with `Function` `test.echo`,
/// `Arguments` `[ARG]`, `Target` the minion's id and `Target-type` `glob`,
/// on every returner.
#[test]
fn salt_jobs_runner_test_list_jobs_and_test_target_info() {
    let b = backends();
    for r in RETURNERS {
        let jid = "20261130100000000001";
        echo_job(&b.daemon, r, jid, "minion-1", "test_list_jobs");
        let jobs = b.daemon.call(r, "get_jids", &json!({}));
        let job = &jobs.result()[jid];
        assert_eq!(job["Function"], "test.echo", "{r}: {job}");
        assert_eq!(job["Arguments"], json!(["test_list_jobs"]), "{r}: {job}");
        assert_eq!(job["Target"], "minion-1", "{r}: {job}");
        assert_eq!(job["Target-type"], "glob", "{r}: {job}");
    }
}

/// Salt 3008.3 and 3007.8, `tests/pytests/integration/runners/test_jobs.py::test_target_info_salt_call`:
/// a `salt-call` return reaches the master with jid `req`; `store_job`
/// gets it a jid and a load targeting the minion, so `jobs.list_jobs`
/// shows `Target` the minion's id and `Target-type` `glob`, on every returner.
#[test]
fn salt_jobs_runner_test_target_info_salt_call() {
    let b = backends();
    for r in RETURNERS {
        let ret = json!({ "id": "minion-1", "jid": "req", "fun": "test.echo", "fun_args": ["target_info_test"],
                          "return": "target_info_test", "retcode": 0, "success": true });
        let jid = store_job(&b.daemon, r, &ret);
        assert_ne!(jid, "req");
        let jobs = b.daemon.call(r, "get_jids", &json!({}));
        let job = &jobs.result()[&jid];
        assert_eq!(job["Function"], "test.echo", "{r}: {jobs:?}");
        assert_eq!(job["Arguments"][0], "target_info_test", "{r}: {job}");
        assert_eq!(job["Target"], "minion-1", "{r}: {job}");
        assert_eq!(job["Target-type"], "glob", "{r}: {job}");
        let got = b.daemon.call(r, "get_jid", &json!({ "jid": jid }));
        assert_eq!(got.result()["minion-1"]["return"], "target_info_test", "{r}");
    }
}

/// Salt 3008.3 and 3007.8, `tests/pytests/integration/runners/test_jobs.py::test_jobs_runner`:
/// a runner's job (`salt-run test.arg arg1 kwarg1=kwarg1`) stored by
/// `store_job` is listed with `Function` `runner.test.arg`, and
/// `jobs.list_job JID` finds it: `get_load` has its `jid`, on every returner.
#[test]
fn salt_jobs_runner_test_jobs_runner() {
    let b = backends();
    for r in RETURNERS {
        let jid = "20261130100000000002";
        let load = json!({
            "id": "master_master", "tgt": "master_master", "jid": jid,
            "return": { "fun": "runner.test.arg", "jid": jid, "user": "root", "fun_args": ["arg1", { "kwarg1": "kwarg1" }],
                        "_stamp": "2026-11-30T10:00:00.000002", "return": { "args": ["arg1"], "kwargs": { "kwarg1": "kwarg1" } },
                        "success": true },
        });
        store_job(&b.daemon, r, &load);
        let jobs = b.daemon.call(r, "get_jids", &json!({}));
        let found: Vec<&String> =
            jobs.result().as_object().unwrap().iter().filter(|(_, j)| j["Function"] == "runner.test.arg").map(|(k, _)| k).collect();
        assert_eq!(found, [jid], "{r}: {:?}", jobs.json);
        let job = b.daemon.call(r, "get_load", &json!({ "jid": jid }));
        assert_eq!(job.result()["jid"], jid, "{r}");
        assert!(job.result().get("Error").is_none(), "{r}");
    }
}

/// Salt 3008.3 and 3007.8, `tests/pytests/unit/runners/test_jobs.py::test_list_jobs_with_search_target`:
/// the two jobs Salt's test mocks `local_cache.get_jids` with, saved by
/// their publish loads: `get_jids` answers exactly that mock (the runner's
/// `search_target` then filters on `Target`, a string or a list), on every
/// returner.
#[test]
fn salt_jobs_runner_test_list_jobs_with_search_target() {
    let b = backends();
    let loads = [
        json!({ "jid": "20160524035503086853", "fun": "test.ping", "arg": [], "tgt": "node-1-1.com", "tgt_type": "glob", "user": "root" }),
        json!({ "jid": "20160524035524895387", "fun": "test.ping", "arg": [], "tgt": ["node-1-2.com", "node-1-1.com"],
                "tgt_type": "list", "user": "sudo_ubuntu" }),
    ];
    let want = json!({
        "20160524035503086853": { "Arguments": [], "Function": "test.ping", "StartTime": "2016, May 24 03:55:03.086853",
                                  "Target": "node-1-1.com", "Target-type": "glob", "User": "root" },
        "20160524035524895387": { "Arguments": [], "Function": "test.ping", "StartTime": "2016, May 24 03:55:24.895387",
                                  "Target": ["node-1-2.com", "node-1-1.com"], "Target-type": "list", "User": "sudo_ubuntu" },
    });
    for r in RETURNERS {
        for load in &loads {
            b.daemon.write(r, "save_load", &json!({ "jid": load["jid"], "load": load })).result();
        }
        assert_eq!(b.daemon.call(r, "get_jids", &json!({})).result(), &want, "{r}");
    }
}

/// Salt 3008.3, `tests/pytests/unit/runners/test_jobs.py::test_list_jobs_search_metadata_state_apply`
/// (salt#68481): `get_jids` shows `Metadata` both when the load has it at
/// the top (`cmd.run ... metadata=`) and when it rides in `arg` as a
/// `__kwarg__` dict (`state.apply ... metadata=`), each job its own, so
/// `jobs.list_jobs search_metadata=` tells them apart; on every returner.
#[test]
fn salt_jobs_runner_test_list_jobs_search_metadata_state_apply() {
    let b = backends();
    let state_apply = |jid: &str, metadata: Value| {
        json!({ "jid": jid, "fun": "state.apply", "arg": ["Sandbox.create_test_file", { "__kwarg__": true, "metadata": metadata }],
                "tgt": ["salt-minion"], "tgt_type": "list", "user": "root" })
    };
    let loads = [
        state_apply("20251121134552341171", json!({ "task_id": "bb52013a", "source": "flask" })),
        json!({ "jid": "20251121100403664430", "fun": "cmd.run", "arg": ["echo 'test'"],
                "metadata": { "task_id": "0c47889f", "source": "Flask" }, "tgt": "salt-minion", "tgt_type": "glob", "user": "root" }),
        state_apply("20251121134652341171", json!({ "task_id": "different" })),
    ];
    for r in RETURNERS {
        for load in &loads {
            b.daemon.write(r, "save_load", &json!({ "jid": load["jid"], "load": load })).result();
        }
        let jobs = b.daemon.call(r, "get_jids", &json!({}));
        let task = |jid: &str| jobs.result()[jid]["Metadata"]["task_id"].clone();
        assert_eq!(task("20251121134552341171"), "bb52013a", "{r}: {:?}", jobs.json);
        assert_eq!(task("20251121100403664430"), "0c47889f", "{r}: {:?}", jobs.json);
        assert_eq!(task("20251121134652341171"), "different", "{r}: {:?}", jobs.json);
        assert_eq!(jobs.result()["20251121134552341171"]["Metadata"], json!({ "task_id": "bb52013a", "source": "flask" }), "{r}");
    }
}

// ---------------------------------------------------------------------------
// etcd_return: tests/pytests/functional/returners/test_etcd_return.py and
// tests/pytests/unit/returners/test_etcd_return.py (Salt 3007.8; Salt 3008
// moved etcd_return out of Salt)
// ---------------------------------------------------------------------------

/// An etcd server and a daemon serving the shipped etcd returner as `etcd`
/// under `/salt/return` with `ttl = 600`.
fn etcd_returner() -> (EtcdServer, Daemon, tempfile::TempDir) {
    let etcd = EtcdServer::start();
    let dir = temp_dir();
    let config = format!("{}{}", etcd_profile_toml("main", &etcd), etcd_returner_toml("main"));
    let d = config_daemon(dir.path(), "", &config);
    (etcd, d, dir)
}

/// Salt 3007.8, `functional/returners/test_etcd_return.py::test_returner` and
/// `unit/returners/test_etcd_return.py::test_returner`: `returner` sets
/// `minions/<id>` to the jid and `jobs/<jid>/<id>/<key>` to the JSON of each
/// key of the return, every key with the configured TTL (ours: one lease
/// of `ttl` seconds for the whole return, see returners/etcd/README.md).
#[test]
fn salt_etcd_return_test_returner() {
    let (etcd, d, _dir) = etcd_returner();
    let ret = json!({ "id": "test-id", "jid": "123456789", "single-key": "single-value",
                      "dict-key": { "dict-subkey-1": "subvalue-1", "dict-subkey-2": "subvalue-2" } });
    assert_eq!(d.write("etcd", "returner", &json!({ "ret": ret })).result(), &Value::Null);
    d.call("etcd", "get_jid", &json!({ "jid": "123456789" })).result();
    assert_eq!(etcd.dump("/salt/return/minions/test-id"), [("/salt/return/minions/test-id".to_owned(), "123456789".to_owned())]);
    let p = "/salt/return/jobs/123456789/test-id";
    let expected: Vec<(String, String)> = [
        ("dict-key", r#"{"dict-subkey-1": "subvalue-1", "dict-subkey-2": "subvalue-2"}"#),
        ("id", r#""test-id""#),
        ("jid", r#""123456789""#),
        ("single-key", r#""single-value""#),
    ]
    .iter()
    .map(|(k, v)| (format!("{p}/{k}"), (*v).to_owned()))
    .collect();
    assert_eq!(etcd.dump(&format!("{p}/")), expected);
    let leases = etcd.leases("/salt/return/");
    assert_eq!(leases.len(), 5);
    assert!(leases.iter().all(|l| *l != 0 && *l == leases[0]), "{leases:?}");
    assert_eq!(etcd.lease_keys(&format!("{:016x}", leases[0])).0, 600, "the configured ttl");
}

/// Salt 3007.8, `functional/returners/test_etcd_return.py::test_save_and_get_load`
/// and `unit/returners/test_etcd_return.py::test_save_load` and
/// `::test_get_load`: `save_load` sets `jobs/<jid>/.load.p` to the load's
/// JSON (with the TTL) and `get_load` gives it back. Salt's unit test also
/// saves again with `minions`, "unused at the moment", and the key is that
/// same load: ours keeps the first load (README: first write wins), so
/// the key is unchanged too.
#[test]
fn salt_etcd_return_test_save_and_get_load() {
    let (etcd, d, _dir) = etcd_returner();
    let jid = "123456789";
    let load = json!({ "single-key": "single-value", "dict-key": { "dict-subkey-1": "subvalue-1", "dict-subkey-2": "subvalue-2" } });
    assert_eq!(d.write("etcd", "save_load", &json!({ "jid": jid, "load": load })).result(), &Value::Null);
    assert_eq!(d.call("etcd", "get_load", &json!({ "jid": jid })).result(), &load);
    let key = "/salt/return/jobs/123456789/.load.p".to_owned();
    let text = r#"{"single-key": "single-value", "dict-key": {"dict-subkey-1": "subvalue-1", "dict-subkey-2": "subvalue-2"}}"#;
    assert_eq!(etcd.dump(&key), [(key.clone(), text.to_owned())]);
    let lease = etcd.leases(&key)[0];
    assert_eq!(etcd.lease_keys(&format!("{lease:016x}")).0, 600, "the configured ttl");
    let again = json!({ "jid": jid, "load": load, "minions": ["minion-1", "minion-2"] });
    assert_eq!(d.write("etcd", "save_load", &again).result(), &Value::Null);
    d.call("etcd", "get_jid", &json!({ "jid": jid })).result();
    assert_eq!(etcd.dump(&key), [(key.clone(), text.to_owned())]);
}

/// Salt 3007.8, `functional/returners/test_etcd_return.py::test_get_jid` and
/// `unit/returners/test_etcd_return.py::test_get_jid`: `get_jid` of an
/// unknown job is `{}`; of a job two minions returned, each minion's
/// `return` only.
#[test]
fn salt_etcd_return_test_get_jid() {
    let (_etcd, d, _dir) = etcd_returner();
    let jid = "123456789";
    assert_eq!(d.call("etcd", "get_jid", &json!({ "jid": jid })).result(), &json!({}));
    let first = json!({ "id": "test-id-1", "jid": jid, "single-key": "single-value",
                        "dict-key": { "dict-subkey-1": "subvalue-1", "dict-subkey-2": "subvalue-2" }, "return": "test-return-1" });
    d.write("etcd", "returner", &json!({ "ret": first })).result();
    d.write("etcd", "returner", &json!({ "ret": { "id": "test-id-2", "jid": jid, "return": "test-return-2" } })).result();
    assert_eq!(
        d.call("etcd", "get_jid", &json!({ "jid": jid })).result(),
        &json!({ "test-id-1": { "return": "test-return-1" }, "test-id-2": { "return": "test-return-2" } })
    );
}

/// Salt 3007.8, `functional/returners/test_etcd_return.py::test_get_fun` and
/// `unit/returners/test_etcd_return.py::test_get_fun`: `get_fun` of a
/// function nobody ran is `{}`; otherwise the minions whose latest job ran
/// it, each with the function's name.
#[test]
fn salt_etcd_return_test_get_fun() {
    let (_etcd, d, _dir) = etcd_returner();
    assert_eq!(d.call("etcd", "get_fun", &json!({ "fun": "test.ping" })).result(), &json!({}));
    let first = json!({ "id": "test-id-1", "jid": "1", "single-key": "single-value",
                        "dict-key": { "dict-subkey-1": "subvalue-1", "dict-subkey-2": "subvalue-2" },
                        "return": "test-return-1", "fun": "test.ping" });
    d.write("etcd", "returner", &json!({ "ret": first })).result();
    let second = json!({ "id": "test-id-2", "jid": "2", "return": "test-return-2", "fun": "test.collatz" });
    d.write("etcd", "returner", &json!({ "ret": second })).result();
    assert_eq!(d.call("etcd", "get_fun", &json!({ "fun": "test.collatz" })).result(), &json!({ "test-id-2": "test.collatz" }));
    assert_eq!(d.call("etcd", "get_fun", &json!({ "fun": "test.ping" })).result(), &json!({ "test-id-1": "test.ping" }));
}

/// Salt 3007.8, `functional/returners/test_etcd_return.py::test_get_jids` and
/// `unit/returners/test_etcd_return.py::test_get_jids`: with no jobs,
/// nothing is listed; with two, both. Ours differs on purpose
/// (returners/etcd/README.md): `get_jids` answers the jobs runner's dict
/// `{jid: summary}` (Salt: a list of jids) and lists jobs that have a load,
/// so the jobs here get their loads as a master saves them.
#[test]
fn salt_etcd_return_test_get_jids() {
    let (etcd, d, _dir) = etcd_returner();
    assert_eq!(d.call("etcd", "get_jids", &json!({})).result(), &json!({}));
    // Salt's unit test: a child of `jobs` that is a value, not a job, is skipped.
    assert!(etcd.ctl(&["put", "/salt/return/jobs/456", "not a dictionary"]).0);
    assert_eq!(d.call("etcd", "get_jids", &json!({})).result(), &json!({}));
    for (id, jid) in [("test-id-1", "1"), ("test-id-2", "2")] {
        d.write("etcd", "returner", &json!({ "ret": { "id": id, "jid": jid } })).result();
    }
    assert_eq!(d.call("etcd", "get_jids", &json!({})).result(), &json!({}), "only jobs with a load are listed");
    for (id, jid) in [("test-id-1", "1"), ("test-id-2", "2")] {
        let load = json!({ "jid": jid, "fun": "test.ping", "tgt": id, "tgt_type": "glob" });
        d.write("etcd", "save_load", &json!({ "jid": jid, "load": load })).result();
    }
    let jids = d.call("etcd", "get_jids", &json!({}));
    let jids: Vec<&String> = jids.result().as_object().unwrap().keys().collect();
    assert_eq!(jids, ["1", "2"]);
}

/// Salt 3007.8, `functional/returners/test_etcd_return.py::test_get_minions`
/// and `unit/returners/test_etcd_return.py::test_get_minions`: no minions
/// is `[]`; after two minions' returns, both ids.
#[test]
fn salt_etcd_return_test_get_minions() {
    let (_etcd, d, _dir) = etcd_returner();
    assert_eq!(d.call("etcd", "get_minions", &json!({})).result(), &json!([]));
    for (id, jid) in [("test-id-1", "1"), ("test-id-2", "2")] {
        d.write("etcd", "returner", &json!({ "ret": { "id": id, "jid": jid } })).result();
    }
    assert_eq!(d.call("etcd", "get_minions", &json!({})).result(), &json!(["test-id-1", "test-id-2"]));
}

/// Salt 3007.8, `unit/returners/test_etcd_return.py::test_prep_jid`:
/// `prep_jid` answers a passed jid, also with `nocache`, and a new jid
/// without one.
#[test]
fn salt_etcd_return_test_prep_jid() {
    let (_etcd, d, _dir) = etcd_returner();
    assert_eq!(d.call("etcd", "prep_jid", &json!({ "passed_jid": "23" })).result(), "23");
    assert_eq!(d.call("etcd", "prep_jid", &json!({ "nocache": true, "passed_jid": "23" })).result(), "23");
    let jid = d.call("etcd", "prep_jid", &json!({})).result().as_str().unwrap().to_owned();
    assert!(jid.len() == 20 && jid.bytes().all(|b| b.is_ascii_digit()), "a new jid: {jid}");
}

// ---------------------------------------------------------------------------
// mysql: saltext-mysql's tests/unit/returners/test_mysql.py (its functional
// and integration returner tests are empty) and Salt 3007.8's
// tests/pytests/unit/returners/test_mysql.py
// ---------------------------------------------------------------------------

/// Salt's options for the shim (`salt/_returners/wasm.py`) sending to the
/// host's returner `returner` on `host`.
fn shim_opts(host: &Daemon, returner: &str) -> Value {
    json!({ "returner_dirs": [shim_dir()], "wasm.url": host.socket, "wasm.returner": returner })
}

/// saltext-mysql (main) and Salt 3007.8, `test_mysql.py::test_returner_with_bytes`:
/// a return holding `bytes` (`file.read` with `binary=True`) is stored, not
/// a `TypeError`. Here Salt's loader calls the shim's `returner` with the
/// bytes, and the row in `salt_returns` and `get_jid` hold them decoded.
#[test]
fn salt_mysql_test_returner_with_bytes() {
    let dir = temp_dir();
    let db = database();
    let host = start_host(dir.path(), None, Some(&db));
    let jid = "20221101172203459989";
    let ret = json!({ "success": true, "return": { "__bytes__": "bytes" }, "retcode": 0, "jid": jid, "fun": "file.read",
                      "fun_args": ["/fake/path", { "binary": true }], "id": "minion-1" });
    let out = salt_returner_calls(&venv(), &shim_opts(&host, "mysql"), &[json!(["wasm.returner", ret])]);
    assert_eq!(out, [Value::Null]);
    let got = host.call("mysql", "get_jid", &json!({ "jid": jid }));
    assert_eq!(got.result()["minion-1"]["return"], "bytes");
    let rows = db.sql(&format!("SELECT `return`, full_ret FROM salt_returns WHERE jid = '{jid}'"));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][0], r#""bytes""#);
    let full: Value = serde_json::from_str(&rows[0][1]).unwrap();
    assert_eq!(full["return"], "bytes");
}

/// saltext-mysql (main) and Salt 3007.8, `test_mysql.py::test_save_load_with_bytes`:
/// a load holding `bytes` is saved, not a `TypeError`; Salt 3007.8's test
/// names the load it means to store, the bytes decoded, and that is what
/// the `jids` row and `get_load` hold.
#[test]
fn salt_mysql_test_save_load_with_bytes() {
    let dir = temp_dir();
    let db = database();
    let host = start_host(dir.path(), None, Some(&db));
    let jid = "20221101172203459989";
    let load = json!({ "return": { "__bytes__": "bytes" }, "jid": jid });
    let out = salt_returner_calls(&venv(), &shim_opts(&host, "mysql"), &[json!(["wasm.save_load", jid, load])]);
    assert_eq!(out, [Value::Null]);
    let decoded = json!({ "return": "bytes", "jid": jid });
    assert_eq!(host.call("mysql", "get_load", &json!({ "jid": jid })).result(), &decoded);
    let rows = db.sql(&format!("SELECT `load` FROM jids WHERE jid = '{jid}'"));
    assert_eq!(serde_json::from_str::<Value>(&rows[0][0]).unwrap(), decoded);
}
