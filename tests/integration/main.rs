//! Integration tests of returner-host: the real binary serving real guest
//! components, driven over its HTTP API and its command line with the real
//! Salt payloads in host/src/testkit/salt.

mod audit;
mod bad_input;
mod batch;
mod cli;
mod etcd;
mod fs_quota;
mod galera;
mod hostile;
mod http;
mod http_returners;
mod inspect;
mod local_cache_api;
mod mysql;
mod reload;
mod runtime;
mod salt;
mod salt_multi_master;
mod salt_outage;
mod salt_ported;
mod soak;
mod spool;
mod sql_escapes;
mod testkit;

use std::path::{Path, PathBuf};

use returner_host_tests::{Daemon, toml_path};

/// The `returner-host` binary under test.
fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_returner-host"))
}

/// `returner-host serve --data-dir DIR`: the embedded default.
fn default_daemon(dir: &Path) -> Daemon {
    let data = dir.join("var");
    Daemon::start(
        &bin(),
        &["--data-dir", data.to_str().unwrap()],
        &data.join("returner-host.sock"),
        &dir.join("daemon.log"),
    )
}

/// `returner-host serve` of the embedded default on loopback TCP with
/// `token` in `dir/token`, data in `dir/var`; the daemon and its address.
fn tcp_daemon(dir: &Path, token: &str) -> (Daemon, String) {
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let data = dir.join("var");
    let daemon = Daemon::start_tcp(
        &bin(),
        &["--listen", &format!("tcp:{addr}"), "--token-file", token_file.to_str().unwrap(), "--data-dir", data.to_str().unwrap()],
        &addr,
        &dir.join("daemon.log"),
    );
    (daemon, addr)
}

/// `returner-host serve --config FILE` where FILE holds `server_extra` in
/// its `[server]` table, then `config`; the socket is in `dir`.
fn config_daemon(dir: &Path, server_extra: &str, config: &str) -> Daemon {
    Daemon::with_config(&bin(), dir, server_extra, config)
}

