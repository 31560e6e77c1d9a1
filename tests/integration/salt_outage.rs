//! A real Salt master whose job cache and event return go through the host
//! keeps every job and event of a minute-long MariaDB outage; a master on
//! Salt's own mysql returner, through the same outage, loses them.

use std::collections::HashSet;
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use returner_host_tests::Daemon;
use returner_host_tests::mariadb::{MariaDb, TestDb};
use returner_host_tests::salt::{MINION_ID, SaltMaster, shim_dir};
use returner_host_tests::temp_dir;
use serde_json::{Map, Value, json};

use super::mysql::SCHEMA;
use super::salt::{salt_mysql_opts, start_host};

/// Jobs run while MariaDB is up, before it stops.
const BEFORE: Range<usize> = 0..20;
/// Jobs run while it is down.
const DURING: Range<usize> = 20..180;
/// Jobs run once it is back.
const AFTER: Range<usize> = 180..200;
/// How long MariaDB is down, at least: longer if the jobs of `DURING` take
/// longer to run (a busy machine), up to `OUTAGE_MOST`.
const OUTAGE: Duration = Duration::from_secs(60);
const OUTAGE_MOST: Duration = Duration::from_secs(180);
/// Down still after the last job of `DURING` returned, so the writes that
/// follow a return are made before MariaDB is back.
const SETTLE: Duration = Duration::from_secs(3);
/// What the jobs of `DURING` are started over: most of the outage, the rest
/// of it left for their last returns.
const STARTING: Duration = Duration::from_secs(40);
/// Jobs awaiting their return at once, at most.
const IN_FLIGHT: usize = 4;
/// The longest any wait other than the outage may take.
const WAIT: Duration = Duration::from_secs(60);

/// The argument of job `n` (`test.echo`), which its return echoes: each job
/// is told from the others by what it returned.
fn marker(n: usize) -> String {
    format!("outage job {n}")
}

/// A master and its minion, the database its job cache and event return
/// write to, and the jids of the jobs run on it (job `n` at index `n`).
struct Side {
    name: &'static str,
    salt: SaltMaster,
    db: TestDb,
    jids: Vec<String>,
}

/// What a database holds of some jobs.
#[derive(Debug, PartialEq)]
struct Stored {
    /// Jobs with a row in salt_returns.
    returns: usize,
    /// Jobs with their `salt/job/<jid>/ret/<minion>` event in salt_events.
    return_events: usize,
    /// Jobs with their `salt/job/<jid>/new` event in salt_events.
    new_job_events: usize,
}

impl Stored {
    /// All of `jobs`.
    fn all(jobs: &Range<usize>) -> Stored {
        Stored { returns: jobs.len(), return_events: jobs.len(), new_job_events: jobs.len() }
    }
}

/// What a side gives back of the jobs before, during and after the outage.
struct Tally {
    /// Jobs `jobs.lookup_jid` finds with their return.
    found: [usize; 3],
    /// What the database holds of them.
    stored: [Stored; 3],
}

impl Side {
    /// Start a master and its minion in `dir` with `master` in its config.
    fn start(name: &'static str, dir: &Path, master: &str, db: TestDb) -> Side {
        std::fs::create_dir_all(dir).unwrap();
        Side { name, salt: SaltMaster::start(dir, &[&shim_dir()], master, ""), db, jids: Vec::new() }
    }

    /// Run the jobs of `jobs`, started over `over`; panics unless every
    /// one has returned to the master within `within`.
    fn run(&mut self, jobs: Range<usize>, over: Duration, within: Duration) {
        let started = Instant::now();
        let args: Vec<Vec<String>> = jobs.clone().map(|n| vec![marker(n)]).collect();
        let (jids, unreturned) = self.salt.run_jobs("test.echo", &args, IN_FLIGHT, over, within);
        assert!(unreturned.is_empty(), "{}: jobs {jobs:?} not returned within {within:?}: {unreturned:?}", self.name);
        eprintln!("{}: jobs {jobs:?} ran in {:?}", self.name, started.elapsed());
        self.jids.extend(jids);
    }

    /// Of the jobs in `jobs`, what the database holds.
    fn stored(&self, jobs: Range<usize>) -> Stored {
        let column = |sql: &str| -> HashSet<String> { self.db.sql(sql).into_iter().map(|r| r[0].clone()).collect() };
        let returns = column("SELECT DISTINCT jid FROM salt_returns");
        let tags = column("SELECT DISTINCT tag FROM salt_events WHERE tag LIKE 'salt/job/%'");
        let jids = &self.jids[jobs];
        let count = |has: &dyn Fn(&String) -> bool| jids.iter().filter(|j| has(j)).count();
        Stored {
            returns: count(&|j| returns.contains(j)),
            return_events: count(&|j| tags.contains(&format!("salt/job/{j}/ret/{MINION_ID}"))),
            new_job_events: count(&|j| tags.contains(&format!("salt/job/{j}/new"))),
        }
    }

    /// Wait (at most `WAIT`) until the database holds the return and the
    /// events of every job of `jobs`.
    fn wait_until_stored(&self, jobs: Range<usize>) {
        let started = Instant::now();
        loop {
            let stored = self.stored(jobs.clone());
            if stored == Stored::all(&jobs) {
                return;
            }
            assert!(started.elapsed() < WAIT, "{}: jobs {jobs:?} not all stored within {WAIT:?} of MariaDB up: {stored:?}", self.name);
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// What `jobs.lookup_jid` and the database give back of every job.
    fn tally(&self) -> Tally {
        let answers: Map<String, Value> = self.salt.lookup_jids(&self.jids);
        let found = |jobs: Range<usize>| jobs.filter(|&n| answers.get(&self.jids[n]) == Some(&json!({ MINION_ID: marker(n) }))).count();
        Tally { found: [BEFORE, DURING, AFTER].map(found), stored: [BEFORE, DURING, AFTER].map(|jobs| self.stored(jobs)) }
    }

    /// The scenario on this side: the jobs of `BEFORE` stored, MariaDB
    /// killed for `OUTAGE` (or until they have returned, if later) while the
    /// jobs of `DURING` run and return, then started again for the jobs of
    /// `AFTER`. `while_down` runs once the
    /// jobs of the outage have returned, MariaDB still down; `once_back`
    /// once those of `AFTER` have.
    fn through_outage(&mut self, server: &mut MariaDb, while_down: impl FnOnce(&Side), once_back: impl FnOnce(&Side)) {
        self.run(BEFORE, Duration::from_secs(2), WAIT);
        self.wait_until_stored(BEFORE);
        server.stop();
        let down = Instant::now();
        self.run(DURING, STARTING, OUTAGE_MOST);
        while_down(self);
        std::thread::sleep((down + OUTAGE).saturating_duration_since(Instant::now()).max(SETTLE));
        server.run();
        eprintln!("{}: MariaDB back after {:?} down", self.name, down.elapsed());
        self.run(AFTER, Duration::from_secs(2), WAIT);
        once_back(self);
        self.wait_until_stored(AFTER);
    }
}

/// MariaDB is killed for a minute while 160 of 200 `test.echo` jobs run
/// (20 run before, 20 after), under a master with `master_job_cache: wasm`
/// and `event_return: wasm` (the shim, served by the host's mysql returner),
/// then again under a master with Salt's own mysql returner (saltext.mysql)
/// for both, each on its own database of the same server. The two outages
/// come one after the other: both masters at once run the jobs too slowly
/// on a small machine for them all to return within the minute.
///
/// Through the host, every write is accepted into its spool while the
/// database is down and delivered once it is back: `jobs.lookup_jid` finds
/// all 200 jobs with their return, and salt_events holds every job's `new`
/// and `ret` event. Salt's returner gets "connection refused" at each call
/// during the outage; the master logs it and goes on (the jobs still run
/// and return quickly, nothing blocks), and what it was writing is gone:
/// `jobs.lookup_jid` finds none of the jobs run during the outage, and
/// neither their returns nor their events are in the database, while those
/// of the jobs before and after are, which shows its setup works.
#[test]
fn a_minute_of_mariadb_down_loses_no_job_through_the_host_and_every_job_through_salts_returner() {
    let started = Instant::now();
    let mut server = MariaDb::start();
    let dir = temp_dir();
    let (host_db, salt_db) = (server.database(), server.database());
    host_db.sql(SCHEMA);
    salt_db.sql(SCHEMA);
    let host_dir = dir.path().join("host");
    std::fs::create_dir_all(&host_dir).unwrap();
    let host = start_host(&host_dir, None, Some(&host_db));
    let wasm_config = format!("master_job_cache: wasm\nevent_return: wasm\nwasm.url: {}\nwasm.returner: mysql\n", host.socket.display());
    let salt_config: String = salt_mysql_opts(&salt_db)
        .as_object()
        .unwrap()
        .iter()
        .map(|(key, value)| format!("{key}: {value}\n"))
        .chain(["master_job_cache: mysql\nevent_return: mysql\n".to_owned()])
        .collect();
    let (mut ours, mut salts) = std::thread::scope(|s| {
        let ours = s.spawn(|| Side::start("through the host", &dir.path().join("wasm"), &wasm_config, host_db));
        let salts = s.spawn(|| Side::start("Salt's mysql returner", &dir.path().join("salt"), &salt_config, salt_db));
        (ours.join().unwrap(), salts.join().unwrap())
    });
    eprintln!("MariaDB, the host and both masters up after {:?}", started.elapsed());

    ours.through_outage(
        &mut server,
        |_| {
            // The host met the outage: its delivery fails, and its spool
            // holds at least the save_load and the return of each job.
            let failing = host.delivery_error("mysql", Duration::from_secs(5));
            let held = host.queue("mysql")["items"].as_u64().unwrap_or(0);
            assert!(held >= 2 * DURING.len() as u64, "{held} writes held during the outage");
            eprintln!("the host holds {held} writes, its delivery failing with: {failing}");
        },
        |_| settled(&host),
    );
    salts.through_outage(
        &mut server,
        |side| assert!(side.salt.master_log().contains("Can't connect to MySQL server"), "Salt's returner met the outage"),
        |_| {},
    );

    let tallies = [&ours, &salts].map(Side::tally);
    let n = AFTER.end;
    eprintln!("MariaDB down at least {} s while jobs {DURING:?} of {n} ran; of the jobs before, during and after it:", OUTAGE.as_secs());
    for (side, tally) in [&ours, &salts].iter().zip(&tallies) {
        let total = |counts: [usize; 3]| format!("{}/{n} {counts:?}", counts.iter().sum::<usize>());
        eprintln!(
            "  {:>21}: jobs.lookup_jid finds {}; salt_events holds return events {}, new-job events {}",
            side.name,
            total(tally.found),
            total(tally.stored.each_ref().map(|s| s.return_events)),
            total(tally.stored.each_ref().map(|s| s.new_job_events)),
        );
    }
    eprintln!("in {:?}", started.elapsed());

    let [through_host, through_salt] = &tallies;
    assert_eq!(through_host.found, [BEFORE.len(), DURING.len(), AFTER.len()], "jobs.lookup_jid through the host finds every job");
    assert_eq!(through_host.stored, [&BEFORE, &DURING, &AFTER].map(Stored::all), "the host stores every return and event");
    let none = Stored { returns: 0, return_events: 0, new_job_events: 0 };
    assert_eq!(through_salt.found, [BEFORE.len(), 0, AFTER.len()], "jobs.lookup_jid through Salt's returner finds none of the outage");
    assert_eq!(through_salt.stored, [Stored::all(&BEFORE), none, Stored::all(&AFTER)], "Salt's returner stores nothing of the outage");
}

/// Wait until the host has delivered everything its mysql returner was
/// given, none of it to dead letters.
fn settled(host: &Daemon) {
    host.settle("mysql", WAIT);
    assert_eq!(host.dead_letters("mysql"), Vec::<Value>::new(), "no write of the outage was given up");
}
