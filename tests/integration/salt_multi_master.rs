//! Salt multi-master: two `salt-master`s sharing one key pair, each with
//! `master_job_cache: wasm` on a returner-host of its own, both hosts
//! storing into one etcd; two minions in failover mode. A hundred jobs,
//! master 1 killed halfway (the minions move to master 2): `jobs.lookup_jid`
//! on master 2 finds every job's returns, those master 1 stored included.

use returner_host_tests::etcd::EtcdServer;
use returner_host_tests::salt::{SaltMultiMaster, shim_dir};
use returner_host_tests::temp_dir;
use serde_json::json;

use super::config_daemon;
use super::etcd::{etcd_profile_toml, etcd_returner_toml};

const JOBS: usize = 100;

#[test]
fn lookup_jid_on_the_second_master_finds_every_job_after_the_first_dies() {
    let _heavy = returner_host_tests::heavy_test();
    let etcd = EtcdServer::start();
    let dir = temp_dir();
    let hosts: Vec<_> = (0..2)
        .map(|i| {
            let host_dir = dir.path().join(format!("host{i}"));
            std::fs::create_dir_all(&host_dir).unwrap();
            config_daemon(&host_dir, "", &format!("{}{}", etcd_profile_toml("etcd_main", &etcd), etcd_returner_toml("etcd_main")))
        })
        .collect();
    let sockets: Vec<_> = hosts.iter().map(|h| h.socket.clone()).collect();
    let mut salt = SaltMultiMaster::start(
        dir.path(),
        &[&shim_dir()],
        2,
        2,
        |i| format!("master_job_cache: wasm\nwasm.url: {}\nwasm.returner: etcd\n", sockets[i].display()),
        "",
    );

    let mut jobs = salt.echo_jobs(0, "through-master-1", JOBS / 2);
    salt.kill_master(0);
    salt.wait_for_minions(1, 2);
    jobs.extend(salt.echo_jobs(1, "through-master-2", JOBS / 2));
    assert_eq!(jobs.len(), JOBS);
    let unanswered: Vec<(usize, &String)> =
        jobs.iter().enumerate().filter(|(_, (_, a))| a.as_object().map(|o| o.len()) != Some(2)).map(|(n, (jid, _))| (n, jid)).collect();
    assert!(unanswered.is_empty(), "jobs not answered by both minions: {unanswered:?}\nmaster 2 log:\n{}", salt.master_log(1));

    let jids: Vec<String> = jobs.iter().map(|(jid, _)| jid.clone()).collect();
    let found = salt.lookup_jids(1, &jids);
    for (n, (jid, answers)) in jobs.iter().enumerate() {
        let text = if n < JOBS / 2 { format!("through-master-1-{n}") } else { format!("through-master-2-{}", n - JOBS / 2) };
        assert_eq!(answers, &json!({ "minion0": text, "minion1": text }), "what the minions answered {jid}");
        assert_eq!(found.get(jid), Some(answers), "master 2's lookup_jid of job {n} ({jid})");
    }
    for host in &hosts {
        assert!(host.queue("etcd")["items"] == 0, "{}", host.queue("etcd"));
    }
}
