//! The `salt:returner/etcd` host functions. The first statement of each is
//! the grant check (operation, key confined to the root, lease under the
//! maximum); a refusal is `denied` naming the key and the operation, with
//! one audit event. Expected failures are WIT errors; nothing here traps.
//!
//! Writes with a TTL share the call's lease of that TTL, granted on first
//! use: a call writing a thousand keys with one TTL makes one lease, not a
//! thousand.

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt as _;

use super::client::{BackendError, BoxFuture, EtcdClient};
use super::grant;
use super::{BATCHES_IN_FLIGHT, EtcdCtx, EtcdOp, MAX_BATCHES_PER_CALL, MAX_LEASES_PER_CALL, Pairs};
use crate::bindings::GuestError;
use crate::bindings::salt::returner::etcd::{self, KeyValue};
use crate::caps::audit;
use crate::metrics::metrics;

type GuestResult<T> = wasmtime::Result<Result<T, GuestError>>;

/// The outcome of a grant check: the client to use, or the denial to answer.
type Checked<T> = Result<(Arc<dyn EtcdClient>, T), GuestError>;

impl EtcdCtx {
    /// Guest's fault or admin's choice: refused. Audited once.
    fn deny(&self, operation: &str, key: &str, why: &dyn std::fmt::Display) -> GuestError {
        let shown = grant::shown(key);
        audit::denied(&self.returner, "etcd", operation, &shown);
        GuestError::Denied(format!("etcd {operation} of key `{shown}` denied for returner `{}`: {why}", self.returner))
    }

    /// The grant covers `op` and `ttl`: the grant's root and the client serving `op`.
    fn allow(&self, operation: &str, op: EtcdOp, key: &str, ttl: Option<u32>) -> Result<(&str, Arc<dyn EtcdClient>), GuestError> {
        let Some(g) = &self.grant else {
            return Err(self.deny(operation, key, &"it has no etcd grant"));
        };
        grant::check_op(g, op)
            .and_then(|()| grant::check_ttl(g, ttl))
            .map_err(|refusal| self.deny(operation, key, &refusal))?;
        let client = match op {
            EtcdOp::Read => &self.read,
            EtcdOp::Write | EtcdOp::Delete => &self.write,
        };
        // Host's fault: config validation makes every granted profile exist.
        let client = client
            .clone()
            .ok_or_else(|| GuestError::Backend(format!("etcd profile `{}` has no client", g.profile_for(op))))?;
        if ttl == Some(0) {
            // Guest's fault: a lease of 0 s is no lease.
            return Err(GuestError::Invalid("a TTL must be at least 1 second".into()));
        }
        Ok((&g.root, client))
    }

    fn check_key(&self, operation: &str, op: EtcdOp, key: &str, ttl: Option<u32>) -> Checked<Vec<u8>> {
        let (root, client) = self.allow(operation, op, key, ttl)?;
        let full = grant::key(root, key).map_err(|refusal| self.deny(operation, key, &refusal))?;
        Ok((client, full))
    }

    fn check_range(&self, operation: &str, op: EtcdOp, prefix: &str) -> Checked<(Vec<u8>, Vec<u8>)> {
        let (root, client) = self.allow(operation, op, prefix, None)?;
        let range = grant::range(root, prefix).map_err(|refusal| self.deny(operation, prefix, &refusal))?;
        Ok((client, range))
    }

    fn check_items(&self, items: Vec<KeyValue>, ttl: Option<u32>) -> Checked<Vec<(Vec<u8>, Vec<u8>)>> {
        self.check_batches("put-many", vec![items], ttl).map(|(client, mut batches)| (client, batches.pop().unwrap_or_default()))
    }

    /// The check of `put-many` (one batch) and `put-batches`: every key
    /// confined to the root, and no key written twice (within a transaction
    /// etcd would refuse it; across the transactions of one call their
    /// order is not kept, so which value stays would be chance).
    fn check_batches(&self, operation: &str, batches: Vec<Vec<KeyValue>>, ttl: Option<u32>) -> Checked<Vec<Vec<(Vec<u8>, Vec<u8>)>>> {
        let first = batches.iter().flatten().next().map(|kv| kv.key.as_str()).unwrap_or("");
        let (root, client) = self.allow(operation, EtcdOp::Write, first, ttl)?;
        let mut seen = HashSet::with_capacity(batches.iter().map(Vec::len).sum());
        let mut out = Vec::with_capacity(batches.len());
        for items in batches {
            let mut pairs = Vec::with_capacity(items.len());
            for kv in items {
                let full = grant::key(root, &kv.key).map_err(|refusal| self.deny(operation, &kv.key, &refusal))?;
                if !seen.insert(kv.key.clone()) {
                    // Guest's fault.
                    return Err(GuestError::Invalid(format!(
                        "{operation} names key `{}` twice; a call writes each key once",
                        grant::shown(&kv.key)
                    )));
                }
                pairs.push((full, kv.value));
            }
            out.push(pairs);
        }
        Ok((client, out))
    }

    /// Strip the root and its `/` from a full key read back from etcd.
    fn relative(&self, full: &[u8]) -> String {
        let root_len = self.grant.as_ref().map_or(0, |g| g.root.len() + 1);
        String::from_utf8_lossy(full.get(root_len..).unwrap_or_default()).into_owned()
    }
}

impl EtcdCtx {
    /// A backend failure as the guest's error; an unavailable etcd is counted.
    fn to_guest(&self, e: BackendError) -> GuestError {
        match e {
            BackendError::Unavailable(m) => {
                metrics().backend_error(&self.returner, "etcd");
                GuestError::Backend(m)
            }
            BackendError::Refused(m) => GuestError::Invalid(m),
            BackendError::LeaseGone(m) => GuestError::Backend(m),
        }
    }

    /// The call's lease of `ttl` seconds, granted on its first use.
    async fn lease(&mut self, client: &dyn EtcdClient, ttl: Option<u32>) -> Result<Option<i64>, GuestError> {
        let Some(ttl) = ttl else { return Ok(None) };
        if let Some(id) = self.leases.get(&ttl) {
            return Ok(Some(*id));
        }
        if self.leases.len() >= MAX_LEASES_PER_CALL {
            // Guest's fault: one call has no use for this many lifetimes.
            return Err(GuestError::Limit(format!(
                "a call may write with at most {MAX_LEASES_PER_CALL} distinct TTLs; a TTL of {ttl} s would be one more"
            )));
        }
        let id = client.grant_lease(ttl).await.map_err(|e| self.to_guest(e))?;
        self.leases.insert(ttl, id);
        Ok(Some(id))
    }

    /// Run `write` under the call's lease of `ttl`, and once more under a
    /// new lease if etcd let that one expire (a call longer than its TTL).
    async fn leased<'c, T>(
        &mut self,
        client: &'c dyn EtcdClient,
        ttl: Option<u32>,
        write: impl Fn(Option<i64>) -> BoxFuture<'c, Result<T, BackendError>>,
    ) -> Result<T, GuestError> {
        let lease = self.lease(client, ttl).await?;
        match (write(lease).await, ttl) {
            (Err(BackendError::LeaseGone(_)), Some(ttl)) => {
                self.leases.remove(&ttl);
                let lease = self.lease(client, Some(ttl)).await?;
                write(lease).await.map_err(|e| self.to_guest(e))
            }
            (written, _) => written.map_err(|e| self.to_guest(e)),
        }
    }
}

/// Each of `batches` as a transaction under `lease`, at most
/// [`BATCHES_IN_FLIGHT`] at once; the first failure ends the call (what is
/// in flight then is dropped, and may or may not have been applied).
fn send_batches<'c>(client: &'c dyn EtcdClient, batches: &'c [Arc<Pairs>], lease: Option<i64>) -> BoxFuture<'c, Result<(), BackendError>> {
    let sends: Vec<BoxFuture<'c, Result<(), BackendError>>> = batches.iter().map(|items| client.put_many(items.clone(), lease)).collect();
    Box::pin(async move {
        let mut sent = futures::stream::iter(sends).buffer_unordered(BATCHES_IN_FLIGHT);
        while let Some(result) = sent.next().await {
            result?;
        }
        Ok(())
    })
}

impl etcd::Host for EtcdCtx {
    #[tracing::instrument(level = "debug", skip_all, fields(returner = %self.returner))]
    async fn get(&mut self, key: String) -> GuestResult<Option<Vec<u8>>> {
        if let Err(e) = self.turn.wait().await {
            return Ok(Err(e));
        }
        let (client, full) = match self.check_key("get", EtcdOp::Read, &key, None) {
            Ok(checked) => checked,
            Err(refused) => return Ok(Err(refused)),
        };
        Ok(client.get(full).await.map_err(|e| self.to_guest(e)))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(returner = %self.returner))]
    async fn get_prefix(&mut self, prefix: String, limit: u32) -> GuestResult<Vec<KeyValue>> {
        if let Err(e) = self.turn.wait().await {
            return Ok(Err(e));
        }
        let (client, (start, end)) = match self.check_range("get-prefix", EtcdOp::Read, &prefix) {
            Ok(checked) => checked,
            Err(refused) => return Ok(Err(refused)),
        };
        // etcd reads a limit of 0 as "no limit"; the contract says "at most 0".
        if limit == 0 {
            return Ok(Ok(Vec::new()));
        }
        Ok(client.range(start, end, limit).await.map_err(|e| self.to_guest(e)).map(|pairs| {
            pairs.into_iter().map(|(k, value)| KeyValue { key: self.relative(&k), value }).collect()
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(returner = %self.returner))]
    async fn put(&mut self, key: String, value: Vec<u8>, ttl_seconds: Option<u32>) -> GuestResult<()> {
        if let Err(e) = self.turn.wait().await {
            return Ok(Err(e));
        }
        let (client, full) = match self.check_key("put", EtcdOp::Write, &key, ttl_seconds) {
            Ok(checked) => checked,
            Err(refused) => return Ok(Err(refused)),
        };
        let items = Arc::new(vec![(full, value)]);
        Ok(self.leased(&*client, ttl_seconds, |lease| client.put_many(items.clone(), lease)).await)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(returner = %self.returner))]
    async fn put_many(&mut self, items: Vec<KeyValue>, ttl_seconds: Option<u32>) -> GuestResult<()> {
        if let Err(e) = self.turn.wait().await {
            return Ok(Err(e));
        }
        let (client, pairs) = match self.check_items(items, ttl_seconds) {
            Ok(checked) => checked,
            Err(refused) => return Ok(Err(refused)),
        };
        if pairs.is_empty() {
            return Ok(Ok(()));
        }
        let items = Arc::new(pairs);
        Ok(self.leased(&*client, ttl_seconds, |lease| client.put_many(items.clone(), lease)).await)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(returner = %self.returner, batches = batches.len()))]
    async fn put_batches(&mut self, batches: Vec<Vec<KeyValue>>, ttl_seconds: Option<u32>) -> GuestResult<()> {
        if let Err(e) = self.turn.wait().await {
            return Ok(Err(e));
        }
        if batches.len() > MAX_BATCHES_PER_CALL {
            // Guest's fault: more transactions than one call sends.
            return Ok(Err(GuestError::Limit(format!(
                "put-batches of {} transactions is over the most, {MAX_BATCHES_PER_CALL}: split it",
                batches.len()
            ))));
        }
        let (client, batches) = match self.check_batches("put-batches", batches, ttl_seconds) {
            Ok(checked) => checked,
            Err(refused) => return Ok(Err(refused)),
        };
        let batches: Vec<Arc<Pairs>> = batches.into_iter().filter(|b| !b.is_empty()).map(Arc::new).collect();
        if batches.is_empty() {
            return Ok(Ok(()));
        }
        let write = |lease| send_batches(&*client, &batches, lease);
        Ok(self.leased(&*client, ttl_seconds, write).await)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(returner = %self.returner))]
    async fn put_if_absent(&mut self, key: String, value: Vec<u8>, ttl_seconds: Option<u32>) -> GuestResult<bool> {
        if let Err(e) = self.turn.wait().await {
            return Ok(Err(e));
        }
        let (client, full) = match self.check_key("put-if-absent", EtcdOp::Write, &key, ttl_seconds) {
            Ok(checked) => checked,
            Err(refused) => return Ok(Err(refused)),
        };
        Ok(self.leased(&*client, ttl_seconds, |lease| client.put_if_absent(full.clone(), value.clone(), lease)).await)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(returner = %self.returner))]
    async fn delete(&mut self, key: String, prefix: bool) -> GuestResult<u64> {
        if let Err(e) = self.turn.wait().await {
            return Ok(Err(e));
        }
        let checked = if prefix {
            self.check_range("delete", EtcdOp::Delete, &key).map(|(c, (start, end))| (c, (start, Some(end))))
        } else {
            self.check_key("delete", EtcdOp::Delete, &key, None).map(|(c, full)| (c, (full, None)))
        };
        let (client, (start, end)) = match checked {
            Ok(checked) => checked,
            Err(refused) => return Ok(Err(refused)),
        };
        Ok(client.delete(start, end).await.map_err(|e| self.to_guest(e)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;
    use crate::bindings::salt::returner::etcd::Host as _;
    use crate::caps::etcd::{BoxFuture, EtcdBackends, EtcdGrant, Pairs};

    /// An in-memory etcd: enough to see which keys a call reaches.
    #[derive(Default)]
    struct MemoryEtcd {
        keys: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
        calls: Mutex<usize>,
        /// The TTL of each lease granted, by id (id = index + 1).
        leases: Mutex<Vec<u32>>,
        /// The lease each key was written under.
        key_leases: Mutex<BTreeMap<Vec<u8>, i64>>,
    }

    impl MemoryEtcd {
        fn touch(&self) {
            *self.calls.lock().unwrap() += 1;
        }
    }

    impl EtcdClient for MemoryEtcd {
        fn get(&self, key: Vec<u8>) -> BoxFuture<'_, Result<Option<Vec<u8>>, BackendError>> {
            self.touch();
            Box::pin(async move { Ok(self.keys.lock().unwrap().get(&key).cloned()) })
        }
        fn range(&self, start: Vec<u8>, end: Vec<u8>, limit: u32) -> BoxFuture<'_, Result<Pairs, BackendError>> {
            self.touch();
            let keys = self.keys.lock().unwrap();
            let found = keys.range(start..end).take(limit as usize).map(|(k, v)| (k.clone(), v.clone())).collect();
            Box::pin(async move { Ok(found) })
        }
        fn grant_lease(&self, ttl: u32) -> BoxFuture<'_, Result<i64, BackendError>> {
            self.touch();
            let mut leases = self.leases.lock().unwrap();
            leases.push(ttl);
            let id = leases.len() as i64;
            Box::pin(async move { Ok(id) })
        }
        fn put_many(&self, items: Arc<Pairs>, lease: Option<i64>) -> BoxFuture<'_, Result<(), BackendError>> {
            self.touch();
            if let Some(id) = lease {
                self.key_leases.lock().unwrap().extend(items.iter().map(|(k, _)| (k.clone(), id)));
            }
            self.keys.lock().unwrap().extend(items.iter().cloned());
            Box::pin(async { Ok(()) })
        }
        fn put_if_absent(&self, key: Vec<u8>, value: Vec<u8>, lease: Option<i64>) -> BoxFuture<'_, Result<bool, BackendError>> {
            self.touch();
            let mut keys = self.keys.lock().unwrap();
            let absent = !keys.contains_key(&key);
            if absent {
                if let Some(id) = lease {
                    self.key_leases.lock().unwrap().insert(key.clone(), id);
                }
                keys.insert(key, value);
            }
            Box::pin(async move { Ok(absent) })
        }
        fn delete(&self, key: Vec<u8>, end: Option<Vec<u8>>) -> BoxFuture<'_, Result<u64, BackendError>> {
            self.touch();
            let mut keys = self.keys.lock().unwrap();
            let doomed: Vec<Vec<u8>> = match end {
                Some(end) => keys.range(key..end).map(|(k, _)| k.clone()).collect(),
                None => keys.get_key_value(&key).map(|(k, _)| k.clone()).into_iter().collect(),
            };
            doomed.iter().for_each(|k| {
                keys.remove(k);
            });
            Box::pin(async move { Ok(doomed.len() as u64) })
        }
    }

    fn ctx(ops: &[EtcdOp], memory: &Arc<MemoryEtcd>) -> EtcdCtx {
        let grant = EtcdGrant {
            profile: "main".into(),
            root: "/salt/return".into(),
            ops: ops.to_vec(),
            max_ttl_seconds: Some(60),
            read_profile: None,
            write_profile: None,
        };
        let client: Arc<dyn EtcdClient> = memory.clone();
        let backends = EtcdBackends::with_clients(BTreeMap::from([("main".to_owned(), client)]));
        EtcdCtx::new(Arc::from("r"), Some(Arc::new(grant)), &backends)
    }

    fn block<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    fn kv(key: &str) -> KeyValue {
        KeyValue { key: key.into(), value: b"v".to_vec() }
    }

    #[test]
    fn granted_calls_reach_only_keys_under_the_root() {
        let memory = Arc::new(MemoryEtcd::default());
        memory.keys.lock().unwrap().insert(b"/salt/return2/x".to_vec(), b"outside".to_vec());
        let mut ctx = ctx(&[EtcdOp::Read, EtcdOp::Write, EtcdOp::Delete], &memory);
        block(async {
            ctx.put_many(vec![kv("jobs/1/n1/return"), kv("minions/n1")], Some(60)).await.unwrap().unwrap();
            assert!(ctx.put_if_absent("jobs/1/.load.p".into(), b"a".to_vec(), None).await.unwrap().unwrap());
            assert!(!ctx.put_if_absent("jobs/1/.load.p".into(), b"b".to_vec(), None).await.unwrap().unwrap());
            let all = ctx.get_prefix(String::new(), 100).await.unwrap().unwrap();
            let keys: Vec<&str> = all.iter().map(|kv| kv.key.as_str()).collect();
            assert_eq!(keys, ["jobs/1/.load.p", "jobs/1/n1/return", "minions/n1"]);
            assert_eq!(ctx.get("jobs/1/.load.p".into()).await.unwrap().unwrap(), Some(b"a".to_vec()));
            assert!(ctx.get_prefix(String::new(), 0).await.unwrap().unwrap().is_empty());
            assert_eq!(ctx.delete(String::new(), true).await.unwrap().unwrap(), 3);
        });
        let keys = memory.keys.lock().unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), [&b"/salt/return2/x".to_vec()], "outside the root untouched");
    }

    #[test]
    fn denials_never_reach_the_backend() {
        let memory = Arc::new(MemoryEtcd::default());
        let mut read_only = ctx(&[EtcdOp::Read], &memory);
        block(async {
            fn denied<T>(r: Result<T, GuestError>) -> bool {
                matches!(r, Err(GuestError::Denied(_)))
            }
            assert!(denied(read_only.put("k".into(), vec![], None).await.unwrap()));
            assert!(denied(read_only.put_many(vec![kv("k")], None).await.unwrap()));
            assert!(denied(read_only.put_if_absent("k".into(), vec![], None).await.unwrap()));
            assert!(denied(read_only.delete("k".into(), false).await.unwrap()));
            assert!(denied(read_only.get("../x".into()).await.unwrap()));
            assert!(denied(read_only.get_prefix("..".into(), 10).await.unwrap()));
            let mut writer = ctx(&[EtcdOp::Write], &memory);
            assert!(denied(writer.put("k".into(), vec![], Some(61)).await.unwrap()));
            assert!(denied(writer.put_many(vec![kv("ok"), kv("a//b")], None).await.unwrap()));
            let Err(GuestError::Denied(message)) = writer.put("x\0y".into(), vec![], None).await.unwrap() else {
                panic!("NUL key not denied")
            };
            assert!(message.contains("put") && message.contains("x\\0y"), "{message}");
            let mut none = EtcdCtx::new(Arc::from("r"), None, &EtcdBackends::default());
            let Err(GuestError::Denied(message)) = none.get("k".into()).await.unwrap() else { panic!() };
            assert!(message.contains("no etcd grant"), "{message}");
        });
        assert_eq!(*memory.calls.lock().unwrap(), 0);
    }

    #[test]
    fn put_batches_writes_each_transaction_under_one_lease_and_checks_them_all_first() {
        let memory = Arc::new(MemoryEtcd::default());
        let mut writer = ctx(&[EtcdOp::Write], &memory);
        block(async {
            let batches: Vec<Vec<KeyValue>> = (0..40).map(|b| (0..3).map(|k| kv(&format!("jobs/{b}/n{k}/return"))).collect()).collect();
            writer.put_batches(batches, Some(60)).await.unwrap().unwrap();
            // Anything wrong anywhere in the call: nothing is sent.
            let bad = vec![vec![kv("late/1")], vec![kv("late/2"), kv("../x")]];
            assert!(matches!(writer.put_batches(bad, None).await.unwrap(), Err(GuestError::Denied(m)) if m.contains("put-batches")));
            let twice = vec![vec![kv("late/1")], vec![kv("late/1")]];
            assert!(matches!(writer.put_batches(twice, None).await.unwrap(), Err(GuestError::Invalid(m)) if m.contains("twice")));
            let over = vec![vec![kv("late/1")]; MAX_BATCHES_PER_CALL + 1];
            assert!(matches!(writer.put_batches(over, None).await.unwrap(), Err(GuestError::Limit(m)) if m.contains("1025")));
            writer.put_batches(vec![vec![], vec![]], None).await.unwrap().unwrap();
        });
        let keys = memory.keys.lock().unwrap();
        assert_eq!(keys.len(), 120, "every key of the 40 transactions, and none of the refused calls");
        assert!(keys.keys().all(|k| k.starts_with(b"/salt/return/jobs/")));
        assert_eq!(*memory.leases.lock().unwrap(), [60], "one lease for the call");
        assert!(memory.key_leases.lock().unwrap().values().all(|&id| id == 1));
        assert_eq!(*memory.calls.lock().unwrap(), 41, "one lease and one transaction per batch");
    }

    #[test]
    fn guest_mistakes_are_invalid() {
        let memory = Arc::new(MemoryEtcd::default());
        let mut writer = ctx(&[EtcdOp::Write], &memory);
        block(async {
            let r = writer.put_many(vec![kv("a"), kv("a")], None).await.unwrap();
            assert!(matches!(r, Err(GuestError::Invalid(m)) if m.contains("twice")));
            let r = writer.put("a".into(), vec![], Some(0)).await.unwrap();
            assert!(matches!(r, Err(GuestError::Invalid(_))));
        });
    }

    #[test]
    fn one_call_makes_one_lease_per_ttl() {
        let memory = Arc::new(MemoryEtcd::default());
        let mut call = ctx(&[EtcdOp::Write], &memory);
        block(async {
            for i in 0..1000 {
                call.put(format!("flood/{i}"), b"v".to_vec(), Some(60)).await.unwrap().unwrap();
            }
            call.put_many(vec![kv("many/a"), kv("many/b")], Some(60)).await.unwrap().unwrap();
            assert!(call.put_if_absent("once".into(), b"v".to_vec(), Some(60)).await.unwrap().unwrap());
            call.put("short".into(), b"v".to_vec(), Some(30)).await.unwrap().unwrap();
            call.put("forever".into(), b"v".to_vec(), None).await.unwrap().unwrap();
        });
        assert_eq!(*memory.leases.lock().unwrap(), [60, 30], "one lease per distinct TTL");
        let key_leases = memory.key_leases.lock().unwrap();
        assert_eq!(key_leases.len(), 1004, "every key with a TTL has a lease");
        assert!(key_leases.iter().all(|(k, id)| *id == if k.ends_with(b"short") { 2 } else { 1 }));
        drop(key_leases);
        // The next call starts with no lease.
        let mut next = ctx(&[EtcdOp::Write], &memory);
        block(async { next.put("again".into(), b"v".to_vec(), Some(60)).await.unwrap().unwrap() });
        assert_eq!(memory.leases.lock().unwrap().len(), 3);
    }

    #[test]
    fn a_call_cycling_through_ttls_is_limited() {
        let memory = Arc::new(MemoryEtcd::default());
        let mut ctx = ctx(&[EtcdOp::Write], &memory);
        block(async {
            for ttl in 1..=MAX_LEASES_PER_CALL as u32 {
                ctx.put(format!("k{ttl}"), vec![], Some(ttl)).await.unwrap().unwrap();
            }
            let r = ctx.put("over".into(), vec![], Some(59)).await.unwrap();
            assert!(matches!(r, Err(GuestError::Limit(m)) if m.contains("distinct TTLs")));
            ctx.put("reused".into(), vec![], Some(1)).await.unwrap().unwrap();
        });
        assert_eq!(memory.leases.lock().unwrap().len(), MAX_LEASES_PER_CALL);
    }
}
