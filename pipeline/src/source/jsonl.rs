//! JSON lines, plain or compressed with gzip (C4's layout) or zstd.

use std::io::BufRead;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{Compression, Raw, ReadError, Source};
use crate::error::Error;

pub struct JsonLines {
    reader: Box<dyn BufRead + Send>,
    count: Arc<AtomicU64>,
    /// Records (lines) consumed so far.
    records: u64,
    /// Decompressed bytes consumed so far, for error positions.
    offset: u64,
    line: Vec<u8>,
}

impl JsonLines {
    pub fn open(path: &Path, compression: Compression) -> Result<Self, Error> {
        let (reader, count) = super::bytes::open_decoded(path, compression)?;
        Ok(Self {
            reader,
            count,
            records: 0,
            offset: 0,
            line: Vec::new(),
        })
    }

    /// Reads the next line into `self.line` (without its newline); false at the end.
    fn next_line(&mut self) -> Result<bool, ReadError> {
        self.line.clear();
        let n = self.reader.read_until(b'\n', &mut self.line).map_err(|e| {
            ReadError::io(self.records, &e, || {
                format!(
                    "read failed after line {} (decompressed byte {}): {e}; the file is corrupt or truncated",
                    self.records, self.offset
                )
            })
        })?;
        if n == 0 {
            return Ok(false);
        }
        self.offset += n as u64;
        if self.line.last() == Some(&b'\n') {
            self.line.pop();
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
        }
        self.records += 1;
        Ok(true)
    }
}

impl Source for JsonLines {
    fn read_batch(&mut self, out: &mut Vec<Raw>, budget: usize) -> Result<bool, ReadError> {
        let mut used = 0;
        while used < budget {
            if !self.next_line()? {
                return Ok(false);
            }
            used += self.line.len() + 1;
            out.push(Raw::Json(std::mem::take(&mut self.line)));
        }
        Ok(true)
    }

    fn skip(&mut self, n: u64) -> Result<(), ReadError> {
        for _ in 0..n {
            if !self.next_line()? {
                break;
            }
        }
        Ok(())
    }

    fn bytes_read(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}
