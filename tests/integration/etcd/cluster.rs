//! A three-member etcd cluster on loopback losing its leader, the member the
//! host talks to, while the spool delivers returns: every return lands.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use returner_host_tests::etcd::EtcdCluster;
use returner_host_tests::{salt_fixture_lines, temp_dir};
use serde_json::json;

/// Clients sending returns at once, and how many each sends.
const CLIENTS: usize = 2;
const RETURNS_PER_CLIENT: usize = 120;
/// Returns delivered before the leader is killed.
const BEFORE_KILL: usize = 40;

#[test]
fn every_return_lands_while_the_leader_is_killed() {
    let mut cluster = EtcdCluster::start(3);
    // The host sends to the first endpoint first: make that member the leader, then kill it.
    cluster.move_leader(0);
    let dir = temp_dir();
    // Small batches, so delivery is still going when the leader dies.
    let d = super::cluster_daemon(dir.path(), &cluster, "spool = { batch_max_items = 4 }", Some(600));

    let fixtures = salt_fixture_lines("minion-returns.jsonl");
    let landed = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (socket, fixtures, landed) = (d.socket.clone(), fixtures.clone(), landed.clone());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                for n in 0..RETURNS_PER_CLIENT {
                    let mut ret = fixtures[n % fixtures.len()].clone();
                    ret["jid"] = json!(format!("2026112312{client}{n:09}"));
                    ret["id"] = json!(format!("m{client}"));
                    let r = returner_host_tests::http_unix(
                        &socket,
                        "POST",
                        "/v1/returners/etcd/returner",
                        &[],
                        json!({ "ret": ret }).to_string().as_bytes(),
                    );
                    if r.status == 200 {
                        landed.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failures.push(format!("{}: {}", ret["jid"], String::from_utf8_lossy(&r.body)));
                    }
                }
                failures
            })
        })
        .collect();

    let delivered = || d.metrics()[r#"returner_host_delivered_total{returner="etcd"}"#] as usize;
    let started = Instant::now();
    while delivered() < BEFORE_KILL {
        assert!(started.elapsed() < Duration::from_secs(120), "returns did not start landing");
        std::thread::sleep(Duration::from_millis(5));
    }
    let leader = cluster.leader();
    assert_eq!(leader, 0, "the member the host talks to leads");
    cluster.members[leader].stop();
    let at_kill = delivered();

    let failures: Vec<String> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    assert!(failures.is_empty(), "returns refused while the leader died:\n{}", failures.join("\n"));
    let total = CLIENTS * RETURNS_PER_CLIENT;
    assert_eq!(landed.load(Ordering::Relaxed), total, "every return acknowledged");
    d.settle("etcd", Duration::from_secs(120));
    assert!(total - at_kill >= total / 2, "most returns were delivered after the kill ({at_kill} of {total} before)");
    assert!(d.dead_letters("etcd").is_empty(), "a leader change is not a reason to give up a return");
    let new_leader = cluster.leader();
    assert_ne!(new_leader, leader, "a new leader was elected");

    // Every return is in etcd, read through a surviving member.
    let stored = cluster.any().dump("/salt/return/jobs/");
    for client in 0..CLIENTS {
        for n in 0..RETURNS_PER_CLIENT {
            let key = format!("/salt/return/jobs/2026112312{client}{n:09}/m{client}/return");
            let expected = &fixtures[n % fixtures.len()]["return"];
            let value = stored.iter().find(|(k, _)| *k == key).map(|(_, v)| v.as_str());
            let value: serde_json::Value = serde_json::from_str(value.unwrap_or_else(|| panic!("{key} missing"))).unwrap();
            assert_eq!(&value, expected, "{key}");
        }
    }
    let log = d.log_text();
    let others = &cluster.endpoints()[1..];
    assert!(
        log.lines().any(|l| l.contains("connected to etcd") && others.iter().any(|e| l.contains(e.as_str()))),
        "the host moved to another member:\n{log}"
    );
}
