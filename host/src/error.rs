//! The outcome of a failed call, as the ingest API and the CLI report it.

use std::fmt;

use crate::bindings::GuestError;
use crate::guest_text;

/// The most bytes of a guest's own error text the host keeps: the HTTP
/// answer and the log line quote at most this much, then say how much was
/// cut. A guest answering a 50 MB error cannot make the host send or log
/// 50 MB.
pub const MAX_GUEST_ERROR_BYTES: usize = 4 * 1024;

/// What kind of failure a call met; the wire name is [`ErrorKind::as_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is malformed (JSON, types, arguments).
    BadRequest,
    /// Missing or wrong bearer token.
    Unauthorized,
    /// Unknown returner or function.
    NotFound,
    /// The body is over the configured limit.
    PayloadTooLarge,
    /// A capability check refused what the guest tried (guest's answer).
    Denied,
    /// A backend failed (guest's answer).
    Backend,
    /// The guest found its arguments invalid (guest's answer).
    Invalid,
    /// The guest answered that the thing asked for does not exist.
    GuestNotFound,
    /// The returner does not implement the function.
    Unsupported,
    /// A limit was hit: concurrency, size (host's or guest's answer).
    Limit,
    /// The guest trapped or panicked.
    Trap,
    /// The call ran past its deadline.
    Deadline,
    /// The guest hit its memory cap.
    MemoryLimit,
    /// The guest answered with something that is not what the contract says
    /// (e.g. invalid JSON).
    BadOutput,
    /// A fault of the host itself.
    Internal,
    /// A read waited past its deadline for earlier writes to be delivered.
    Pending,
    /// The spool has no room for the write (`server.spool.max_bytes`, or the disk).
    SpoolFull,
    /// The host is shutting down.
    Unavailable,
}

impl ErrorKind {
    /// The name used on the wire: `{"error": {"kind": ...}}`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::NotFound => "not_found",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::Denied => "denied",
            ErrorKind::Backend => "backend",
            ErrorKind::Invalid => "invalid",
            ErrorKind::GuestNotFound => "guest_not_found",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Limit => "limit",
            ErrorKind::Trap => "trap",
            ErrorKind::Deadline => "deadline",
            ErrorKind::MemoryLimit => "memory_limit",
            ErrorKind::BadOutput => "bad_output",
            ErrorKind::Internal => "internal",
            ErrorKind::Pending => "pending",
            ErrorKind::SpoolFull => "spool_full",
            ErrorKind::Unavailable => "unavailable",
        }
    }

    /// The HTTP status the ingest API answers with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::NotFound => 404,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::Denied => 403,
            ErrorKind::Backend => 502,
            ErrorKind::Invalid => 422,
            ErrorKind::GuestNotFound => 404,
            ErrorKind::Unsupported => 501,
            ErrorKind::Limit => 429,
            ErrorKind::Trap => 500,
            ErrorKind::Deadline => 504,
            ErrorKind::MemoryLimit => 507,
            ErrorKind::BadOutput => 502,
            ErrorKind::Internal => 500,
            ErrorKind::Pending => 503,
            ErrorKind::SpoolFull => 507,
            ErrorKind::Unavailable => 503,
        }
    }
}

/// A failed call: a kind and a message naming the problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// One line naming the problem: control characters are escaped.
    pub message: String,
    /// The guest's own code caused it (a trap, its memory cap, computing
    /// past its deadline): the same call would fail the same way again.
    /// Not on the wire; the spool's delivery does not retry such a write.
    pub by_the_guest: bool,
}

impl CallError {
    /// A failure of `kind`. The message is made one line: it often quotes a
    /// guest (its stderr, a name it chose) or a request, and is logged.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let message = message.into();
        let escaped = match guest_text::one_line(&message) {
            std::borrow::Cow::Borrowed(_) => None,
            std::borrow::Cow::Owned(escaped) => Some(escaped),
        };
        Self { kind, message: escaped.unwrap_or(message), by_the_guest: false }
    }

    /// The same error, marked as the guest's own doing.
    pub fn by_the_guest(self) -> Self {
        Self { by_the_guest: true, ..self }
    }

    /// The request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    /// An error value the guest returned; its text is cut to
    /// [`MAX_GUEST_ERROR_BYTES`].
    pub fn from_guest(returner: &str, function: &str, e: GuestError) -> Self {
        let said = |m: String| guest_text::bounded(&m, MAX_GUEST_ERROR_BYTES);
        let (kind, message) = match e {
            GuestError::Denied(m) => (ErrorKind::Denied, said(m)),
            GuestError::Backend(m) => (ErrorKind::Backend, said(m)),
            GuestError::Invalid(m) => (ErrorKind::Invalid, said(m)),
            GuestError::NotFound(m) => (ErrorKind::GuestNotFound, said(m)),
            // Salt's loader words a missing function this way.
            GuestError::Unsupported(m) => {
                (ErrorKind::Unsupported, format!("'{returner}.{function}' is not available. ({})", said(m)))
            }
            GuestError::Limit(m) => (ErrorKind::Limit, said(m)),
        };
        // Already one line: `bounded` escapes as it cuts.
        Self { kind, message, by_the_guest: false }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

impl std::error::Error for CallError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_guest_error_is_cut_to_the_cap_on_one_line() {
        let forged = format!("boom\n2026-11-30T00:00:00.000000Z  WARN returner_host::audit: forged{}", "x".repeat(50 * 1024 * 1024));
        let e = CallError::from_guest("r", "get_load", GuestError::Backend(forged.clone()));
        assert_eq!(e.kind, ErrorKind::Backend);
        assert!(e.message.len() <= MAX_GUEST_ERROR_BYTES + 64, "{}", e.message.len());
        assert!(e.message.starts_with("boom\\n2026-11-30"), "{}", &e.message[..40]);
        assert!(!e.message.contains('\n'));
        assert!(e.message.ends_with(" bytes cut)"), "{}", &e.message[e.message.len() - 40..]);
        let e = CallError::from_guest("r", "get_fun", GuestError::Unsupported("a\rb".into()));
        assert_eq!(e.message, "'r.get_fun' is not available. (a\\rb)");
    }

    #[test]
    fn every_message_is_one_line() {
        assert_eq!(CallError::new(ErrorKind::Trap, "panicked\nnext").message, "panicked\\nnext");
    }
}
