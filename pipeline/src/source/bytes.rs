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

/// One line read by [`read_line_capped`].
pub(super) struct Line {
    /// Bytes consumed, newline included.
    pub consumed: u64,
    /// The line was longer than the cap: it was consumed but not kept.
    pub cut: bool,
}

/// Reads the next line (through its `\n`, or to the end) into `buf`, which holds at most
/// `cap` bytes besides the newline: a longer line is read to its end and dropped, so one
/// huge line (a decompression bomb) never sits in memory. `buf` is cleared first.
pub(super) fn read_line_capped(
    r: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<Line> {
    buf.clear();
    let mut line = Line {
        consumed: 0,
        cut: false,
    };
    loop {
        let avail = r.fill_buf()?;
        if avail.is_empty() {
            break;
        }
        let (n, end) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        if !line.cut {
            if buf.len() + n > cap.saturating_add(1) {
                line.cut = true;
                *buf = Vec::new();
            } else {
                buf.extend_from_slice(&avail[..n]);
            }
        }
        r.consume(n);
        line.consumed += n as u64;
        if end {
            break;
        }
    }
    Ok(line)
}

/// Drops a UTF-8 byte order mark from the start of a file's first record.
pub(super) fn strip_bom(buf: &mut Vec<u8>) {
    if buf.starts_with(&[0xEF, 0xBB, 0xBF]) {
        buf.drain(..3);
    }
}

/// The message of a record skipped for its size.
pub(super) fn too_long(bytes: u64, cap: usize) -> String {
    format!(
        "the record is {bytes} bytes, above --max-document-bytes {cap}; skipped (raise the limit to keep it)"
    )
}
