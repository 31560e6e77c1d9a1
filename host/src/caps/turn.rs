//! A call's turn at the backends: when a call may first reach etcd, MySQL
//! or an HTTP endpoint. Most calls have it at once. Spool delivery starts a
//! queue's next call while the one before it is still storing, so that the
//! next call's own work (reading its arguments, building its rows) runs
//! beside the backend's; that call gets its turn only once the one before it
//! has succeeded, so what reaches the backend still arrives in the queue's
//! order, and a call whose turn is withheld has reached nothing at all.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::bindings::GuestError;

/// When a call may reach the backends. Every backend function of every
/// capability waits for it before anything else (before the grant check,
/// so a call that never gets its turn is not audited either). The call's
/// deadline does not run while it waits: see [`Turn::extended`].
#[derive(Clone, Debug, Default)]
pub struct Turn(Option<Arc<Later>>);

/// A turn not had at once: whether it is given yet, and how long the call
/// has waited for it.
#[derive(Debug)]
struct Later {
    given: watch::Receiver<Option<bool>>,
    waited: Mutex<Waited>,
}

#[derive(Debug, Default)]
struct Waited {
    /// Time spent in waits that ended.
    total: Duration,
    /// When the wait under way began.
    since: Option<Instant>,
}

/// Gives or withholds the [`Turn`] made with it. Dropped without either,
/// the turn is withheld.
#[derive(Debug)]
pub struct TurnGiver(watch::Sender<Option<bool>>);

impl Turn {
    /// A turn the call has at once.
    pub fn now() -> Self {
        Self(None)
    }

    /// A turn the call gets when the [`TurnGiver`] gives it.
    pub fn later() -> (TurnGiver, Self) {
        let (giver, given) = watch::channel(None);
        (TurnGiver(giver), Self(Some(Arc::new(Later { given, waited: Mutex::default() }))))
    }

    /// Wait for the turn: `Ok` once it is given (at once after that), a
    /// `backend` error if it is withheld.
    pub async fn wait(&self) -> Result<(), GuestError> {
        let Some(later) = &self.0 else { return Ok(()) };
        let mut given = later.given.clone();
        if given.borrow().is_none() {
            later.waiting(true);
            let _ = given.wait_for(Option::is_some).await;
            later.waiting(false);
        }
        if *given.borrow() != Some(true) {
            return Err(GuestError::Backend(
                "the write queued before this one was not stored, so this one did not start; it is delivered again after it".into(),
            ));
        }
        Ok(())
    }

    /// `deadline`, moved on by the time the call has waited for its turn:
    /// a call's deadline counts its own time, not the time of the call
    /// ahead of it.
    pub fn extended(&self, deadline: Instant) -> Instant {
        let Some(later) = &self.0 else { return deadline };
        let waited = later.waited.lock().unwrap_or_else(|p| p.into_inner());
        deadline + waited.total + waited.since.map_or(Duration::ZERO, |since| since.elapsed())
    }
}

impl Later {
    fn waiting(&self, started: bool) {
        let mut waited = self.waited.lock().unwrap_or_else(|p| p.into_inner());
        match (started, waited.since.take()) {
            (true, _) => waited.since = Some(Instant::now()),
            (false, Some(since)) => waited.total += since.elapsed(),
            (false, None) => {}
        }
    }
}

impl TurnGiver {
    /// Let the call reach the backends.
    pub fn give(self) {
        let _ = self.0.send(Some(true));
    }

    /// Keep the call from reaching any backend: its waits end in an error.
    pub fn withhold(self) {
        let _ = self.0.send(Some(false));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(f)
    }

    #[test]
    fn a_turn_now_needs_no_wait() {
        assert!(block(Turn::now().wait()).is_ok());
    }

    #[test]
    fn a_later_turn_waits_until_given() {
        block(async {
            let (giver, turn) = Turn::later();
            let copy = turn.clone();
            let deadline = Instant::now();
            let waiting = tokio::spawn(async move { turn.wait().await });
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(!waiting.is_finished(), "the turn is not given yet");
            assert!(copy.extended(deadline) >= deadline + Duration::from_millis(50), "the deadline waits too");
            giver.give();
            assert!(waiting.await.unwrap().is_ok());
            assert!(copy.wait().await.is_ok(), "every copy has the turn once given");
            let moved = copy.extended(deadline) - deadline;
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(copy.extended(deadline) - deadline, moved, "the deadline runs again once the turn is given");
            assert_eq!(Turn::now().extended(deadline), deadline);
        });
    }

    #[test]
    fn a_withheld_or_abandoned_turn_is_a_backend_error() {
        block(async {
            let (giver, turn) = Turn::later();
            giver.withhold();
            assert!(matches!(turn.wait().await, Err(GuestError::Backend(m)) if m.contains("not stored")));
            let (giver, turn) = Turn::later();
            drop(giver);
            assert!(matches!(turn.wait().await, Err(GuestError::Backend(_))));
        });
    }
}
