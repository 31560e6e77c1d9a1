//! The etcd grant check: which operations a returner may use, how a key it
//! names relative to its root becomes a key in etcd, and the longest lease
//! it may ask for. Pure logic, so every escape is pinned by a unit test.
//!
//! The root is a directory-like prefix: a relative key `k` becomes
//! `root + "/" + k`, so `/salt/return` can never reach `/salt/return2`, and
//! a range read covers `root + "/" + prefix` up to the next prefix, which
//! stays inside the root.

use std::fmt;

use super::config::{EtcdGrant, EtcdOp};

/// The longest relative key a guest may name, in bytes. etcd accepts keys up
/// to its request limit; Salt's keys (`jobs/<jid>/<minion>/<field>`) are far
/// shorter, and a cap keeps audit lines and error messages bounded.
pub const MAX_KEY_BYTES: usize = 1024;

/// Why a key or TTL was refused. Each becomes a `denied` error and one
/// audit event: the guest asked for something its grant does not cover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The grant does not include the operation's class.
    OpNotGranted(EtcdOp),
    /// The key is empty (only a prefix may be empty: the whole root).
    Empty,
    /// The key holds a control character (NUL included).
    ControlChar,
    /// The key is longer than [`MAX_KEY_BYTES`].
    TooLong(usize),
    /// The key starts with `/`, or has an empty, `.` or `..` segment.
    BadSegment,
    /// A lease was asked for but the grant sets no `max_ttl_seconds`.
    TtlNotGranted(u32),
    /// A lease longer than the grant's `max_ttl_seconds`.
    TtlOverMax { asked: u32, max: u64 },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::OpNotGranted(op) => write!(f, "the grant does not include `{}`", op.name()),
            Refusal::Empty => f.write_str("the key is empty"),
            Refusal::ControlChar => f.write_str("the key holds a control character"),
            Refusal::TooLong(n) => write!(f, "the key is {n} bytes, over the most, {MAX_KEY_BYTES}"),
            Refusal::BadSegment => f.write_str("the key starts with `/` or has an empty, `.` or `..` segment"),
            Refusal::TtlNotGranted(t) => {
                write!(f, "a TTL of {t} s was asked but the grant sets no max_ttl_seconds")
            }
            Refusal::TtlOverMax { asked, max } => {
                write!(f, "a TTL of {asked} s is over the grant's max_ttl_seconds of {max}")
            }
        }
    }
}

/// `root` as written in a grant, normalised: trailing `/` removed. A root
/// must be non-empty, start with `/`, hold no control character and no
/// `.` / `..` / empty segment.
pub fn normalise_root(root: &str) -> Result<String, String> {
    let trimmed = root.trim_end_matches('/');
    if !root.starts_with('/') {
        return Err(format!("`{root}` must start with `/`, e.g. `/salt/return`"));
    }
    if trimmed.is_empty() {
        return Err("the root `/` would grant the whole keyspace; name a prefix such as `/salt/return`".into());
    }
    if trimmed.chars().any(char::is_control) {
        return Err("the root must not hold control characters".into());
    }
    if trimmed[1..].split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(format!("`{root}` has an empty, `.` or `..` segment"));
    }
    Ok(trimmed.to_owned())
}

/// The operation class a WIT function needs.
pub fn check_op(grant: &EtcdGrant, op: EtcdOp) -> Result<(), Refusal> {
    if grant.ops.contains(&op) { Ok(()) } else { Err(Refusal::OpNotGranted(op)) }
}

/// The lease a call asks for, against the grant's maximum.
pub fn check_ttl(grant: &EtcdGrant, ttl: Option<u32>) -> Result<(), Refusal> {
    match (ttl, grant.max_ttl_seconds) {
        (None, _) => Ok(()),
        (Some(t), None) => Err(Refusal::TtlNotGranted(t)),
        (Some(t), Some(max)) if u64::from(t) > max => Err(Refusal::TtlOverMax { asked: t, max }),
        (Some(_), Some(_)) => Ok(()),
    }
}

/// The etcd key of relative `key` under normalised `root`.
pub fn key(root: &str, key: &str) -> Result<Vec<u8>, Refusal> {
    if key.is_empty() {
        return Err(Refusal::Empty);
    }
    check_shape(key)?;
    if key.ends_with('/') {
        return Err(Refusal::BadSegment);
    }
    Ok(join(root, key))
}

/// The etcd range `[start, end)` of every key under relative `prefix`.
/// An empty prefix is the whole root; a trailing `/` is allowed.
pub fn range(root: &str, prefix: &str) -> Result<(Vec<u8>, Vec<u8>), Refusal> {
    if !prefix.is_empty() {
        check_shape(prefix.strip_suffix('/').unwrap_or(prefix))?;
        if prefix.ends_with("//") {
            return Err(Refusal::BadSegment);
        }
    }
    let start = join(root, prefix);
    let end = range_end(&start);
    Ok((start, end))
}

fn check_shape(key: &str) -> Result<(), Refusal> {
    if key.len() > MAX_KEY_BYTES {
        return Err(Refusal::TooLong(key.len()));
    }
    if key.chars().any(char::is_control) {
        return Err(Refusal::ControlChar);
    }
    if key.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(Refusal::BadSegment);
    }
    Ok(())
}

fn join(root: &str, key: &str) -> Vec<u8> {
    let mut full = Vec::with_capacity(root.len() + 1 + key.len());
    full.extend_from_slice(root.as_bytes());
    full.push(b'/');
    full.extend_from_slice(key.as_bytes());
    full
}

/// The smallest key greater than every key starting with `start`: etcd's
/// prefix end (the last byte below 0xff incremented, the rest dropped).
/// `start` always ends in an ASCII byte here (`/` or a UTF-8 key's byte),
/// and never is all 0xff, since it begins with the root's `/`.
fn range_end(start: &[u8]) -> Vec<u8> {
    let mut end = start.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Unreachable for a key starting with `/`; `\0` as the end means "to the
    // end of the keyspace" in etcd, so never fall back to it.
    start.to_vec()
}

/// A key as it may appear in a message or an audit line: escaped (no raw
/// control characters reach a log) and cut to a readable length.
pub fn shown(key: &str) -> String {
    const SHOWN_CHARS: usize = 120;
    let mut out: String = key.chars().take(SHOWN_CHARS).flat_map(char::escape_debug).collect();
    if key.chars().count() > SHOWN_CHARS {
        out.push_str(&format!("... ({} bytes)", key.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "/salt/return";

    fn grant(ops: &[EtcdOp], max_ttl: Option<u64>) -> EtcdGrant {
        EtcdGrant {
            profile: "p".into(),
            root: ROOT.into(),
            ops: ops.to_vec(),
            max_ttl_seconds: max_ttl,
            read_profile: None,
            write_profile: None,
        }
    }

    fn full(k: &str) -> String {
        String::from_utf8(key(ROOT, k).unwrap()).unwrap()
    }

    #[test]
    fn keys_live_under_root_slash() {
        assert_eq!(full("minions/n1"), "/salt/return/minions/n1");
        assert_eq!(full("jobs/20261123084300320186/n1/return"), "/salt/return/jobs/20261123084300320186/n1/return");
        assert_eq!(full("jobs/1/.load.p"), "/salt/return/jobs/1/.load.p");
        assert_eq!(full("2"), "/salt/return/2", "`/salt/return2` cannot be named");
        assert_eq!(full("a..b/c.d"), "/salt/return/a..b/c.d", "dots inside a segment are fine");
    }

    #[test]
    fn escapes_are_refused() {
        assert_eq!(key(ROOT, ""), Err(Refusal::Empty));
        assert_eq!(key(ROOT, "a\0b"), Err(Refusal::ControlChar));
        assert_eq!(key(ROOT, "a\nb"), Err(Refusal::ControlChar));
        for bad in ["..", "../return2/x", "a/../../b", "./a", "a/.", "/abs", "a//b", "a/", "/"] {
            assert_eq!(key(ROOT, bad), Err(Refusal::BadSegment), "{bad:?}");
        }
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert_eq!(key(ROOT, &long), Err(Refusal::TooLong(MAX_KEY_BYTES + 1)));
        assert!(key(ROOT, &"k".repeat(MAX_KEY_BYTES)).is_ok());
    }

    #[test]
    fn ranges_stay_inside_the_root() {
        let (start, end) = range(ROOT, "").unwrap();
        assert_eq!(start, b"/salt/return/");
        assert_eq!(end, b"/salt/return0", "`/` + 1: `/salt/return2` and `/salt/return0x` sort outside");
        let inside = |k: &[u8]| k >= start.as_slice() && k < end.as_slice();
        assert!(!inside(b"/salt/return2/x") && !inside(b"/salt/return") && !inside(b"/salt/return0"));
        assert!(inside(b"/salt/return/x") && inside(b"/salt/return/\xff\xff"));
        let (start, end) = range(ROOT, "jobs/").unwrap();
        assert_eq!((start.as_slice(), end.as_slice()), (b"/salt/return/jobs/".as_slice(), b"/salt/return/jobs0".as_slice()));
        let (start, end) = range(ROOT, "jobs").unwrap();
        assert_eq!((start.as_slice(), end.as_slice()), (b"/salt/return/jobs".as_slice(), b"/salt/return/jobt".as_slice()));
        let (_, end) = range(ROOT, "é").unwrap();
        assert_eq!(end, b"/salt/return/\xc3\xaa");
    }

    #[test]
    fn range_escapes_are_refused() {
        for bad in ["..", "../", "a/..", "a//", "/", "//", "./"] {
            assert!(range(ROOT, bad).is_err(), "{bad:?}");
        }
        assert_eq!(range(ROOT, "a\0"), Err(Refusal::ControlChar));
    }

    #[test]
    fn ops_are_denied_unless_granted() {
        let g = grant(&[EtcdOp::Read], None);
        assert_eq!(check_op(&g, EtcdOp::Read), Ok(()));
        assert_eq!(check_op(&g, EtcdOp::Write), Err(Refusal::OpNotGranted(EtcdOp::Write)));
        assert_eq!(check_op(&g, EtcdOp::Delete), Err(Refusal::OpNotGranted(EtcdOp::Delete)));
        assert!(check_op(&grant(&[], None), EtcdOp::Read).is_err());
    }

    #[test]
    fn ttl_needs_a_max_and_stays_under_it() {
        assert_eq!(check_ttl(&grant(&[], None), None), Ok(()));
        assert_eq!(check_ttl(&grant(&[], None), Some(1)), Err(Refusal::TtlNotGranted(1)));
        let g = grant(&[], Some(60));
        assert_eq!(check_ttl(&g, Some(60)), Ok(()));
        assert_eq!(check_ttl(&g, Some(61)), Err(Refusal::TtlOverMax { asked: 61, max: 60 }));
    }

    #[test]
    fn roots_are_normalised_and_checked() {
        assert_eq!(normalise_root("/salt/return/").unwrap(), "/salt/return");
        assert_eq!(normalise_root("/salt/return").unwrap(), "/salt/return");
        assert!(normalise_root("salt").is_err());
        assert!(normalise_root("/").is_err());
        assert!(normalise_root("").is_err());
        assert!(normalise_root("/a/../b").is_err());
        assert!(normalise_root("/a//b").is_err());
        assert!(normalise_root("/a\0").is_err());
    }

    #[test]
    fn shown_escapes_and_cuts() {
        assert_eq!(shown("a\0b"), "a\\0b");
        let long = shown(&"x".repeat(5000));
        assert!(long.len() < 200 && long.ends_with("(5000 bytes)"), "{long}");
    }
}
