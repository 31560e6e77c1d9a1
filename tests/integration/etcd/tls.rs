//! etcd served over TLS with client certificates (made with `openssl` in
//! the test): the host connects with the profile's CA, certificate and key,
//! under Salt's option names too; a wrong CA or a missing client
//! certificate is a `backend` error saying which.

use std::time::{Duration, Instant};

use returner_host_tests::etcd::{EtcdServer, Pki};
use returner_host_tests::{guest, temp_dir};
use serde_json::json;

use super::super::{config_daemon, toml_path};

/// Longest a TLS refusal may take: it is not retried, so well under the
/// request timeout, plus scheduling on a busy machine.
const REFUSAL_WITHIN: Duration = Duration::from_secs(4);

#[test]
fn tls_with_client_certificates_and_clear_errors_for_a_wrong_ca_or_no_certificate() {
    let dir = temp_dir();
    let pki_dir = dir.path().join("pki");
    std::fs::create_dir_all(&pki_dir).unwrap();
    let pki = Pki::generate(&pki_dir);
    let etcd = EtcdServer::start_tls(&pki);
    assert!(etcd.endpoint().starts_with("https://"));
    let port = etcd.endpoint().rsplit(':').next().unwrap().to_owned();
    let (ca, other_ca, cert, key) =
        (toml_path(&pki.ca), toml_path(&pki.other_ca), toml_path(&pki.client_cert), toml_path(&pki.client_key));
    let module = toml_path(&guest("returner-etcd"));
    let returner = |name: &str, profile: &str| {
        format!(
            "[returners.{name}]\nmodule = {module}\ngrants.etcd = {{ profile = \"{profile}\", root = \"/salt/return\", ops = [\"read\", \"write\"] }}\n"
        )
    };
    let profile = |name: &str, ca: &str, with_cert: bool| {
        let cert = if with_cert { format!("cert_file = {cert}\nkey_file = {key}\n") } else { String::new() };
        format!(
            "[profiles.{name}]\nkind = \"etcd\"\nendpoints = [\"{}\"]\nca_file = {ca}\n{cert}request_timeout_ms = 3000\n",
            etcd.endpoint()
        )
    };
    let d = config_daemon(
        dir.path(),
        "",
        &format!(
            r#"
{tls}{wrong_ca}{no_cert}
[profiles.salt_names]
kind = "etcd"
"etcd.host" = "127.0.0.1"
"etcd.port" = {port}
"etcd.ca" = {ca}
"etcd.client_cert" = {cert}
"etcd.client_key" = {key}

{etcd}{salt_names}{wrong_ca_returner}{no_cert_returner}"#,
            tls = profile("tls", &ca, true),
            wrong_ca = profile("wrong_ca", &other_ca, true),
            no_cert = profile("no_cert", &ca, false),
            etcd = returner("etcd", "tls"),
            salt_names = returner("etcd_salt_names", "salt_names"),
            wrong_ca_returner = returner("etcd_wrong_ca", "wrong_ca"),
            no_cert_returner = returner("etcd_no_cert", "no_cert"),
        ),
    );
    let ret = |jid: &str| json!({ "ret": { "id": "n1", "jid": jid, "fun": "test.ping", "return": true } });

    d.write("etcd", "returner", &ret("20261123084300320186")).result();
    d.write("etcd_salt_names", "returner", &ret("20261123084300320187")).result();
    assert_eq!(
        etcd.dump("/salt/return/jobs/").into_iter().filter(|(k, _)| k.ends_with("/return")).collect::<Vec<_>>(),
        [
            ("/salt/return/jobs/20261123084300320186/n1/return".to_owned(), "true".to_owned()),
            ("/salt/return/jobs/20261123084300320187/n1/return".to_owned(), "true".to_owned()),
        ]
    );
    let back = d.call("etcd_salt_names", "get_jid", &json!({ "jid": "20261123084300320186" }));
    assert_eq!(back.result(), &json!({ "n1": { "return": true } }));

    for (returner, says) in [
        ("etcd_wrong_ca", format!("not signed by the CA in ca_file ({})", pki.other_ca.display())),
        ("etcd_no_cert", "requires a client certificate; set cert_file and key_file".to_owned()),
    ] {
        // A read fails at once, naming the problem.
        let started = Instant::now();
        let r = d.call(returner, "get_jid", &json!({ "jid": "20261123084300320188" }));
        let took = started.elapsed();
        assert_eq!(r.error().0, "backend", "{returner}: {:?}", r.json);
        let message = r.error().1;
        assert!(message.contains(&says) && message.contains(&etcd.endpoint()), "{returner} should say `{says}`: {message}");
        assert!(took < REFUSAL_WITHIN, "{returner}: a TLS refusal is not retried until the timeout ({took:?})");
        // A write is held, and its delivery says the same.
        d.call(returner, "returner", &ret("20261123084300320188")).result();
        let held = d.delivery_error(returner, Duration::from_secs(30));
        assert!(held.contains(&says), "{returner}'s delivery should say `{says}`: {held}");
    }
    assert!(etcd.dump("/salt/return/jobs/20261123084300320188/").is_empty(), "nothing written without trust");
}
