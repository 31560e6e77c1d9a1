//! `wasi:filesystem/types` as a guest sees it: wasmtime-wasi's
//! implementation, with every operation that can grow a read-write grant's
//! directory made to claim its growth against the grant's quota first.
//!
//! Writes (`write`, `set-size`, and the output streams of `write-via-stream`
//! and `append-via-stream`, which `splice` and every `wasi:io/streams` write
//! go through) are done here, so the growth claimed is the growth made:
//! the file's length is read, the growth claimed, then the bytes written, on
//! one blocking thread while no walk of the directory runs. Creating an
//! entry (`open-at` with `create`, `create-directory-at`, `symlink-at`,
//! `link-at`) claims [`ENTRY_BYTES`] (plus the link's length) first; the
//! last three, each one system call, give the claim back when they fail.
//! Everything else is wasmtime-wasi's, unchanged. A refused claim is
//! `insufficient-space` (the guest's `ENOSPC`) and one audit event.

use std::io;
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;

use bytes::Bytes;
use tracing::Instrument as _;
use wasmtime::component::Resource;
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemCtxView};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    self, DescriptorFlags, ErrorCode, HostDescriptor, HostDirectoryEntryStream, OpenFlags,
};
use wasmtime_wasi::p2::{DynOutputStream, FsError, FsResult, OutputStream, Pollable, StreamError, StreamResult};
use wasmtime_wasi::runtime::AbortOnDropJoinHandle;
use wasmtime_wasi::{OpenMode, async_trait};

use super::FsCtx;
use super::usage::{DirUsage, ENTRY_BYTES, GrowError};

/// Bytes an output stream accepts per write, as wasmtime-wasi's file
/// streams do: the host holds at most this much of a guest's data per stream.
const STREAM_WRITE_BYTES: usize = 64 * 1024;

/// The filesystem of one call: wasmtime-wasi's, and the call's quota.
pub struct QuotaFs<'a> {
    fs: WasiFilesystemCtxView<'a>,
    ctx: &'a FsCtx,
}

impl<'a> QuotaFs<'a> {
    /// wasmtime-wasi's filesystem `fs` under the quota of `ctx`.
    pub fn new(fs: WasiFilesystemCtxView<'a>, ctx: &'a FsCtx) -> Self {
        Self { fs, ctx }
    }
}

/// The guest's error for a claim the quota refused.
#[derive(Debug)]
struct QuotaExceeded(String);

impl std::fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for QuotaExceeded {}

impl FsCtx {
    /// Guest's fault: the directory is full. Audited once.
    fn refuse(&self, usage: &DirUsage, operation: &str) -> QuotaExceeded {
        let target = usage.dir().display().to_string();
        crate::caps::audit::denied(&self.returner, "fs", operation, &target);
        let refusal = format!(
            "{operation} in {target} refused for returner `{}`: its fs grant's quota of {} MiB is full",
            self.returner,
            usage.quota() / (1024 * 1024)
        );
        let _ = self.refused.set(refusal.clone());
        QuotaExceeded(refusal)
    }

    fn grown<R>(&self, usage: &DirUsage, operation: &str, done: Result<R, GrowError>) -> FsResult<R> {
        match done {
            Ok(r) => Ok(r),
            Err(GrowError::Full) => {
                self.refuse(usage, operation);
                Err(ErrorCode::InsufficientSpace.into())
            }
            Err(GrowError::Io(e)) => Err(e.into()),
        }
    }
}

/// Another handle on the same descriptor, for a second call with it.
fn again<T: 'static>(r: &Resource<T>) -> Resource<T> {
    Resource::new_borrow(r.rep())
}

/// The writable file behind `fd`, or the guest's error.
fn writable(fs: &mut WasiFilesystemCtxView<'_>, fd: &Resource<Descriptor>) -> FsResult<wasmtime_wasi::filesystem::File> {
    match fs.table.get(fd)? {
        Descriptor::File(f) if f.perms.write_not_permitted() => Err(ErrorCode::NotPermitted.into()),
        Descriptor::File(f) if !f.open_mode.contains(OpenMode::WRITE) => Err(ErrorCode::BadDescriptor.into()),
        Descriptor::File(f) => Ok(f.clone()),
        Descriptor::Dir(_) => Err(ErrorCode::BadDescriptor.into()),
    }
}

/// Write `buf` at `offset` (at the end when `None`), claiming the growth
/// first; the bytes written. Runs on a blocking thread.
fn write_claimed(usage: &DirUsage, file: &std::fs::File, buf: &[u8], offset: Option<u64>) -> Result<usize, GrowError> {
    let before = file.metadata()?.len();
    let len = buf.len() as u64;
    let growth = match offset {
        Some(offset) => offset.saturating_add(len).saturating_sub(before),
        None => len,
    };
    usage.claim(growth)?;
    let written = match offset {
        Some(offset) => file.write_at(buf, offset),
        None => append(file, buf),
    };
    // Less grown than claimed (a failed write, or another write to the same
    // file claiming the same bytes): the count may be high.
    let after = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
    if written.is_err() || after.saturating_sub(before) < growth {
        usage.mark_high();
    }
    Ok(written?)
}

/// Append `buf` atomically with respect to other appenders.
fn append(file: &std::fs::File, buf: &[u8]) -> io::Result<usize> {
    use rustix::io::{Errno, ReadWriteFlags, pwritev2};
    match pwritev2(file, &[io::IoSlice::new(buf)], 0, ReadWriteFlags::APPEND) {
        Ok(n) => Ok(n),
        // Linux before 4.16: no atomic append; write at the current end.
        Err(Errno::NOSYS | Errno::OPNOTSUPP) => file.write_at(buf, file.metadata()?.len()),
        Err(e) => Err(e.into()),
    }
}

impl types::Host for QuotaFs<'_> {
    fn convert_error_code(&mut self, err: FsError) -> wasmtime::Result<ErrorCode> {
        types::Host::convert_error_code(&mut self.fs, err)
    }

    fn filesystem_error_code(&mut self, err: Resource<wasmtime::Error>) -> wasmtime::Result<Option<ErrorCode>> {
        if self.fs.table.get(&err)?.downcast_ref::<QuotaExceeded>().is_some() {
            return Ok(Some(ErrorCode::InsufficientSpace));
        }
        types::Host::filesystem_error_code(&mut self.fs, err)
    }
}

impl HostDescriptor for QuotaFs<'_> {
    async fn advise(&mut self, fd: Resource<Descriptor>, offset: u64, len: u64, advice: types::Advice) -> FsResult<()> {
        HostDescriptor::advise(&mut self.fs, fd, offset, len, advice).await
    }

    async fn sync_data(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        HostDescriptor::sync_data(&mut self.fs, fd).await
    }

    async fn get_flags(&mut self, fd: Resource<Descriptor>) -> FsResult<DescriptorFlags> {
        HostDescriptor::get_flags(&mut self.fs, fd).await
    }

    async fn get_type(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorType> {
        HostDescriptor::get_type(&mut self.fs, fd).await
    }

    async fn set_size(&mut self, fd: Resource<Descriptor>, size: u64) -> FsResult<()> {
        let Some(usage) = self.ctx.usage.clone() else {
            return HostDescriptor::set_size(&mut self.fs, fd, size).await;
        };
        let file = writable(&mut self.fs, &fd)?.file;
        let done = usage
            .grow(move |usage| {
                let before = file.metadata()?.len();
                if size > before {
                    usage.claim(size - before)?;
                } else {
                    usage.mark_high();
                }
                file.set_len(size).inspect_err(|_| usage.mark_high())?;
                Ok(())
            })
            .await;
        self.ctx.grown(&usage, "set-size", done)
    }

    async fn set_times(
        &mut self,
        fd: Resource<Descriptor>,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        HostDescriptor::set_times(&mut self.fs, fd, atim, mtim).await
    }

    async fn read(&mut self, fd: Resource<Descriptor>, len: u64, offset: u64) -> FsResult<(Vec<u8>, bool)> {
        HostDescriptor::read(&mut self.fs, fd, len, offset).await
    }

    async fn write(&mut self, fd: Resource<Descriptor>, buf: Vec<u8>, offset: u64) -> FsResult<u64> {
        let Some(usage) = self.ctx.usage.clone() else {
            return HostDescriptor::write(&mut self.fs, fd, buf, offset).await;
        };
        let file = writable(&mut self.fs, &fd)?.file;
        let buf = Arc::new(buf);
        let done = usage.grow(move |usage| write_claimed(usage, &file, &buf, Some(offset))).await;
        self.ctx.grown(&usage, "write", done).map(|n| n as u64)
    }

    async fn read_directory(&mut self, fd: Resource<Descriptor>) -> FsResult<Resource<types::DirectoryEntryStream>> {
        HostDescriptor::read_directory(&mut self.fs, fd).await
    }

    async fn sync(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        HostDescriptor::sync(&mut self.fs, fd).await
    }

    async fn create_directory_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<()> {
        let Some(usage) = self.ctx.usage.clone() else {
            return HostDescriptor::create_directory_at(&mut self.fs, fd, path).await;
        };
        let Ok(_no_walk) = usage.reserve(ENTRY_BYTES).await else {
            return self.ctx.grown(&usage, "create-directory-at", Err(GrowError::Full));
        };
        // Failed (most often: it exists), it created nothing. Giving the
        // claim back keeps a guest that makes sure of a directory with
        // `create_dir_all` from wearing the count up to a walk.
        HostDescriptor::create_directory_at(&mut self.fs, fd, path).await.inspect_err(|_| usage.release(ENTRY_BYTES))
    }

    async fn stat(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorStat> {
        HostDescriptor::stat(&mut self.fs, fd).await
    }

    async fn stat_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::DescriptorStat> {
        HostDescriptor::stat_at(&mut self.fs, fd, path_flags, path).await
    }

    async fn set_times_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        HostDescriptor::set_times_at(&mut self.fs, fd, path_flags, path, atim, mtim).await
    }

    async fn link_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path_flags: types::PathFlags,
        old_path: String,
        new_descriptor: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        let Some(usage) = self.ctx.usage.clone() else {
            return HostDescriptor::link_at(&mut self.fs, fd, old_path_flags, old_path, new_descriptor, new_path).await;
        };
        // A walk counts the file once per link.
        let size = HostDescriptor::stat_at(&mut self.fs, again(&fd), old_path_flags, old_path.clone()).await?.size;
        let claimed = ENTRY_BYTES.saturating_add(size);
        let Ok(_no_walk) = usage.reserve(claimed).await else {
            return self.ctx.grown(&usage, "link-at", Err(GrowError::Full));
        };
        HostDescriptor::link_at(&mut self.fs, fd, old_path_flags, old_path, new_descriptor, new_path)
            .await
            .inspect_err(|_| usage.release(claimed))
    }

    async fn open_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        oflags: OpenFlags,
        flags: DescriptorFlags,
    ) -> FsResult<Resource<Descriptor>> {
        let Some(usage) = self.ctx.usage.clone() else {
            return HostDescriptor::open_at(&mut self.fs, fd, path_flags, path, oflags, flags).await;
        };
        let creates = oflags.contains(OpenFlags::CREATE);
        let _no_walk = if creates {
            match usage.reserve(ENTRY_BYTES).await {
                Ok(guard) => Some(guard),
                Err(_) => return self.ctx.grown(&usage, "open-at", Err(GrowError::Full)),
            }
        } else {
            None
        };
        let opened = HostDescriptor::open_at(&mut self.fs, fd, path_flags, path, oflags, flags).await;
        // Without `exclusive` the file may have existed, so the entry was
        // claimed for nothing; `truncate` frees the file's bytes.
        let exclusive = oflags.contains(OpenFlags::EXCLUSIVE);
        if (creates && (opened.is_err() || !exclusive)) || oflags.contains(OpenFlags::TRUNCATE) {
            usage.mark_high();
        }
        let opened = opened?;
        if let Descriptor::File(f) = self.fs.table.get(&opened)?
            && f.open_mode.contains(OpenMode::WRITE)
        {
            usage.track_open(&f.file);
        }
        Ok(opened)
    }

    fn drop(&mut self, fd: Resource<Descriptor>) -> wasmtime::Result<()> {
        HostDescriptor::drop(&mut self.fs, fd)
    }

    async fn readlink_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<String> {
        HostDescriptor::readlink_at(&mut self.fs, fd, path).await
    }

    async fn remove_directory_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<()> {
        let removed = HostDescriptor::remove_directory_at(&mut self.fs, fd, path).await;
        self.freed(removed)
    }

    async fn rename_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path: String,
        new_fd: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        let renamed = HostDescriptor::rename_at(&mut self.fs, fd, old_path, new_fd, new_path).await;
        self.freed(renamed)
    }

    async fn symlink_at(&mut self, fd: Resource<Descriptor>, src_path: String, dest_path: String) -> FsResult<()> {
        let Some(usage) = self.ctx.usage.clone() else {
            return HostDescriptor::symlink_at(&mut self.fs, fd, src_path, dest_path).await;
        };
        let claimed = ENTRY_BYTES.saturating_add(src_path.len() as u64);
        let Ok(_no_walk) = usage.reserve(claimed).await else {
            return self.ctx.grown(&usage, "symlink-at", Err(GrowError::Full));
        };
        HostDescriptor::symlink_at(&mut self.fs, fd, src_path, dest_path).await.inspect_err(|_| usage.release(claimed))
    }

    async fn unlink_file_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<()> {
        let removed = HostDescriptor::unlink_file_at(&mut self.fs, fd, path).await;
        self.freed(removed)
    }

    fn read_via_stream(&mut self, fd: Resource<Descriptor>, offset: u64) -> FsResult<Resource<wasmtime_wasi::p2::DynInputStream>> {
        HostDescriptor::read_via_stream(&mut self.fs, fd, offset)
    }

    fn write_via_stream(&mut self, fd: Resource<Descriptor>, offset: u64) -> FsResult<Resource<DynOutputStream>> {
        self.output_stream(fd, Some(offset))
    }

    fn append_via_stream(&mut self, fd: Resource<Descriptor>) -> FsResult<Resource<DynOutputStream>> {
        self.output_stream(fd, None)
    }

    async fn is_same_object(&mut self, a: Resource<Descriptor>, b: Resource<Descriptor>) -> wasmtime::Result<bool> {
        HostDescriptor::is_same_object(&mut self.fs, a, b).await
    }

    async fn metadata_hash(&mut self, fd: Resource<Descriptor>) -> FsResult<types::MetadataHashValue> {
        HostDescriptor::metadata_hash(&mut self.fs, fd).await
    }

    async fn metadata_hash_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::MetadataHashValue> {
        HostDescriptor::metadata_hash_at(&mut self.fs, fd, path_flags, path).await
    }
}

impl QuotaFs<'_> {
    /// An operation that may have freed space ended.
    fn freed(&self, done: FsResult<()>) -> FsResult<()> {
        if let (Ok(()), Some(usage)) = (&done, &self.ctx.usage) {
            usage.mark_high();
        }
        done
    }

    /// An output stream writing at `offset`, or appending when `None`.
    fn output_stream(&mut self, fd: Resource<Descriptor>, offset: Option<u64>) -> FsResult<Resource<DynOutputStream>> {
        let Some(usage) = self.ctx.usage.clone() else {
            return match offset {
                Some(offset) => HostDescriptor::write_via_stream(&mut self.fs, fd, offset),
                None => HostDescriptor::append_via_stream(&mut self.fs, fd),
            };
        };
        let file = match self.fs.table.get(&fd)? {
            Descriptor::File(f) if f.perms.write_not_permitted() => return Err(ErrorCode::NotPermitted.into()),
            Descriptor::File(f) => f.file.clone(),
            Descriptor::Dir(_) => return Err(ErrorCode::BadDescriptor.into()),
        };
        let stream: DynOutputStream = Box::new(QuotaOutputStream {
            file,
            usage,
            ctx: self.ctx.clone(),
            offset,
            state: StreamState::Ready,
        });
        Ok(self.fs.table.push(stream)?)
    }
}

impl HostDirectoryEntryStream for QuotaFs<'_> {
    async fn read_directory_entry(
        &mut self,
        stream: Resource<types::DirectoryEntryStream>,
    ) -> FsResult<Option<types::DirectoryEntry>> {
        HostDirectoryEntryStream::read_directory_entry(&mut self.fs, stream).await
    }

    fn drop(&mut self, stream: Resource<types::DirectoryEntryStream>) -> wasmtime::Result<()> {
        HostDirectoryEntryStream::drop(&mut self.fs, stream)
    }
}

/// An output stream to a file of a read-write grant: each write claims its
/// growth against the quota before it is made.
struct QuotaOutputStream {
    file: Arc<std::fs::File>,
    usage: Arc<DirUsage>,
    ctx: FsCtx,
    /// Where the next write goes; `None` appends.
    offset: Option<u64>,
    state: StreamState,
}

enum StreamState {
    Ready,
    Writing(AbortOnDropJoinHandle<Result<usize, GrowError>>),
    Failed(StreamError),
    Closed,
}

impl QuotaOutputStream {
    /// The outcome of a finished write as the stream's next state.
    fn settle(&mut self, done: Result<usize, GrowError>) {
        self.state = match done {
            Ok(written) => {
                if let Some(offset) = &mut self.offset {
                    *offset = offset.saturating_add(written as u64);
                }
                StreamState::Ready
            }
            Err(GrowError::Full) => {
                let refused = self.ctx.refuse(&self.usage, "write");
                StreamState::Failed(StreamError::LastOperationFailed(wasmtime::Error::new(refused)))
            }
            Err(GrowError::Io(e)) => StreamState::Failed(StreamError::LastOperationFailed(e.into())),
        };
    }

    /// The failure of the last write, once; the stream is closed after it.
    fn take_failure(&mut self) -> StreamError {
        match std::mem::replace(&mut self.state, StreamState::Closed) {
            StreamState::Failed(e) => e,
            _ => StreamError::Closed,
        }
    }
}

#[async_trait]
impl OutputStream for QuotaOutputStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        match self.state {
            StreamState::Ready => {}
            StreamState::Closed => return Err(StreamError::Closed),
            StreamState::Writing(_) | StreamState::Failed(_) => {
                return Err(StreamError::trap("write not permitted: check_write not called first"));
            }
        }
        if bytes.len() > STREAM_WRITE_BYTES {
            return Err(StreamError::trap("write of more bytes than check_write permitted"));
        }
        let (usage, file, offset) = (self.usage.clone(), self.file.clone(), self.offset);
        let task = async move { usage.grow(move |usage| write_claimed(usage, &file, &bytes, offset)).await };
        self.state = StreamState::Writing(wasmtime_wasi::runtime::spawn(task.in_current_span()));
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        match self.state {
            // Writes are not buffered here: a finished write is on disk.
            StreamState::Ready | StreamState::Writing(_) => Ok(()),
            StreamState::Closed => Err(StreamError::Closed),
            StreamState::Failed(_) => Err(self.take_failure()),
        }
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        match self.state {
            StreamState::Ready => Ok(STREAM_WRITE_BYTES),
            StreamState::Writing(_) => Ok(0),
            StreamState::Closed => Err(StreamError::Closed),
            StreamState::Failed(_) => Err(self.take_failure()),
        }
    }

    async fn cancel(&mut self) {
        if let StreamState::Writing(task) = std::mem::replace(&mut self.state, StreamState::Closed) {
            // A write already on its blocking thread finishes; wait for it,
            // so the call does not end with a write still landing.
            task.cancel().await;
        }
    }
}

#[async_trait]
impl Pollable for QuotaOutputStream {
    async fn ready(&mut self) {
        if let StreamState::Writing(task) = &mut self.state {
            let done = task.await;
            self.settle(done);
        }
    }
}
