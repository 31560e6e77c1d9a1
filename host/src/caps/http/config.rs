//! The http profile (where an endpoint is and the secret headers it wants;
//! host-side only) and the http grant (which methods and paths one returner
//! may use there), as written in the config.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::path::{self, PathPattern};

/// How long one request may take, connecting, sending and reading the whole
/// response, unless the profile says. A slow endpoint (or one that answers a
/// byte at a time) fails the request in this time, never later than the
/// call's deadline.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// How long connecting (TCP and TLS) may take, unless the profile says.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 3_000;
/// Largest request body a guest may send, unless the profile says.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 8 * 1024 * 1024;
/// Largest response (headers and body) handed to a guest, unless the
/// profile says. The host stops reading there.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 4 * 1024 * 1024;
/// Requests one returner may have in flight at once, unless its grant says.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 4;

/// How the host reaches one HTTP endpoint. The secrets stay host-side: a
/// header's value may come from a file, and is added to every request
/// after the grant check; the guest never sees it, and the host replaces it
/// by `[redacted]` wherever a response repeats it.
///
/// ```toml
/// [profiles.splunk]
/// kind = "http"
/// base_url = "https://splunk.example:8088"      # or { file = "/etc/returner-host/hook.url" }
/// headers = { Authorization = { file = "/etc/returner-host/splunk.token", prefix = "Splunk " } }
/// ca_file = "/etc/returner-host/splunk-ca.pem"  # trust only this CA; the public roots otherwise
/// timeout_ms = 10000
/// connect_timeout_ms = 3000
/// max_request_bytes = 8388608
/// max_response_bytes = 4194304
/// # allow_plain_http = true                    # http:// base URLs; off by default
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProfile {
    /// The endpoint: scheme, host, port and an optional path prefix. A
    /// guest's path is appended to it. A URL that is itself the credential
    /// (a Slack or Teams webhook) belongs in a file: `{ file = "..." }`.
    pub base_url: Source,
    /// Headers the host adds to every request: a literal value, or a secret
    /// read from a file (one line; a trailing newline is ignored) with an
    /// optional `prefix`. A guest may not set any of them.
    #[serde(default)]
    pub headers: BTreeMap<String, Source>,
    /// PEM CA bundle to verify the endpoint with, instead of the public roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Whole-request timeout, [`DEFAULT_TIMEOUT_MS`] by default.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Connect timeout, [`DEFAULT_CONNECT_TIMEOUT_MS`] by default.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Largest request body, [`DEFAULT_MAX_REQUEST_BYTES`] by default.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: u64,
    /// Largest response, [`DEFAULT_MAX_RESPONSE_BYTES`] by default.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
    /// Allow an `http://` base URL: requests, secret headers included, then
    /// travel unencrypted. Off by default.
    #[serde(default)]
    pub allow_plain_http: bool,
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}
fn default_connect_timeout_ms() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_MS
}
fn default_max_request_bytes() -> u64 {
    DEFAULT_MAX_REQUEST_BYTES
}
fn default_max_response_bytes() -> u64 {
    DEFAULT_MAX_RESPONSE_BYTES
}

/// A value written in the config, or a secret read from a file.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Source {
    /// The value itself; not secret.
    Literal(String),
    /// A secret: the first line of `file`, after `prefix`.
    File {
        /// The file holding it, readable by the host only.
        file: PathBuf,
        /// Text put before it, e.g. `"Splunk "` or `"Bearer "`.
        #[serde(default)]
        prefix: String,
    },
}

impl Source {
    /// The value, and whether it is a secret (read from a file): the
    /// secret part alone (without the prefix) in the second slot.
    pub fn resolve(&self) -> Result<(String, Option<String>), String> {
        match self {
            Source::Literal(v) => Ok((v.clone(), None)),
            Source::File { file, prefix } => {
                let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
                let secret = text.strip_suffix('\n').unwrap_or(&text);
                let secret = secret.strip_suffix('\r').unwrap_or(secret);
                if secret.is_empty() || secret.contains(['\n', '\r', '\0']) {
                    return Err(format!("{} must hold one non-empty line", file.display()));
                }
                Ok((format!("{prefix}{secret}"), Some(secret.to_owned())))
            }
        }
    }

    fn resolve_paths(&mut self, abs: &impl Fn(&Path) -> PathBuf) {
        if let Source::File { file, .. } = self {
            *file = abs(file);
        }
    }
}

impl HttpProfile {
    /// Make the profile's file paths absolute with `abs` (relative to the config file).
    pub fn resolve_paths(&mut self, abs: impl Fn(&Path) -> PathBuf) {
        self.base_url.resolve_paths(&abs);
        self.headers.values_mut().for_each(|h| h.resolve_paths(&abs));
        self.ca_file = self.ca_file.as_deref().map(&abs);
    }

    /// What is wrong with the profile's settings, if anything. Reads the
    /// files it names, so a missing secret fails at start, not at the first
    /// request.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (key, value) in [
            ("timeout_ms", self.timeout_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("max_request_bytes", self.max_request_bytes),
            ("max_response_bytes", self.max_response_bytes),
        ] {
            if value == 0 {
                return Err((key, "expected at least 1".into()));
            }
        }
        let (url, _) = self.base_url.resolve().map_err(|m| ("base_url", m))?;
        path::base_url(&url, self.allow_plain_http).map_err(|m| ("base_url", m))?;
        for (name, value) in &self.headers {
            path::check_profile_header(name).map_err(|m| ("headers", m))?;
            let (value, _) = value.resolve().map_err(|m| ("headers", format!("header `{name}`: {m}")))?;
            if value.contains(['\r', '\n', '\0']) {
                return Err(("headers", format!("header `{name}`: a value may not hold CR, LF or NUL")));
            }
        }
        if let Some(ca) = &self.ca_file {
            std::fs::metadata(ca).map_err(|e| ("ca_file", format!("cannot read {}: {e}", ca.display())))?;
        }
        Ok(())
    }
}

/// An HTTP method a grant can allow.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// `GET`.
    Get,
    /// `HEAD`.
    Head,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `PATCH`.
    Patch,
    /// `DELETE`.
    Delete,
}

impl HttpMethod {
    /// The method as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
        }
    }
}

/// A returner's http grant: the methods and paths of one `http` profile it
/// may use, and how many requests it may have in flight and start per second.
///
/// Paths are relative to the profile's `base_url`. A pattern matches a
/// request path segment by segment: a segment `*` matches any one segment,
/// and a last segment `**` matches any number of them (none too). The query
/// (`?...`) is not part of the match.
///
/// ```toml
/// [returners.splunk.grants.http]
/// profile = "splunk"
/// methods = ["POST"]
/// paths = ["/services/collector/event"]     # e.g. "/salt-*/_doc/*" is not a pattern: "/*/_doc/*" is
/// max_in_flight = 4
/// max_requests_per_second = 100             # no rate limit when absent
/// ```
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpGrant {
    /// Name of an `http` profile.
    pub profile: String,
    /// Methods allowed.
    pub methods: Vec<HttpMethod>,
    /// Path patterns allowed.
    pub paths: Vec<String>,
    /// Requests in flight at once, [`DEFAULT_MAX_IN_FLIGHT`] by default; a
    /// request over it waits for one to end (until the call's deadline).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
    /// Requests started per second at most (a burst of as many); a request
    /// over it waits for its turn (until the call's deadline).
    #[serde(default)]
    pub max_requests_per_second: Option<f64>,
}

fn default_max_in_flight() -> u32 {
    DEFAULT_MAX_IN_FLIGHT
}

impl HttpGrant {
    /// The grant's path patterns, parsed, or what is wrong with it.
    pub fn validate(&self) -> Result<Vec<PathPattern>, (&'static str, String)> {
        if self.methods.is_empty() {
            return Err(("methods", "expected at least one method, e.g. [\"POST\"]".into()));
        }
        if self.paths.is_empty() {
            return Err(("paths", "expected at least one path pattern, e.g. [\"/services/collector/event\"]".into()));
        }
        if self.max_in_flight == 0 {
            return Err(("max_in_flight", "expected at least 1".into()));
        }
        if let Some(rate) = self.max_requests_per_second {
            if !(rate.is_finite() && rate >= 0.001) {
                return Err(("max_requests_per_second", format!("{rate} is not a rate; expected a positive number")));
            }
        }
        self.paths.iter().map(|p| PathPattern::parse(p).map_err(|m| ("paths", m))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_reads_its_secrets_and_refuses_a_bad_shape() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let text = format!(
            "base_url = \"https://splunk.example:8088\"\nheaders = {{ Authorization = {{ file = {:?}, prefix = \"Splunk \" }}, X-Channel = \"c1\" }}\n",
            token.display().to_string()
        );
        let p: HttpProfile = toml::from_str(&text).unwrap();
        assert_eq!(p.validate(), Ok(()));
        assert_eq!(p.headers["Authorization"].resolve().unwrap(), ("Splunk s3cret".into(), Some("s3cret".into())));
        assert_eq!(p.headers["X-Channel"].resolve().unwrap(), ("c1".into(), None));

        let err = |t: &str| toml::from_str::<HttpProfile>(t).unwrap().validate().unwrap_err();
        assert_eq!(err("base_url = \"http://a:1\"").0, "base_url", "plain http needs allow_plain_http");
        assert_eq!(toml::from_str::<HttpProfile>("base_url = \"http://a:1\"\nallow_plain_http = true").unwrap().validate(), Ok(()));
        assert_eq!(err("base_url = \"https://a:1\"\nheaders = { Host = \"b\" }").0, "headers");
        assert_eq!(err("base_url = \"https://a:1\"\nheaders = { X = { file = \"/nonexistent/x\" } }").0, "headers");
        assert_eq!(err("base_url = \"https://a:1\"\ntimeout_ms = 0").0, "timeout_ms");
        std::fs::write(&token, "two\nlines\n").unwrap();
        let text = format!("base_url = \"https://a\"\nheaders = {{ A = {{ file = {:?} }} }}\n", token.display().to_string());
        assert!(toml::from_str::<HttpProfile>(&text).unwrap().validate().unwrap_err().1.contains("one non-empty line"));
    }

    #[test]
    fn a_grant_needs_methods_and_valid_paths() {
        let g = |t: &str| toml::from_str::<HttpGrant>(t).unwrap();
        assert!(g("profile = \"p\"\nmethods = [\"POST\"]\npaths = [\"/a/*/c\", \"/x/**\"]").validate().is_ok());
        assert_eq!(g("profile = \"p\"\nmethods = []\npaths = [\"/a\"]").validate().unwrap_err().0, "methods");
        assert_eq!(g("profile = \"p\"\nmethods = [\"GET\"]\npaths = [\"/a/../b\"]").validate().unwrap_err().0, "paths");
        assert_eq!(g("profile = \"p\"\nmethods = [\"GET\"]\npaths = [\"/a\"]\nmax_in_flight = 0").validate().unwrap_err().0, "max_in_flight");
        assert!(toml::from_str::<HttpGrant>("profile = \"p\"\nmethods = [\"CONNECT\"]\npaths = [\"/a\"]").is_err());
    }
}
