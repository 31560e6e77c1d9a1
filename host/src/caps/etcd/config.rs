//! The etcd profile (how the host reaches a cluster; host-side only) and the
//! etcd grant (what one returner may do there), as written in the config.
//! Salt's option names are accepted where they mean the same thing.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// How long connecting (and, with auth, authenticating) to etcd may take
/// when the profile does not say. Bounds how long an unreachable cluster
/// holds a call.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 1_000;
/// How long one etcd request may take when the profile does not say. Keep it
/// below the returner's `deadline_ms`, so a stalled cluster answers
/// `backend` naming the endpoint rather than the call's deadline.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 1_500;
/// etcd's client port when a profile gives Salt's `etcd.host` without `etcd.port`.
pub const DEFAULT_PORT: u16 = 2379;

/// How the host reaches an etcd cluster. Credentials stay host-side: the
/// password is read from `password_file` and never reaches a guest or a log.
///
/// ```toml
/// [profiles.etcd_main]
/// kind = "etcd"
/// endpoints = ["http://127.0.0.1:2379"]    # or Salt's "etcd.host" / "etcd.port"
/// username = "salt"                        # Salt: etcd.username
/// password_file = "/etc/returner-host/etcd.pass"
/// ca_file = "/etc/returner-host/etcd-ca.pem"          # Salt: etcd.ca
/// cert_file = "/etc/returner-host/etcd-client.pem"    # Salt: etcd.client_cert
/// key_file = "/etc/returner-host/etcd-client.key"     # Salt: etcd.client_key
/// connect_timeout_ms = 1000
/// request_timeout_ms = 1500
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdProfile {
    /// Client URLs of the cluster members (`http://` or `https://`).
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Salt's `etcd.host`: one member, used when `endpoints` is empty.
    #[serde(default, alias = "etcd.host")]
    pub host: Option<String>,
    /// Salt's `etcd.port`, with `host`; 2379 by default.
    #[serde(default, alias = "etcd.port")]
    pub port: Option<u16>,
    /// User for etcd authentication (Salt's `etcd.username`).
    #[serde(default, alias = "etcd.username")]
    pub username: Option<String>,
    /// File holding the password of `username` (Salt's `etcd.password`, kept out of the config).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM CA bundle to verify the members with (Salt's `etcd.ca`).
    #[serde(default, alias = "ca", alias = "etcd.ca")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (Salt's `etcd.client_cert`); needs `key_file`.
    #[serde(default, alias = "client_cert", alias = "etcd.client_cert")]
    pub cert_file: Option<PathBuf>,
    /// PEM key of the client certificate (Salt's `etcd.client_key`).
    #[serde(default, alias = "client_key", alias = "etcd.client_key")]
    pub key_file: Option<PathBuf>,
    /// Connect (and authenticate) timeout, [`DEFAULT_CONNECT_TIMEOUT_MS`] by default.
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    /// Per-request timeout, [`DEFAULT_REQUEST_TIMEOUT_MS`] by default.
    #[serde(default)]
    pub request_timeout_ms: Option<u64>,
}

impl EtcdProfile {
    /// The endpoints to dial: `endpoints`, or `http(s)://host:port` from Salt's options.
    pub fn endpoint_urls(&self) -> Vec<String> {
        if !self.endpoints.is_empty() {
            return self.endpoints.clone();
        }
        let scheme = if self.uses_tls() { "https" } else { "http" };
        self.host
            .iter()
            .map(|h| format!("{scheme}://{h}:{}", self.port.unwrap_or(DEFAULT_PORT)))
            .collect()
    }

    /// Whether any TLS option is set.
    pub fn uses_tls(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.unwrap_or(DEFAULT_CONNECT_TIMEOUT_MS))
    }

    /// The per-request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.unwrap_or(DEFAULT_REQUEST_TIMEOUT_MS))
    }

    /// Check the profile's shape; `Err((key, message))` names the offending key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let urls = self.endpoint_urls();
        if urls.is_empty() {
            return Err(("endpoints", "expected at least one endpoint URL (or Salt's `etcd.host`)".into()));
        }
        if !self.endpoints.is_empty() && self.host.is_some() {
            return Err(("host", "give either `endpoints` or `host`/`port`, not both".into()));
        }
        for url in &urls {
            let tls_url = url.starts_with("https://");
            if !tls_url && !url.starts_with("http://") {
                return Err(("endpoints", format!("`{url}` should start with http:// or https://")));
            }
            if self.uses_tls() && !tls_url {
                return Err(("endpoints", format!("`{url}`: TLS options need https:// endpoints")));
            }
            if tls_url && self.ca_file.is_none() {
                // The host trusts no CA of its own, so nothing would verify.
                return Err(("ca_file", format!("`{url}` needs `ca_file`, the CA that signed the members' certificates")));
            }
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(("cert_file", "a client certificate needs both `cert_file` and `key_file`".into()));
        }
        if self.password_file.is_some() && self.username.is_none() {
            return Err(("username", "`password_file` is set without `username`".into()));
        }
        for (key, ms) in [("connect_timeout_ms", self.connect_timeout_ms), ("request_timeout_ms", self.request_timeout_ms)] {
            if ms == Some(0) {
                return Err((key, "expected at least 1 ms".into()));
            }
        }
        Ok(())
    }
}

/// What an etcd grant lets a returner do.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EtcdOp {
    /// get, get-prefix
    Read,
    /// put, put-many, put-if-absent
    Write,
    /// delete
    Delete,
}

impl EtcdOp {
    /// The name used in the config.
    pub fn name(self) -> &'static str {
        match self {
            EtcdOp::Read => "read",
            EtcdOp::Write => "write",
            EtcdOp::Delete => "delete",
        }
    }
}

/// A returner's etcd grant. Keys are relative to `root`; reads go to
/// `read_profile` and writes and deletes to `write_profile` when set (Salt's
/// `etcd.returner_read_profile` / `etcd.returner_write_profile`), to
/// `profile` otherwise. Without `max_ttl_seconds`, no lease may be asked.
///
/// ```toml
/// [returners.etcd.grants.etcd]
/// profile = "etcd_main"
/// root = "/salt/return"            # Salt: etcd.returner_root
/// ops = ["read", "write", "delete"]
/// max_ttl_seconds = 86400
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdGrant {
    /// Name of an `etcd` profile (Salt's `etcd.returner`).
    #[serde(alias = "etcd.returner")]
    pub profile: String,
    /// Key prefix the returner's keys live under, like a directory.
    #[serde(alias = "etcd.returner_root")]
    pub root: String,
    /// Operations allowed.
    pub ops: Vec<EtcdOp>,
    /// The longest lease a returner may ask for; none when absent.
    #[serde(default)]
    pub max_ttl_seconds: Option<u64>,
    /// Profile for reads (Salt's `etcd.returner_read_profile`).
    #[serde(default, alias = "etcd.returner_read_profile")]
    pub read_profile: Option<String>,
    /// Profile for writes and deletes (Salt's `etcd.returner_write_profile`).
    #[serde(default, alias = "etcd.returner_write_profile")]
    pub write_profile: Option<String>,
}

impl EtcdGrant {
    /// The profile serving `op`.
    pub fn profile_for(&self, op: EtcdOp) -> &str {
        let split = match op {
            EtcdOp::Read => &self.read_profile,
            EtcdOp::Write | EtcdOp::Delete => &self.write_profile,
        };
        split.as_deref().unwrap_or(&self.profile)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(toml_text: &str) -> EtcdProfile {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn salt_names_build_the_endpoint() {
        let p = profile("\"etcd.host\" = \"10.0.0.5\"\n\"etcd.ca\" = \"ca.pem\"\n");
        assert_eq!(p.endpoint_urls(), ["https://10.0.0.5:2379"]);
        assert_eq!(p.validate(), Ok(()));
        let p = profile("\"etcd.host\" = \"10.0.0.5\"\n\"etcd.port\" = 4001\n");
        assert_eq!(p.endpoint_urls(), ["http://10.0.0.5:4001"]);
    }

    #[test]
    fn tls_shapes_are_checked() {
        let err = |t: &str| profile(t).validate().unwrap_err();
        assert_eq!(err("endpoints = [\"https://a:2379\"]\n").0, "ca_file");
        assert_eq!(err("endpoints = [\"http://a:2379\"]\nca_file = \"ca.pem\"\n").0, "endpoints");
        assert_eq!(err("endpoints = [\"https://a:2379\"]\nca_file = \"ca.pem\"\ncert_file = \"c.pem\"\n").0, "cert_file");
        let ok = "endpoints = [\"https://a:2379\", \"https://b:2379\"]\nca_file = \"ca.pem\"\ncert_file = \"c.pem\"\nkey_file = \"c.key\"\n";
        assert_eq!(profile(ok).validate(), Ok(()));
    }
}
