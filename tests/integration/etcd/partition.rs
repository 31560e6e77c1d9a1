//! A three-member etcd cluster, each member in a network namespace of its
//! own, whose leader (the member the host talks to) is cut off from its
//! peers and from the host, not killed, while the spool delivers 20,000
//! returns: every acknowledged return is there, once, and the host was
//! never restarted.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use returner_host_tests::etcd::EtcdCluster;
use returner_host_tests::{salt_fixture_lines, temp_dir};

use super::super::soak::env_or;

#[test]
fn every_return_lands_once_while_the_leader_is_cut_off() {
    let _heavy = returner_host_tests::heavy_test();
    let total = env_or("ETCD_PARTITION_RETURNS", 20_000);
    let cluster = EtcdCluster::start_partitionable(3);
    cluster.move_leader(0);
    let dir = temp_dir();
    // Small batches: delivery is still going when the leader is cut off.
    let d = super::cluster_daemon(dir.path(), &cluster, "[server.spool]\nretry_max_ms = 500\nbatch_max_items = 8", None);
    let fixtures = salt_fixture_lines("minion-returns.jsonl");
    // The returns are written while the spool delivers them. A third of
    // the way through delivery the leader is cut off; two thirds, it joins
    // again. Delivery must get through the middle third while it is cut off.
    let acked = AtomicU64::new(0);
    let backlog = |d: &returner_host_tests::Daemon| d.queue("etcd")["items"].as_u64().unwrap_or(0);
    let delivered = || acked.load(Relaxed).saturating_sub(backlog(&d));
    let wait_delivered = |n: u64, what: &str| {
        let started = Instant::now();
        while delivered() < n {
            assert!(started.elapsed() < Duration::from_secs(300), "{what}: {} delivered after 300 s:\n{}", delivered(), d.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut at_cut = 0;
    std::thread::scope(|s| {
        s.spawn(|| d.write_returns("etcd", &fixtures, 0, total, 4, |_| {
            acked.fetch_add(1, Relaxed);
        }));
        wait_delivered(total / 3, "before the cut");
        cluster.cut(0);
        at_cut = total - delivered();
        wait_delivered(2 * total / 3, "with the leader cut off");
        cluster.heal(0);
    });
    d.settle("etcd", Duration::from_secs(600));
    assert!(d.dead_letters("etcd").is_empty(), "{:#?}", d.dead_letters("etcd"));

    // Every return: its jid under jobs/, read from a member that was never cut off.
    let keys = cluster.members[1].keys_under("/salt/return/jobs/");
    let jids: BTreeSet<&str> = keys.iter().filter_map(|k| k.strip_prefix("/salt/return/jobs/")?.split('/').next()).collect();
    let want: BTreeSet<String> = (0..total).map(|n| format!("2026{n:016}")).collect();
    let want: BTreeSet<&str> = want.iter().map(String::as_str).collect();
    assert_eq!(jids.len(), want.len(), "distinct jobs stored");
    assert!(jids == want, "every acknowledged return, and nothing else");
    // Once: each return's keys are its fields and nothing more (a return
    // written twice writes the same keys again).
    let per_fixture: Vec<usize> = fixtures.iter().map(|f| f.as_object().unwrap().len()).collect();
    let expected_keys: usize = (0..total as usize).map(|n| per_fixture[n % per_fixture.len()]).sum();
    assert_eq!(keys.len(), expected_keys, "one key per field of each return");
    let log = d.log_text();
    eprintln!("returns still to deliver when the leader was cut off: {at_cut} of {total}");
    let mut running = d;
    assert!(running.is_running(), "the host was never restarted:\n{log}");
}
