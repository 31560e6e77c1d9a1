//! Keys and values in etcd, confined to the prefix the returner was granted.
//!
//! Keys are relative to the granted root (`jobs/<jid>/<minion>` rather than
//! `/salt/return/jobs/...`): a returner cannot name a key outside it.
//! Without an etcd grant every call answers [`Error::Denied`](crate::Error::Denied).

use crate::error::Result;
use crate::wit::salt::returner::etcd as host;

pub use host::KeyValue;

/// The value of `key`, `None` when absent.
pub fn get(key: &str) -> Result<Option<Vec<u8>>> {
    Ok(host::get(key)?)
}

/// Keys under `prefix`, in key order, at most `limit` of them.
pub fn get_prefix(prefix: &str, limit: u32) -> Result<Vec<KeyValue>> {
    Ok(host::get_prefix(prefix, limit)?)
}

/// Write `key`, with a lease of `ttl_seconds` when given.
pub fn put(key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<()> {
    Ok(host::put(key, value, ttl_seconds)?)
}

/// Write several keys in one transaction, sharing one lease when a TTL is given.
pub fn put_many(items: &[KeyValue], ttl_seconds: Option<u32>) -> Result<()> {
    Ok(host::put_many(items, ttl_seconds)?)
}

/// Write each of `batches` as a transaction of its own, all sharing one
/// lease when a TTL is given. The host sends them together, so etcd commits
/// them in as few rounds as it can; they may be applied in any order, and on
/// an error any of them may have been applied: for writes that are harmless
/// to repeat (a batch of returns, written again on redelivery). Each batch
/// must fit etcd's limits on one transaction (`--max-txn-ops`, 128 by
/// default, and `--max-request-bytes`).
pub fn put_batches(batches: &[Vec<KeyValue>], ttl_seconds: Option<u32>) -> Result<()> {
    Ok(host::put_batches(batches, ttl_seconds)?)
}

/// Write `key` only if it does not exist yet; `true` when this call wrote it.
pub fn put_if_absent(key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<bool> {
    Ok(host::put_if_absent(key, value, ttl_seconds)?)
}

/// Delete `key`, or every key under it when `prefix` is true; the number deleted.
pub fn delete(key: &str, prefix: bool) -> Result<u64> {
    Ok(host::delete(key, prefix)?)
}
