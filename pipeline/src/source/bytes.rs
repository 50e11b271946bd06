//! The raw bytes of an input, from a local file or a URL (see [`crate::remote`]), counted as
//! they are read for progress.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::Compression;
use crate::error::Error;

/// An input's decompressed bytes, buffered, and the count of its raw bytes read so far.
pub(super) fn open_decoded(
    path: &Path,
    compression: Compression,
) -> Result<(Box<dyn BufRead + Send>, Arc<AtomicU64>), Error> {
    let (raw, count) = open(path)?;
    let reader: Box<dyn BufRead + Send> = match compression {
        Compression::None => Box::new(BufReader::with_capacity(1 << 20, raw)),
        Compression::Gzip => Box::new(BufReader::with_capacity(
            1 << 20,
            flate2::read::MultiGzDecoder::new(raw),
        )),
        Compression::Zstd => Box::new(BufReader::with_capacity(
            1 << 20,
            zstd::stream::read::Decoder::new(raw).map_err(|e| Error::io(path, e))?,
        )),
    };
    Ok((reader, count))
}

/// An input's bytes, before decompression, and the count of them read so far.
pub(super) fn open(path: &Path) -> Result<(Counting, Arc<AtomicU64>), Error> {
    let inner: Box<dyn Read + Send> = match path.to_str().filter(|s| crate::remote::is_url(s)) {
        Some(url) => Box::new(crate::remote::read::RemoteReader::open(url)?),
        None => Box::new(std::fs::File::open(path).map_err(|e| Error::io(path, e))?),
    };
    let count = Arc::new(AtomicU64::new(0));
    let counting = Counting {
        inner: BufReader::with_capacity(1 << 20, inner),
        count: count.clone(),
    };
    Ok((counting, count))
}

/// Counts the bytes read from the input itself.
pub(super) struct Counting {
    inner: BufReader<Box<dyn Read + Send>>,
    count: Arc<AtomicU64>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}
