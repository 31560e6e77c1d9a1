//! One HTTP client per profile (`reqwest` over rustls, its own connection
//! pool): sends a request that passed the grant check to the profile's base
//! URL with the profile's headers, reads the response up to the profile's
//! cap, and takes the profile's secrets out of what comes back.

use std::fmt;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::config::{HttpMethod, HttpProfile, Source};
use super::path::{self, Base};

/// Idle connections kept per profile.
const POOL_IDLE_PER_HOST: usize = 8;

/// What replaces a secret in a response.
pub const REDACTED: &str = "[redacted]";

/// Shortest secret path of a base URL that is redacted on its own; a
/// shorter one would blank out ordinary text.
const MIN_SECRET_PATH: usize = 8;

/// Why a request did not produce a response.
#[derive(Debug)]
pub enum SendError {
    /// Connecting, TLS, sending or reading failed, or it took too long.
    Unavailable(String),
    /// The response was over the profile's cap.
    TooLarge(String),
}

/// A response, its secrets taken out.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// One request, after the grant check.
pub struct Request<'a> {
    pub method: HttpMethod,
    /// Normalised path, relative to the base URL.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A profile's client: base URL, headers, secrets and caps.
pub struct ProfileClient {
    name: String,
    base: Base,
    /// Whether the base URL is itself a secret (read from a file).
    secret_url: bool,
    client: reqwest::Client,
    headers: HeaderMap,
    /// Lower-case names of the profile's headers.
    header_names: Vec<String>,
    /// Byte strings taken out of every response, longest first.
    secrets: Vec<Vec<u8>>,
    timeout: Duration,
    max_request_bytes: u64,
    max_response_bytes: u64,
}

impl fmt::Debug for ProfileClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProfileClient").field("profile", &self.name).field("headers", &self.header_names).finish_non_exhaustive()
    }
}

impl ProfileClient {
    /// The client of profile `name`; reads its secret files and CA.
    pub fn new(name: &str, profile: &HttpProfile) -> anyhow::Result<Self> {
        let (url, url_secret) = profile.base_url.resolve().map_err(anyhow::Error::msg)?;
        let base = path::base_url(&url, profile.allow_plain_http).map_err(|m| anyhow::anyhow!("base_url: {m}"))?;
        let mut secrets: Vec<Vec<u8>> = Vec::new();
        if url_secret.is_some() {
            secrets.push(url.trim_end_matches('/').as_bytes().to_vec());
            if base.path.len() >= MIN_SECRET_PATH {
                secrets.push(base.path.as_bytes().to_vec());
            }
        }
        let mut headers = HeaderMap::new();
        let mut header_names = Vec::new();
        for (name, source) in &profile.headers {
            let (value, secret) = source.resolve().map_err(anyhow::Error::msg)?;
            let mut value = HeaderValue::from_str(&value).map_err(|_| anyhow::anyhow!("header `{name}`: not a header value"))?;
            if let Some(secret) = secret {
                value.set_sensitive(true);
                secrets.push(value.as_bytes().to_vec());
                secrets.push(secret.into_bytes());
            }
            headers.insert(HeaderName::from_bytes(name.as_bytes())?, value);
            header_names.push(name.to_ascii_lowercase());
        }
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();

        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .https_only(!profile.allow_plain_http)
            .connect_timeout(Duration::from_millis(profile.connect_timeout_ms))
            .timeout(Duration::from_millis(profile.timeout_ms))
            .pool_max_idle_per_host(POOL_IDLE_PER_HOST)
            .user_agent(concat!("returner-host/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &profile.ca_file {
            let pem = std::fs::read(ca).map_err(|e| anyhow::anyhow!("cannot read ca_file {}: {e}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| anyhow::anyhow!("ca_file {}: not PEM certificates: {e}", ca.display()))?;
            if certs.is_empty() {
                anyhow::bail!("ca_file {} holds no certificate", ca.display());
            }
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| anyhow::anyhow!("cannot build the HTTP client: {}", chain(&e)))?;
        Ok(Self {
            name: name.to_owned(),
            secret_url: url_secret.is_some() || matches!(profile.base_url, Source::File { .. }),
            base,
            client,
            headers,
            header_names,
            secrets,
            timeout: Duration::from_millis(profile.timeout_ms),
            max_request_bytes: profile.max_request_bytes,
            max_response_bytes: profile.max_response_bytes,
        })
    }

    /// The profile's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The profile's base URL.
    pub fn base(&self) -> &Base {
        &self.base
    }

    /// Lower-case names of the headers the profile sets.
    pub fn header_names(&self) -> &[String] {
        &self.header_names
    }

    /// Largest request body.
    pub fn max_request_bytes(&self) -> u64 {
        self.max_request_bytes
    }

    /// Where a request for `path` goes, shown without the base URL when it
    /// is a secret: `profile splunk: /services/collector/event`.
    pub fn describe(&self, path: &str) -> String {
        if self.secret_url { format!("profile `{}`: {path}", self.name) } else { format!("{}{path}", self.base.url.as_str().trim_end_matches('/')) }
    }

    /// The URL of a checked path and query. Built from the base URL, then
    /// compared with what was checked: a URL the parser would change is
    /// refused, so what is sent is what was checked.
    pub fn url(&self, path: &str, query: Option<&str>) -> Result<url::Url, String> {
        let mut url = self.base.url.clone();
        let joined = format!("{}{path}", self.base.path);
        url.set_path(&joined);
        url.set_query(query);
        let want_path = if joined.is_empty() { "/" } else { joined.as_str() };
        if url.origin() != self.base.url.origin() || url.path() != want_path || url.query() != query {
            return Err(format!("the path `{path}` would not be sent as written"));
        }
        Ok(url)
    }

    /// Send `request` and read its response, by `deadline` at the latest.
    pub async fn send(&self, request: Request<'_>, deadline: Instant) -> Result<(url::Url, Response), SendError> {
        let path = request.path;
        let url = self.url(path, request.query).map_err(SendError::Unavailable)?;
        let method = reqwest::Method::from_bytes(request.method.as_str().as_bytes()).expect("a known method");
        let mut headers = HeaderMap::with_capacity(request.headers.len() + self.headers.len());
        for (name, value) in &request.headers {
            // Checked before: a token name and a visible-ASCII value.
            let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) else {
                return Err(SendError::Unavailable(format!("header `{name}` cannot be sent")));
            };
            headers.append(name, value);
        }
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        let limit = deadline.min(Instant::now() + self.timeout);
        let read = async {
            let sent = self.client.request(method, url.clone()).headers(headers).body(request.body).send().await;
            let mut response = sent.map_err(|e| SendError::Unavailable(self.failure("sending the request to", path, &e)))?;
            let status = response.status().as_u16();
            let mut size: u64 = 0;
            let mut out_headers = Vec::with_capacity(response.headers().len());
            for (name, value) in response.headers() {
                size += (name.as_str().len() + value.len()) as u64;
                out_headers.push((name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()));
            }
            let cap = self.max_response_bytes;
            if response.content_length().is_some_and(|n| n.saturating_add(size) > cap) {
                return Err(SendError::TooLarge(format!("the response says it is {} bytes; the profile's max_response_bytes is {cap}", response.content_length().unwrap_or(0))));
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| SendError::Unavailable(self.failure("reading the response from", path, &e)))? {
                size += chunk.len() as u64;
                if size > cap {
                    return Err(SendError::TooLarge(format!("the response is over the profile's max_response_bytes ({cap} bytes)")));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Response { status, headers: out_headers, body })
        };
        let mut response = match tokio::time::timeout_at(limit.into(), read).await {
            Ok(read) => read?,
            Err(_) => {
                return Err(SendError::Unavailable(format!(
                    "{} did not answer in full in time (the profile's timeout_ms is {}, or the call's deadline came first)",
                    self.describe(path),
                    self.timeout.as_millis()
                )));
            }
        };
        self.redact(&mut response);
        Ok((url, response))
    }

    /// What went wrong, with its causes, never the URL when it is secret.
    fn failure(&self, doing: &str, path: &str, e: &reqwest::Error) -> String {
        let what = if e.is_timeout() {
            format!("timed out (the profile's timeout_ms is {})", self.timeout.as_millis())
        } else if e.is_connect() {
            "could not connect".to_owned()
        } else {
            "failed".to_owned()
        };
        format!("{doing} {} {what}: {}", self.describe(path), chain(e))
    }

    /// Replace every secret in the response by [`REDACTED`].
    fn redact(&self, response: &mut Response) {
        for (_, value) in &mut response.headers {
            let mut bytes = std::mem::take(value).into_bytes();
            redact_bytes(&mut bytes, &self.secrets);
            *value = String::from_utf8_lossy(&bytes).into_owned();
        }
        redact_bytes(&mut response.body, &self.secrets);
    }
}

/// Replace each occurrence of each of `secrets` (longest first) in `bytes`.
pub fn redact_bytes(bytes: &mut Vec<u8>, secrets: &[Vec<u8>]) {
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        if memchr::memmem::find(bytes, secret).is_none() {
            continue;
        }
        let mut out = Vec::with_capacity(bytes.len());
        let mut rest = &bytes[..];
        while let Some(at) = memchr::memmem::find(rest, secret) {
            out.extend_from_slice(&rest[..at]);
            out.extend_from_slice(REDACTED.as_bytes());
            rest = &rest[at + secret.len()..];
        }
        out.extend_from_slice(rest);
        *bytes = out;
    }
}

/// An error and its sources, without the URL reqwest puts in its own text.
fn chain(e: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = source {
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&s.to_string());
        source = s.source();
    }
    if text.is_empty() {
        text = if e.is_timeout() { "timed out".into() } else if e.is_body() { "body error".into() } else { "request error".into() };
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_takes_out_every_secret() {
        let secrets = vec![b"Splunk s3cret-token".to_vec(), b"s3cret-token".to_vec()];
        let mut body = b"{\"authorization\": \"Splunk s3cret-token\", \"again\": \"s3cret-tokens3cret-token\"}".to_vec();
        redact_bytes(&mut body, &secrets);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "{\"authorization\": \"[redacted]\", \"again\": \"[redacted][redacted]\"}"
        );
        let mut clean = b"nothing here".to_vec();
        redact_bytes(&mut clean, &secrets);
        assert_eq!(clean, b"nothing here");
    }
}
