//! JSON lines, plain or compressed with gzip (C4's layout) or zstd.

use std::io::BufRead;
use std::path::Path;

use super::bytes::{read_line_capped, strip_bom, too_long};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{Compression, ProblemKind, Raw, ReadError, Source};
use crate::error::Error;

pub struct JsonLines {
    reader: Box<dyn BufRead + Send>,
    count: Arc<AtomicU64>,
    /// Records (lines) consumed so far.
    records: u64,
    /// Decompressed bytes consumed so far, for error positions.
    offset: u64,
    line: Vec<u8>,
    /// The longest line kept; longer ones are skipped as too long.
    cap: usize,
    /// The last line read was longer than `cap` (consumed, not kept).
    cut: Option<u64>,
}

impl JsonLines {
    pub fn open(path: &Path, compression: Compression, cap: usize) -> Result<Self, Error> {
        let (reader, count) = super::bytes::open_decoded(path, compression)?;
        Ok(Self {
            reader,
            count,
            records: 0,
            offset: 0,
            line: Vec::new(),
            cap,
            cut: None,
        })
    }

    /// Reads the next line into `self.line` (without its newline); false at the end.
    fn next_line(&mut self) -> Result<bool, ReadError> {
        let line = read_line_capped(&mut self.reader, &mut self.line, self.cap).map_err(|e| {
            ReadError::io(self.records, &e, || {
                format!(
                    "read failed after line {} (decompressed byte {}): {e}; the file is corrupt or truncated",
                    self.records, self.offset
                )
            })
        })?;
        let n = line.consumed;
        if n == 0 {
            return Ok(false);
        }
        self.cut = line.cut.then_some(n);
        self.offset += n;
        if self.records == 0 {
            strip_bom(&mut self.line);
        }
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
            out.push(match self.cut {
                Some(n) => Raw::Bad(ProblemKind::TooLong, too_long(n, self.cap)),
                None => Raw::Json(std::mem::take(&mut self.line)),
            });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bom_is_dropped_and_long_lines_are_skipped_unread() {
        let p = std::env::temp_dir().join(format!("conveyor-jsonl-{}.jsonl", std::process::id()));
        let long = format!("{{\"text\": \"{}\"}}", "x".repeat(100));
        std::fs::write(
            &p,
            format!("\u{feff}{{\"text\": \"a\"}}\n{long}\n{{\"text\": \"b\"}}\n"),
        )
        .unwrap();
        let mut s = JsonLines::open(&p, Compression::None, 64).unwrap();
        let mut out = Vec::new();
        while s.read_batch(&mut out, 1).unwrap() {}
        std::fs::remove_file(&p).ok();
        let got: Vec<String> = out
            .into_iter()
            .map(|r| match super::super::parse(r, "text", 64) {
                Ok(d) => d.text,
                Err((k, _)) => format!("<{}>", k.name()),
            })
            .collect();
        assert_eq!(got, ["a", "<too_long>", "b"]);
    }
}
