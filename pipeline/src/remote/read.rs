//! Blocking reads of remote objects for the sources: a streaming [`RemoteReader`] (JSON
//! lines, WET, text) and a random-access [`RemoteFile`] (Parquet).
//!
//! A dropped connection, a stalled body or a body that ends before the object's size is
//! resumed with a range request from the byte where it stopped, after a backoff, as long as
//! the object is still the same one (same ETag, or same size and modification time when the
//! server sends no ETag). A reader only reports the end of the object after delivering
//! exactly its size in bytes, so a document is never cut short: when the retries run out it
//! fails with an [`Unreachable`] error, which the jobs turn into a stop that a rerun resumes.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore};

use super::{runtime, Location, Policy};
use crate::error::Error;

/// Why a remote input could not be read to its end: the network, or the object changed.
/// Travels inside `std::io::Error` through decompressors; see [`unreachable_message`].
#[derive(Debug)]
pub struct Unreachable {
    pub message: String,
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Unreachable {}

/// The message of an [`Unreachable`] error carried by `e`, if it is one.
pub fn unreachable_message(e: &std::io::Error) -> Option<String> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<Unreachable>())
        .map(|u| u.message.clone())
}

/// The message of an [`Unreachable`] error anywhere in `e`'s chain of causes (Arrow and
/// Parquet wrap the reader's I/O errors).
pub fn unreachable_in(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(u) = err.downcast_ref::<Unreachable>() {
            return Some(u.message.clone());
        }
        if let Some(m) = err
            .downcast_ref::<std::io::Error>()
            .and_then(unreachable_message)
        {
            return Some(m);
        }
        cur = err.source();
    }
    None
}

fn unreachable(message: String) -> std::io::Error {
    std::io::Error::other(Unreachable { message })
}

/// Reads one object from start to end as a `Read`, resuming after failures.
pub struct RemoteReader {
    loc: Location,
    meta: ObjectMeta,
    policy: Policy,
    offset: u64,
    stream: Option<BoxStream<'static, object_store::Result<Bytes>>>,
    chunk: Bytes,
    /// Failures since the last byte arrived.
    failures: u32,
    /// Connections resumed so far.
    pub resumed: u64,
}

impl RemoteReader {
    /// Opens `url` for reading from its first byte.
    pub fn open(url: &str) -> Result<RemoteReader, Error> {
        let loc = Location::parse(url)?;
        let result = runtime()
            .block_on(loc.store.get_opts(&loc.key, GetOptions::default()))
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => Error::MissingInput(url.to_string()),
                e => loc.error("cannot open", e),
            })?;
        let mut reader = RemoteReader::at(loc, result.meta.clone(), 0);
        reader.stream = Some(result.into_stream());
        Ok(reader)
    }

    /// Opens the object described by `meta` for reading from byte `offset`.
    fn at(loc: Location, meta: ObjectMeta, offset: u64) -> RemoteReader {
        RemoteReader {
            loc,
            meta,
            policy: Policy::from_env(),
            offset,
            stream: None,
            chunk: Bytes::new(),
            failures: 0,
            resumed: 0,
        }
    }

    /// The object's size in bytes.
    pub fn size(&self) -> u64 {
        self.meta.size
    }

    /// Records a failure; Err once the retries are used up, else waits before the next try.
    fn failed(&mut self, why: String) -> std::io::Result<()> {
        self.stream = None;
        self.failures += 1;
        if self.failures > self.policy.retries {
            return Err(unreachable(format!(
                "reading stopped at byte {} of {} and {} attempts to resume failed (last: {why}); \
                 rerun the same command when the store is reachable: it resumes where it stopped",
                self.offset, self.meta.size, self.policy.retries
            )));
        }
        std::thread::sleep(self.policy.wait(self.failures));
        Ok(())
    }

    /// Asks for the rest of the object from `self.offset`.
    fn reconnect(&mut self) -> std::io::Result<()> {
        loop {
            let opts = GetOptions {
                range: Some(GetRange::Offset(self.offset)),
                if_match: self.meta.e_tag.clone(),
                ..Default::default()
            };
            match runtime().block_on(self.loc.store.get_opts(&self.loc.key, opts)) {
                Ok(r) => {
                    let same = r.meta.size == self.meta.size
                        && (self.meta.e_tag.is_some()
                            || r.meta.last_modified == self.meta.last_modified);
                    if !same {
                        return Err(self.changed());
                    }
                    self.resumed += 1;
                    self.stream = Some(r.into_stream());
                    return Ok(());
                }
                Err(object_store::Error::Precondition { .. }) => return Err(self.changed()),
                Err(e) => self.failed(format!("resuming: {e}"))?,
            }
        }
    }

    fn changed(&self) -> std::io::Error {
        unreachable(format!(
            "the object changed while it was being read (at byte {} of {}); \
             rerun with --overwrite to read the new version from the start",
            self.offset, self.meta.size
        ))
    }
}

impl Read for RemoteReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if !self.chunk.is_empty() {
                let n = self.chunk.len().min(buf.len());
                buf[..n].copy_from_slice(&self.chunk[..n]);
                self.chunk = self.chunk.slice(n..);
                self.offset += n as u64;
                return Ok(n);
            }
            if self.offset >= self.meta.size || buf.is_empty() {
                return Ok(0);
            }
            if self.stream.is_none() {
                self.reconnect()?;
            }
            let next = {
                let stream = self.stream.as_mut().expect("stream");
                runtime().block_on(stream.next())
            };
            match next {
                Some(Ok(bytes)) => {
                    if bytes.len() as u64 > self.meta.size - self.offset {
                        return Err(self.changed());
                    }
                    if !bytes.is_empty() {
                        self.failures = 0;
                    }
                    self.chunk = bytes;
                }
                Some(Err(e)) => self.failed(e.to_string())?,
                None => self.failed("the connection ended early".into())?,
            }
        }
    }
}

/// A remote object read by ranges (Parquet's footer, then its column chunks).
pub struct RemoteFile {
    loc: Location,
    meta: ObjectMeta,
    policy: Policy,
}

impl RemoteFile {
    pub fn open(url: &str) -> Result<RemoteFile, Error> {
        let loc = Location::parse(url)?;
        let meta = loc
            .head()?
            .ok_or_else(|| Error::MissingInput(url.to_string()))?;
        Ok(RemoteFile {
            loc,
            meta,
            policy: Policy::from_env(),
        })
    }

    pub fn size(&self) -> u64 {
        self.meta.size
    }

    fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.loc.store
    }

    /// Bytes `start..start+len`, retried like a stream.
    fn range(&self, start: u64, len: usize) -> std::io::Result<Bytes> {
        let mut failures = 0;
        loop {
            let opts = GetOptions {
                range: Some(GetRange::Bounded(start..start + len as u64)),
                if_match: self.meta.e_tag.clone(),
                ..Default::default()
            };
            let got = runtime().block_on(async {
                let r = self.store().get_opts(&self.loc.key, opts).await?;
                r.bytes().await
            });
            match got {
                Ok(b) if b.len() == len => return Ok(b),
                Ok(b) => {
                    return Err(unreachable(format!(
                        "asked for {len} bytes at {start} and got {}; the object changed or the server does not honour ranges",
                        b.len()
                    )))
                }
                Err(object_store::Error::Precondition { .. }) => {
                    return Err(unreachable(
                        "the object changed while it was being read; rerun with --overwrite".into(),
                    ))
                }
                Err(e) => {
                    failures += 1;
                    if failures > self.policy.retries {
                        return Err(unreachable(format!(
                            "reading bytes {start}..{} failed {failures} times (last: {e}); rerun when the store is reachable",
                            start + len as u64
                        )));
                    }
                    std::thread::sleep(self.policy.wait(failures));
                }
            }
        }
    }
}

impl parquet::file::reader::Length for RemoteFile {
    fn len(&self) -> u64 {
        self.meta.size
    }
}

impl parquet::file::reader::ChunkReader for RemoteFile {
    type T = RemoteReader;

    fn get_read(&self, start: u64) -> parquet::errors::Result<RemoteReader> {
        Ok(RemoteReader::at(self.loc.clone(), self.meta.clone(), start))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.range(start, length)
            .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
    }
}
