//! The ingest API: HTTP/1.1 + JSON over a unix socket (mode 0600) or
//! loopback TCP with a bearer token. `POST /v1/returners/{name}/{function}`
//! with a JSON object of Salt's arguments answers `200 {"result": ...}` or a
//! 4xx/5xx `{"error": {"kind", "message"}}`; `GET /v1/returners` lists each
//! returner's module and sha256; `GET /healthz`; `GET /metrics`. Bad input is
//! answered and the server keeps serving.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt as _, Limited};
use serde_json::{Value, json};

use crate::config::{Listen, ServerConfig};
use crate::dispatch::ReturnerHost;
use crate::error::{CallError, ErrorKind};

struct App {
    host: Arc<ReturnerHost>,
    token: Option<String>,
    max_body_bytes: usize,
}

/// The router, for serving or for tests that drive it directly.
pub fn router(host: Arc<ReturnerHost>, token: Option<String>, max_body_bytes: usize) -> Router {
    let app = Arc::new(App { host, token, max_body_bytes });
    Router::new()
        .route("/v1/returners/{name}/{function}", post(call))
        .route("/v1/returners", get(returners))
        .route("/v1/spool", get(spool_status))
        .route("/v1/spool/{name}/dead-letters", get(dead_letters))
        .route("/v1/spool/{name}/dead-letters/{action}", post(dead_letters_action))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app)
}

/// Read the bearer token from `path`: one line, surrounding whitespace ignored.
pub fn read_token(path: &Path) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(path).with_context(|| format!("reading the token file {}", path.display()))?;
    let token = token.trim().to_owned();
    if token.is_empty() {
        bail!("the token file {} is empty", path.display());
    }
    Ok(token)
}

/// Serve until `shutdown` resolves.
pub async fn serve(
    host: Arc<ReturnerHost>,
    server: &ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let token = server.token_file.as_deref().map(read_token).transpose()?;
    let app = router(host.clone(), token, server.max_body_bytes);
    let names: Vec<&str> = host.names().collect();
    match &server.listen {
        Listen::Unix(path) => {
            let listener = bind_unix(path)?;
            tracing::info!(listen = %server.listen, returners = ?names, "serving");
            let result = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
            let _ = std::fs::remove_file(path);
            result.context("serving on the unix socket")
        }
        Listen::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding tcp:{addr}"))?;
            tracing::info!(listen = %server.listen, returners = ?names, "serving");
            axum::serve(listener, app).with_graceful_shutdown(shutdown).await.context("serving on tcp")
        }
    }
}

/// Bind a unix socket with mode 0600, replacing a stale socket but never a
/// live one or a file that is not a socket. The socket is bound inside a
/// fresh directory only this user can enter, made 0600 there, then renamed
/// into place: no other user can connect to it at any moment, whatever the
/// process's umask, and no other thread's files are touched (a umask is
/// process-wide).
fn bind_unix(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt as _;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    crate::config::create_private_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mode = std::fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?.permissions().mode();
    if mode & 0o002 != 0 && mode & 0o1000 == 0 {
        // Anyone could remove the socket and listen in its place, and be
        // handed every return Salt sends.
        bail!(
            "{} is writable by every user and not sticky (mode {:o}); put the socket in a directory only the host's user can write",
            dir.display(),
            mode & 0o7777
        );
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            bail!("{} exists and is not a socket; refusing to replace it", path.display());
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("another process is serving on {}", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let private = tempfile::Builder::new()
        .prefix(".returner-host-bind-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(dir)
        .with_context(|| format!("creating a private directory in {} to bind the socket in", dir.display()))?;
    let bound = private.path().join("sock");
    let listener = tokio::net::UnixListener::bind(&bound).with_context(|| format!("binding unix:{}", path.display()))?;
    std::fs::set_permissions(&bound, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting mode 0600 on {}", bound.display()))?;
    std::fs::rename(&bound, path).with_context(|| format!("moving the socket into place at {}", path.display()))?;
    Ok(listener)
}

async fn call(
    State(app): State<Arc<App>>,
    UrlPath((name, function)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(e) = authorize(&app, &headers) {
        return error_response(&e);
    }
    let body = match Limited::new(body, app.max_body_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return error_response(&CallError::new(
                ErrorKind::PayloadTooLarge,
                format!("the request body is over the limit of {} bytes (server.max_body_bytes)", app.max_body_bytes),
            ));
        }
        Err(e) => return error_response(&CallError::bad_request(format!("cannot read the request body: {e}"))),
    };
    match app.host.dispatch(&name, &function, &body).await {
        Ok(result) => (StatusCode::OK, axum::Json(json!({ "result": result }))).into_response(),
        Err(e) => error_response(&e),
    }
}

fn authorize(app: &App, headers: &HeaderMap) -> Result<(), CallError> {
    let Some(token) = &app.token else { return Ok(()) };
    let given = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| CallError::new(ErrorKind::Unauthorized, "missing `Authorization: Bearer <token>` header"))?
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| CallError::new(ErrorKind::Unauthorized, "the Authorization header must be `Bearer <token>`"))?;
    if !constant_time_eq(given.trim().as_bytes(), token.as_bytes()) {
        return Err(CallError::new(ErrorKind::Unauthorized, "wrong bearer token"));
    }
    Ok(())
}

/// Compare without an early exit, so the time taken does not reveal how much
/// of the token a guess got right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn healthz(State(app): State<Arc<App>>) -> Response {
    let names: Vec<&str> = app.host.names().collect();
    (StatusCode::OK, axum::Json(json!({ "status": "ok", "returners": names }))).into_response()
}

/// Each returner's module as it serves now: after a reload, the new sha256.
async fn returners(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&app, &headers) {
        return error_response(&e);
    }
    let listing: serde_json::Map<String, Value> = app
        .host
        .names()
        .filter_map(|name| {
            let r = app.host.returner(name)?;
            let info = r.module().info();
            let about = json!({ "module": r.config().module.to_string(), "sha256": info.sha256, "exports": info.exports });
            Some((name.to_owned(), about))
        })
        .collect();
    (StatusCode::OK, axum::Json(json!({ "returners": listing }))).into_response()
}

/// Each queue of the spool: depth, bytes, oldest age, dead letters, last error.
async fn spool_status(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let spool = match authorized_spool(&app, &headers) {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    (StatusCode::OK, axum::Json(json!({ "queues": spool.status().await }))).into_response()
}

/// The dead letters of one returner.
async fn dead_letters(State(app): State<Arc<App>>, UrlPath(name): UrlPath<String>, headers: HeaderMap) -> Response {
    let spool = match authorized_spool(&app, &headers) {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    match spool.dead_letters(&name).await {
        Ok(letters) => (StatusCode::OK, axum::Json(json!({ "dead_letters": letters }))).into_response(),
        Err(e) => error_response(&e),
    }
}

/// `retry` or `drop` dead letters of one returner: all, or `{"seqs": [...]}`.
async fn dead_letters_action(
    State(app): State<Arc<App>>,
    UrlPath((name, action)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let spool = match authorized_spool(&app, &headers) {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Which {
        seqs: Option<Vec<u64>>,
    }
    let which = if body.iter().all(u8::is_ascii_whitespace) {
        Which { seqs: None }
    } else {
        match serde_json::from_slice::<Which>(&body) {
            Ok(w) => w,
            Err(e) => {
                return error_response(&CallError::bad_request(format!(
                    "the body must be empty (all dead letters) or {{\"seqs\": [numbers]}}: {e}"
                )));
            }
        }
    };
    let done = match action.as_str() {
        "retry" => spool.retry_dead(&name, which.seqs).await,
        "drop" => spool.drop_dead(&name, which.seqs).await,
        other => Err(CallError::new(ErrorKind::NotFound, format!("no dead-letter action `{other}`; expected retry or drop"))),
    };
    match done {
        Ok(n) => (StatusCode::OK, axum::Json(json!({ "result": n }))).into_response(),
        Err(e) => error_response(&e),
    }
}

fn authorized_spool<'a>(app: &'a App, headers: &HeaderMap) -> Result<&'a Arc<crate::spool::Spool>, CallError> {
    authorize(app, headers)?;
    app.host.spool().ok_or_else(|| CallError::new(ErrorKind::NotFound, "this host serves without a spool"))
}

async fn metrics() -> Response {
    let body = crate::metrics::metrics().encode();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

async fn not_found() -> Response {
    error_response(&CallError::new(
        ErrorKind::NotFound,
        "no such endpoint; use POST /v1/returners/{name}/{function}, GET /v1/returners, GET /v1/spool, \
         GET /v1/spool/{name}/dead-letters, POST /v1/spool/{name}/dead-letters/{retry|drop}, GET /healthz or GET /metrics",
    ))
}

async fn method_not_allowed() -> Response {
    let mut r = error_response(&CallError::bad_request("method not allowed; returner calls are POST"));
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}

fn error_response(e: &CallError) -> Response {
    let status = StatusCode::from_u16(e.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = json!({ "error": { "kind": e.kind.as_str(), "message": e.message } });
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
