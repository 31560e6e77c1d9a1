//! Requests to the HTTP endpoint the returner was granted.
//!
//! A returner names a method and a path under the endpoint's base URL
//! (`/services/collector/event`), never a host: the admin's profile says
//! where requests go and adds the credentials, which the returner never
//! sees. Without an http grant every call answers
//! [`Error::Denied`](crate::Error::Denied).
//!
//! [`send`] hands back any status the endpoint answers; [`Response::check`]
//! turns the ones that mean failure into the error kinds the host's spool
//! acts on: 5xx and 429 are [`Error::Backend`] (delivered again later),
//! other 4xx are [`Error::Invalid`] (never will succeed: a dead letter).
//!
//! ```no_run
//! use returner_sdk::{http, json, Result};
//!
//! fn post(event: &returner_sdk::Value) -> Result<()> {
//!     http::post_json("/services/collector/event", &json!({ "event": event }))?.check()?;
//!     Ok(())
//! }
//! ```

use crate::error::{Error, Result};
use crate::wit::salt::returner::http as host;

pub use host::Method;

/// Longest part of a response body quoted in an error.
const QUOTED_BODY_CHARS: usize = 300;

/// A response: status, headers and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// Header names and values, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        Ok(serde_json::from_slice(&self.body)?)
    }

    /// The response itself when its status is 2xx (or 3xx); otherwise the
    /// error its status means, quoting the start of the body: 5xx and 429
    /// are [`Error::Backend`], other 4xx [`Error::Invalid`].
    pub fn check(self) -> Result<Self> {
        match status_error(self.status, &self.body) {
            None => Ok(self),
            Some(e) => Err(e),
        }
    }
}

/// The error a status means, `None` for success.
pub fn status_error(status: u16, body: &[u8]) -> Option<Error> {
    let quoted: String = String::from_utf8_lossy(body).chars().take(QUOTED_BODY_CHARS).collect();
    let message = format!("the endpoint answered {status}: {}", quoted.trim());
    match status {
        100..=399 => None,
        429 => Some(Error::Backend(message)),
        400..=499 => Some(Error::Invalid(message)),
        _ => Some(Error::Backend(message)),
    }
}

/// Send one request; `path` may carry a query (`/i/_doc?refresh=true`).
pub fn send(method: Method, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Response> {
    let request = host::Request {
        method,
        path: path.to_owned(),
        headers: headers.iter().map(|(n, v)| host::Header { name: (*n).to_owned(), value: (*v).to_owned() }).collect(),
        body: body.to_vec(),
    };
    let r = host::send(&request)?;
    Ok(Response { status: r.status, headers: r.headers.into_iter().map(|h| (h.name, h.value)).collect(), body: r.body })
}

/// `POST` `body` as JSON (`Content-Type: application/json`).
pub fn post_json(path: &str, body: &serde_json::Value) -> Result<Response> {
    send(Method::Post, path, &[("Content-Type", "application/json")], body.to_string().as_bytes())
}

/// `GET` `path`.
pub fn get(path: &str) -> Result<Response> {
    send(Method::Get, path, &[], &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_what_the_spool_does_with_them() {
        assert!(status_error(200, b"").is_none());
        assert!(status_error(302, b"").is_none());
        assert!(matches!(status_error(503, b"busy"), Some(Error::Backend(m)) if m.contains("503") && m.contains("busy")));
        assert!(matches!(status_error(429, b""), Some(Error::Backend(_))));
        assert!(matches!(status_error(400, b"{\"text\":\"Invalid data format\"}"), Some(Error::Invalid(m)) if m.contains("Invalid data format")));
        assert!(matches!(status_error(403, b""), Some(Error::Invalid(_))));
        assert!(matches!(status_error(404, b""), Some(Error::Invalid(_))));
        let long = vec![b'x'; 10_000];
        let Some(Error::Backend(m)) = status_error(500, &long) else { panic!() };
        assert!(m.len() < 400, "the quote is bounded");
    }
}
