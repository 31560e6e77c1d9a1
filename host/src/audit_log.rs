//! The `server.audit_log` file: audit events as JSON lines, written by one
//! thread of its own, so a slow disk never stalls the async workers that
//! raise the events.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::Path;
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Duration;

use anyhow::Context as _;
use tracing_subscriber::fmt::MakeWriter;

/// Lines waiting for the writer thread. Past this (a disk that stopped
/// keeping up, a flood of events from many calls at once) new lines are
/// dropped and counted in `returner_host_audit_dropped_total`, rather than
/// held in memory without bound or making calls wait for the disk.
pub const AUDIT_QUEUE_LINES: usize = 10_000;

/// What the writer thread is handed.
enum Entry {
    /// One event's line.
    Line(Vec<u8>),
    /// Answer once everything before is on disk.
    Flush(SyncSender<()>),
}

/// Hands formatted audit lines to the writer thread; a `MakeWriter` for the
/// audit layer of the tracing subscriber.
#[derive(Clone)]
pub struct AuditLog {
    lines: SyncSender<Entry>,
}

/// The audit log of this process, once opened, for [`flush`] at exit.
static OPENED: OnceLock<AuditLog> = OnceLock::new();

/// Wait, at most `timeout`, until every line queued so far is written: a
/// process about to exit (`call` after its one call, `serve` after its
/// shutdown) would otherwise lose what the writer thread had not reached.
pub fn flush(timeout: Duration) {
    let Some(log) = OPENED.get() else { return };
    let (done, written) = sync_channel(1);
    if log.lines.send(Entry::Flush(done)).is_ok() {
        let _ = written.recv_timeout(timeout);
    }
}

impl AuditLog {
    /// Open `path` for appending and start its writer thread.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening the audit log {}", path.display()))?;
        let (lines, queue) = sync_channel(AUDIT_QUEUE_LINES);
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || write_lines(queue, file))
            .context("starting the audit log's writer thread")?;
        let log = Self { lines };
        let _ = OPENED.set(log.clone());
        Ok(log)
    }
}

/// Write each line as it comes, flushing whenever the queue is empty, until
/// every sender is gone.
fn write_lines(queue: Receiver<Entry>, file: File) {
    let mut out = BufWriter::new(file);
    while let Ok(first) = queue.recv() {
        let mut flushed = Vec::new();
        let mut result = Ok(());
        for entry in std::iter::once(first).chain(std::iter::from_fn(|| queue.try_recv().ok())) {
            match entry {
                Entry::Line(line) => result = result.and_then(|()| out.write_all(&line)),
                Entry::Flush(done) => flushed.push(done),
            }
        }
        if let Err(e) = result.and_then(|()| out.flush()) {
            // Said on stderr: an audit event about the audit log would come back here.
            eprintln!("returner-host: writing the audit log failed: {e}");
        }
        for done in flushed {
            let _ = done.try_send(());
        }
    }
}

/// One event's line, sent to the writer thread when the formatter is done
/// with it.
pub struct AuditLine {
    line: Vec<u8>,
    lines: SyncSender<Entry>,
}

impl std::io::Write for AuditLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for AuditLine {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        // Full (the disk is behind) or gone (the writer died): dropped, counted.
        if self.lines.try_send(Entry::Line(std::mem::take(&mut self.line))).is_err() {
            crate::metrics::metrics().audit_dropped();
        }
    }
}

impl<'a> MakeWriter<'a> for AuditLog {
    type Writer = AuditLine;

    fn make_writer(&'a self) -> Self::Writer {
        AuditLine { line: Vec::new(), lines: self.lines.clone() }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn lines_reach_the_file_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        for n in 0..100 {
            let mut line = log.make_writer();
            writeln!(line, "{{\"n\":{n}}}").unwrap();
        }
        flush(Duration::from_secs(10));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 100, "{text}");
        assert_eq!((lines[0], lines[99]), ("{\"n\":0}", "{\"n\":99}"));
    }
}
