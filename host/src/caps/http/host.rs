//! The `salt:returner/http` host function. Its first statements are the
//! grant check (method, normalised path against the grant's patterns,
//! headers, size); only a request that passed it is built, and the URL it
//! goes to is derived from the profile and compared with what was checked.
//! A refusal is `denied` naming the method and path, with one audit event.
//! Expected failures are WIT errors; nothing here traps.

use std::sync::Arc;

use super::client::{Request, SendError};
use super::path::{self, MAX_GUEST_HEADER_BYTES, MAX_GUEST_HEADERS};
use super::{HttpCtx, HttpGranted, HttpMethod, ProfileClient};
use crate::bindings::GuestError;
use crate::bindings::salt::returner::http::{self, Header, Method, Response};
use crate::caps::audit;
use crate::metrics::metrics;

type GuestResult<T> = wasmtime::Result<Result<T, GuestError>>;

fn method(m: Method) -> HttpMethod {
    match m {
        Method::Get => HttpMethod::Get,
        Method::Head => HttpMethod::Head,
        Method::Post => HttpMethod::Post,
        Method::Put => HttpMethod::Put,
        Method::Patch => HttpMethod::Patch,
        Method::Delete => HttpMethod::Delete,
    }
}

/// A checked request: its client, grant, path and query.
struct Checked {
    client: Arc<ProfileClient>,
    granted: Arc<HttpGranted>,
    path: String,
    query: Option<String>,
}

impl HttpCtx {
    /// Guest's fault or admin's choice: refused. Audited once.
    fn deny(&self, method: HttpMethod, target: &str, why: &dyn std::fmt::Display) -> GuestError {
        let shown: String = target.chars().take(200).flat_map(char::escape_debug).collect();
        audit::denied(&self.returner, "http", method.as_str(), &shown);
        GuestError::Denied(format!("http {} of `{shown}` denied for returner `{}`: {why}", method.as_str(), self.returner))
    }

    /// The grant check: everything about the request a guest chose.
    fn check(&self, m: HttpMethod, target: &str, headers: &[Header], body_len: usize) -> Result<Checked, GuestError> {
        let Some(granted) = &self.granted else {
            return Err(self.deny(m, target, &"it has no http grant"));
        };
        // Host's fault: config validation makes every granted profile exist.
        let client = self
            .client
            .clone()
            .ok_or_else(|| GuestError::Backend(format!("http profile `{}` has no client", granted.grant.profile)))?;
        if !granted.grant.methods.contains(&m) {
            return Err(self.deny(m, target, &format!("the grant allows only {}", methods(&granted.grant.methods))));
        }
        let (path, query) = path::normalise(target).map_err(|why| self.deny(m, target, &why))?;
        if !granted.patterns.iter().any(|p| p.matches(&path)) {
            let allowed: Vec<&str> = granted.patterns.iter().map(|p| p.as_str()).collect();
            return Err(self.deny(m, target, &format!("the path is not one the grant allows ({})", allowed.join(", "))));
        }
        if headers.len() > MAX_GUEST_HEADERS {
            return Err(self.deny(m, target, &format!("{} headers; at most {MAX_GUEST_HEADERS}", headers.len())));
        }
        let header_bytes: usize = headers.iter().map(|h| h.name.len() + h.value.len()).sum();
        if header_bytes > MAX_GUEST_HEADER_BYTES {
            return Err(self.deny(m, target, &format!("{header_bytes} bytes of headers; at most {MAX_GUEST_HEADER_BYTES}")));
        }
        for h in headers {
            path::check_guest_header(&h.name, &h.value, client.header_names()).map_err(|why| self.deny(m, target, &why))?;
        }
        if body_len as u64 > client.max_request_bytes() {
            metrics().limited(&self.returner, "http_request_bytes");
            return Err(GuestError::Limit(format!(
                "the request body is {body_len} bytes; profile `{}` takes at most {} (max_request_bytes)",
                client.name(),
                client.max_request_bytes()
            )));
        }
        Ok(Checked { client, granted: granted.clone(), path, query })
    }

    /// A redirect's target must be a granted path of the profile; anything
    /// else is refused and its `Location` never reaches the guest.
    fn check_redirect(&self, m: HttpMethod, checked: &Checked, sent: &url::Url, response: &Response) -> Result<(), GuestError> {
        if !(300..400).contains(&response.status) {
            return Ok(());
        }
        let Some(location) = response.headers.iter().find(|h| h.name.eq_ignore_ascii_case("location")) else {
            return Ok(());
        };
        let base = checked.client.base();
        let stays = sent.join(&location.value).ok().and_then(|to| {
            let rest = to.path().strip_prefix(base.path.as_str())?;
            let target = match to.query() {
                Some(q) => format!("{rest}?{q}"),
                None => rest.to_owned(),
            };
            let (path, _) = path::normalise(&target).ok()?;
            (to.origin() == base.url.origin() && checked.granted.patterns.iter().any(|p| p.matches(&path))).then_some(())
        });
        match stays {
            Some(()) => Ok(()),
            None => Err(self.deny(
                m,
                &checked.path,
                &format!("the endpoint answered {} with a redirect off the granted paths of profile `{}`", response.status, checked.client.name()),
            )),
        }
    }

    /// Wait for a request slot and a turn under the rate, until the deadline.
    async fn admit(&self, granted: &HttpGranted) -> Result<tokio::sync::OwnedSemaphorePermit, GuestError> {
        let grant = &granted.grant;
        let Some(turn) = granted.next_turn(self.deadline()) else {
            metrics().limited(&self.returner, "http_rate");
            return Err(GuestError::Limit(format!(
                "over the grant's max_requests_per_second ({}) until the call's deadline",
                grant.max_requests_per_second.unwrap_or_default()
            )));
        };
        tokio::time::sleep_until(turn.into()).await;
        match tokio::time::timeout_at(self.deadline().into(), granted.in_flight.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                metrics().limited(&self.returner, "http_in_flight");
                Err(GuestError::Limit(format!(
                    "{} requests of this returner were in flight until the call's deadline (the grant's max_in_flight)",
                    grant.max_in_flight
                )))
            }
        }
    }
}

fn methods(list: &[HttpMethod]) -> String {
    list.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")
}

impl http::Host for HttpCtx {
    #[tracing::instrument(level = "debug", skip_all, fields(returner = %self.returner))]
    async fn send(&mut self, request: http::Request) -> GuestResult<Response> {
        if let Err(e) = self.turn.wait().await {
            return Ok(Err(e));
        }
        let m = method(request.method);
        let checked = match self.check(m, &request.path, &request.headers, request.body.len()) {
            Ok(checked) => checked,
            Err(refused) => return Ok(Err(refused)),
        };
        let _permit = match self.admit(&checked.granted).await {
            Ok(permit) => permit,
            Err(limited) => return Ok(Err(limited)),
        };
        let headers = request.headers.into_iter().map(|h| (h.name, h.value)).collect();
        let sent = checked
            .client
            .send(Request { method: m, path: &checked.path, query: checked.query.as_deref(), headers, body: request.body }, self.deadline())
            .await;
        let (url, response) = match sent {
            Ok(sent) => sent,
            Err(SendError::Unavailable(message)) => {
                metrics().backend_error(&self.returner, "http");
                return Ok(Err(GuestError::Backend(message)));
            }
            Err(SendError::TooLarge(message)) => {
                metrics().limited(&self.returner, "http_response_bytes");
                return Ok(Err(GuestError::Limit(message)));
            }
        };
        let response = Response {
            status: response.status,
            headers: response.headers.into_iter().map(|(name, value)| Header { name, value }).collect(),
            body: response.body,
        };
        if let Err(refused) = self.check_redirect(m, &checked, &url, &response) {
            return Ok(Err(refused));
        }
        if response.status >= 500 || response.status == 429 {
            metrics().backend_error(&self.returner, "http");
        }
        Ok(Ok(response))
    }
}
