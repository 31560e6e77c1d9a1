//! The error every SDK call and every returner function answers with.

use crate::wit::salt::returner::types::Error as WitError;

/// Why a returner function or a host call did not succeed.
///
/// It mirrors the WIT `error` variant one to one, so the host sees exactly
/// the kind the returner chose. Each case carries a message for humans.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A capability check refused the operation (no grant, or outside it).
    #[error("denied: {0}")]
    Denied(String),
    /// The backend (etcd, MySQL, the filesystem) failed.
    #[error("backend: {0}")]
    Backend(String),
    /// The arguments were malformed or out of range.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The named thing does not exist, where absence is an error.
    #[error("not found: {0}")]
    NotFound(String),
    /// The returner does not implement this function.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A limit was hit (size, count, time).
    #[error("limit: {0}")]
    Limit(String),
}

/// `std::result::Result` with the SDK's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The answer of a returner function that is not implemented; `function`
    /// is Salt's name for it, e.g. `get_fun`.
    pub fn unsupported(function: &str) -> Self {
        Error::Unsupported(format!("{function} is not implemented by this returner"))
    }

    /// Invalid input, naming the offending field or argument.
    pub fn invalid(field: &str, problem: impl std::fmt::Display) -> Self {
        Error::Invalid(format!("{field}: {problem}"))
    }

    /// The kind as the host names it (`denied`, `backend`, `invalid`,
    /// `not_found`, `unsupported`, `limit`), and the message.
    pub fn parts(&self) -> (&'static str, &str) {
        match self {
            Error::Denied(m) => ("denied", m),
            Error::Backend(m) => ("backend", m),
            Error::Invalid(m) => ("invalid", m),
            Error::NotFound(m) => ("not_found", m),
            Error::Unsupported(m) => ("unsupported", m),
            Error::Limit(m) => ("limit", m),
        }
    }

    /// The same error, of the same kind, with `what: ` before its message:
    /// e.g. which return of a batch it is about (`rets[3]`).
    pub fn context(self, what: impl std::fmt::Display) -> Self {
        let prefixed = |message: String| format!("{what}: {message}");
        match self {
            Error::Denied(m) => Error::Denied(prefixed(m)),
            Error::Backend(m) => Error::Backend(prefixed(m)),
            Error::Invalid(m) => Error::Invalid(prefixed(m)),
            Error::NotFound(m) => Error::NotFound(prefixed(m)),
            Error::Unsupported(m) => Error::Unsupported(prefixed(m)),
            Error::Limit(m) => Error::Limit(prefixed(m)),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        match err.kind() {
            std::io::ErrorKind::PermissionDenied => Error::Denied(err.to_string()),
            std::io::ErrorKind::NotFound => Error::NotFound(err.to_string()),
            _ => Error::Backend(err.to_string()),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::Invalid(err.to_string())
    }
}

impl From<WitError> for Error {
    fn from(err: WitError) -> Self {
        match err {
            WitError::Denied(m) => Error::Denied(m),
            WitError::Backend(m) => Error::Backend(m),
            WitError::Invalid(m) => Error::Invalid(m),
            WitError::NotFound(m) => Error::NotFound(m),
            WitError::Unsupported(m) => Error::Unsupported(m),
            WitError::Limit(m) => Error::Limit(m),
        }
    }
}

impl From<Error> for WitError {
    fn from(err: Error) -> Self {
        match err {
            Error::Denied(m) => WitError::Denied(m),
            Error::Backend(m) => WitError::Backend(m),
            Error::Invalid(m) => WitError::Invalid(m),
            Error::NotFound(m) => WitError::NotFound(m),
            Error::Unsupported(m) => WitError::Unsupported(m),
            Error::Limit(m) => WitError::Limit(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{self, ErrorKind};

    #[test]
    fn io_errors_map_to_the_matching_kind_and_keep_the_message() {
        let denied = Error::from(io::Error::new(ErrorKind::PermissionDenied, "nope"));
        assert_eq!(denied, Error::Denied("nope".into()));
        let missing = Error::from(io::Error::new(ErrorKind::NotFound, "gone"));
        assert_eq!(missing, Error::NotFound("gone".into()));
        let other = Error::from(io::Error::new(ErrorKind::StorageFull, "disk full"));
        assert_eq!(other, Error::Backend("disk full".into()));
    }

    #[test]
    fn json_errors_are_invalid() {
        let err = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        assert!(matches!(Error::from(err), Error::Invalid(_)));
    }

    #[test]
    fn context_keeps_the_kind_and_prefixes_the_message() {
        assert_eq!(Error::Backend("down".into()).context("rets[2]"), Error::Backend("rets[2]: down".into()));
        assert_eq!(Error::invalid("jid", "empty").context("rets[0]"), Error::Invalid("rets[0]: jid: empty".into()));
    }

    #[test]
    fn parts_name_the_kind_as_the_host_answers_it() {
        assert_eq!(Error::NotFound("x".into()).parts(), ("not_found", "x"));
        assert_eq!(Error::Limit("too many".into()).parts(), ("limit", "too many"));
        assert_eq!(Error::Denied("no".into()).parts(), ("denied", "no"));
    }

    #[test]
    fn unsupported_names_the_function() {
        assert_eq!(
            Error::unsupported("get_fun").to_string(),
            "unsupported: get_fun is not implemented by this returner"
        );
    }
}
