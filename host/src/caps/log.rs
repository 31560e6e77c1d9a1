//! The `log` capability: a guest's log records go to the host's `tracing`
//! output under the target `returner_host::guest`, tagged with the returner,
//! each on one line (control characters escaped, so a guest cannot write a
//! line that reads as another log or audit entry).

use std::sync::Arc;

use wasmtime::component::{HasData, Linker};

use crate::bindings::salt::returner::log::{self, Level};

/// A guest cannot flood the host's log with one huge record: longer messages
/// are cut to this many bytes, and say how many were cut.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024;

/// A guest looping over `log` cannot flood the host's log: past this many
/// records in one call, the rest are dropped (one warning says so).
pub const MAX_RECORDS_PER_CALL: u32 = 1_000;

/// Per-call logging state: which returner is speaking, and how much it said.
#[derive(Clone, Debug)]
pub struct LogCtx {
    returner: Arc<str>,
    records: u32,
}

impl LogCtx {
    /// Records are tagged with `returner`.
    pub fn new(returner: Arc<str>) -> Self {
        Self { returner, records: 0 }
    }

    /// Count a record; false once the call is over its allowance.
    fn admit(&mut self) -> bool {
        self.records = self.records.saturating_add(1);
        if self.records == MAX_RECORDS_PER_CALL + 1 {
            tracing::warn!(
                target: "returner_host::guest",
                returner = &*self.returner,
                "more than {MAX_RECORDS_PER_CALL} log records in one call; dropping the rest of this call's"
            );
        }
        self.records <= MAX_RECORDS_PER_CALL
    }
}

impl log::Host for LogCtx {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        if !self.admit() {
            return Ok(());
        }
        let message = crate::guest_text::bounded(&message, MAX_MESSAGE_BYTES);
        let returner = &*self.returner;
        match level {
            Level::Trace => tracing::trace!(target: "returner_host::guest", returner, "{message}"),
            Level::Debug => tracing::debug!(target: "returner_host::guest", returner, "{message}"),
            Level::Info => tracing::info!(target: "returner_host::guest", returner, "{message}"),
            Level::Warn => tracing::warn!(target: "returner_host::guest", returner, "{message}"),
            Level::Error => tracing::error!(target: "returner_host::guest", returner, "{message}"),
        }
        Ok(())
    }
}

struct HasLog;
impl HasData for HasLog {
    type Data<'a> = &'a mut LogCtx;
}

/// Link `salt:returner/log`.
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut LogCtx,
) -> wasmtime::Result<()> {
    log::add_to_linker::<T, HasLog>(linker, get)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_call_gets_a_bounded_number_of_records() {
        let mut ctx = super::LogCtx::new("r".into());
        let admitted = (0..super::MAX_RECORDS_PER_CALL + 50).filter(|_| ctx.admit()).count();
        assert_eq!(admitted, super::MAX_RECORDS_PER_CALL as usize);
        let mut next_call = super::LogCtx::new("r".into());
        assert!(next_call.admit(), "each call starts afresh");
    }
}
