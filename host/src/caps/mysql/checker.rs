//! Where guest SQL is checked: a few threads of the host's own, each with a
//! stack sized for the largest statement the check accepts. A statement can
//! neither overflow an async worker's stack nor hold a worker while it is
//! parsed, and a call that runs out of time stops its check between
//! statements.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::oneshot;

/// Stack of each checker thread. The token and operator caps
/// (`sql::MAX_TOKENS`, `sql::MAX_OPERATORS`) and the parser's nesting limit
/// bound how deep a checked tree is; the test
/// `the_deepest_statement_the_caps_allow_fits_a_quarter_of_the_stack`
/// checks the worst of them on a quarter of this, in a debug build. Only
/// the pages a check touches are ever committed.
pub const STACK_BYTES: usize = 64 * 1024 * 1024;

/// Checks waiting for a thread, at most. Past it a call gets `limit` at
/// once rather than queueing behind a flood of other returners' SQL.
pub const QUEUE: usize = 256;

/// Why a check did not answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Unchecked {
    /// Every thread is busy and the queue is full.
    Busy,
    /// The check itself failed (a parser bug): the statement is refused.
    Failed,
}

type Job = Box<dyn FnOnce() + Send>;

struct Pool {
    jobs: SyncSender<Job>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let (jobs, queue) = sync_channel::<Job>(QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).max(2);
        for i in 0..threads {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("sql-check-{i}"))
                .stack_size(STACK_BYTES)
                .spawn(move || work(&queue));
            if let Err(e) = spawned {
                // Host's fault (out of threads or memory): the others serve.
                tracing::error!(error = %e, "cannot start a SQL checker thread");
            }
        }
        Pool { jobs }
    })
}

fn work(queue: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let queue = queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        // A panic in the parser ends that check (its answer channel is
        // dropped, the caller refuses the statement), not the thread.
        let _ = catch_unwind(AssertUnwindSafe(job));
    }
}

/// Run `check` on a checker thread and wait for its answer. `check` is
/// handed a function that says whether the caller has stopped waiting (its
/// call ran out of time), to stop between statements.
pub async fn run<T: Send + 'static>(check: impl FnOnce(&dyn Fn() -> bool) -> T + Send + 'static) -> Result<T, Unchecked> {
    let (answer, answered) = oneshot::channel();
    let job: Job = Box::new(move || {
        if answer.is_closed() {
            return;
        }
        let result = check(&|| answer.is_closed());
        let _ = answer.send(result);
    });
    match pool().jobs.try_send(job) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => return Err(Unchecked::Busy),
        Err(TrySendError::Disconnected(_)) => return Err(Unchecked::Failed),
    }
    answered.await.map_err(|_| Unchecked::Failed)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::SqlVerb;
    use super::super::sql::{self, Access, Function, MAX_OPERATORS};
    use super::*;

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn the_deepest_statement_the_caps_allow_fits_a_quarter_of_the_stack() {
        // The deepest trees under the caps: one chain of every operator
        // allowed, and the same chain under nesting up to the parser's
        // limit. Checked (parsed twice, printed, compared, walked, dropped)
        // on a quarter of a checker's stack, in whatever build runs tests.
        let chain = format!("jid = ?{}", " OR jid = ?".repeat(MAX_OPERATORS / 2 - 1));
        let nested = format!("SELECT jid FROM jids WHERE {}{chain}{}", "(".repeat(50), ")".repeat(50));
        let flat = format!("SELECT jid FROM jids WHERE {chain}");
        let sum = format!("SELECT 1{}", " + 1".repeat(MAX_OPERATORS));
        let handle = std::thread::Builder::new()
            .stack_size(STACK_BYTES / 4)
            .spawn(move || {
                let tables = BTreeMap::from([("jids".to_owned(), vec![SqlVerb::Select])]);
                let access = Access { tables: &tables, database: "salt" };
                for sql in [&nested, &flat, &sum] {
                    let answer = sql::check(sql, Function::Query, access);
                    assert!(answer.is_ok(), "{answer:?}");
                }
            })
            .unwrap();
        handle.join().expect("the checks fit the stack");
    }

    #[test]
    fn a_check_runs_off_the_callers_thread_and_answers() {
        let caller = std::thread::current().id();
        let (on, stopped) = block(run(|stopped| (std::thread::current().id(), stopped()))).unwrap();
        assert_ne!(on, caller);
        assert!(!stopped);
    }

    #[test]
    fn a_panicking_check_fails_that_check_only() {
        assert_eq!(block(run(|_| -> u32 { panic!("parser bug") })), Err(Unchecked::Failed));
        assert_eq!(block(run(|_| 7)), Ok(7));
    }
}
