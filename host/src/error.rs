//! The outcome of a failed call, as the ingest API and the CLI report it.

use std::fmt;

use crate::bindings::GuestError;

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
        }
    }
}

/// A failed call: a kind and a message naming the problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// One line naming the problem.
    pub message: String,
}

impl CallError {
    /// A failure of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }

    /// The request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    /// An error value the guest returned.
    pub fn from_guest(returner: &str, function: &str, e: GuestError) -> Self {
        match e {
            GuestError::Denied(m) => Self::new(ErrorKind::Denied, m),
            GuestError::Backend(m) => Self::new(ErrorKind::Backend, m),
            GuestError::Invalid(m) => Self::new(ErrorKind::Invalid, m),
            GuestError::NotFound(m) => Self::new(ErrorKind::GuestNotFound, m),
            // Salt's loader words a missing function this way.
            GuestError::Unsupported(m) => Self::new(
                ErrorKind::Unsupported,
                format!("'{returner}.{function}' is not available. ({m})"),
            ),
            GuestError::Limit(m) => Self::new(ErrorKind::Limit, m),
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

impl std::error::Error for CallError {}
