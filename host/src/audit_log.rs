//! The `server.audit_log` file: audit events as JSON lines, written by one
//! thread of its own, so a slow disk never stalls the async workers that
//! raise the events.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use anyhow::Context as _;
use tracing_subscriber::fmt::MakeWriter;

/// Lines waiting for the writer thread. Past this (a disk that stopped
/// keeping up, a flood of events from many calls at once) new lines are
/// dropped and counted in `returner_host_audit_dropped_total`, rather than
/// held in memory without bound or making calls wait for the disk.
pub const AUDIT_QUEUE_LINES: usize = 10_000;

/// Hands formatted audit lines to the writer thread; a `MakeWriter` for the
/// audit layer of the tracing subscriber.
#[derive(Clone)]
pub struct AuditLog {
    lines: SyncSender<Vec<u8>>,
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
        Ok(Self { lines })
    }
}

/// Write each line as it comes, flushing whenever the queue is empty, until
/// every sender is gone.
fn write_lines(queue: Receiver<Vec<u8>>, file: File) {
    let mut out = BufWriter::new(file);
    while let Ok(line) = queue.recv() {
        let mut result = out.write_all(&line);
        while let Ok(line) = queue.try_recv() {
            result = result.and_then(|()| out.write_all(&line));
        }
        if let Err(e) = result.and_then(|()| out.flush()) {
            // Said on stderr: an audit event about the audit log would come back here.
            eprintln!("returner-host: writing the audit log failed: {e}");
        }
    }
}

/// One event's line, sent to the writer thread when the formatter is done
/// with it.
pub struct AuditLine {
    line: Vec<u8>,
    lines: SyncSender<Vec<u8>>,
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
        match self.lines.try_send(std::mem::take(&mut self.line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                crate::metrics::metrics().audit_dropped();
            }
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
    use std::time::{Duration, Instant};

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
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&path).unwrap();
            if text.lines().count() == 100 {
                let lines: Vec<&str> = text.lines().collect();
                assert_eq!((lines[0], lines[99]), ("{\"n\":0}", "{\"n\":99}"));
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "lines not written: {text}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
