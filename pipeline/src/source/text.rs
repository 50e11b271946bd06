//! Plain text: the whole file as one document, or one document per line.

use std::io::Read;
use std::path::Path;

use super::{Document, ProblemKind, Raw, ReadError, Source, TxtMode};
use crate::error::Error;

pub struct TextSource {
    /// The records still to hand out, in order.
    records: std::vec::IntoIter<Raw>,
    size: u64,
    done: bool,
}

impl TextSource {
    pub fn open(path: &Path, mode: TxtMode) -> Result<Self, Error> {
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| Error::io(path, e))?;
        let size = bytes.len() as u64;
        let to_raw = |b: &[u8]| match std::str::from_utf8(b) {
            Ok(s) => Raw::Doc(Document {
                text: s.to_string(),
                url: None,
                timestamp: None,
            }),
            Err(e) => Raw::Bad(
                ProblemKind::InvalidUtf8,
                format!("invalid UTF-8 at byte {}", e.valid_up_to()),
            ),
        };
        let mut records: Vec<Raw> = match mode {
            TxtMode::File => vec![to_raw(&bytes)],
            TxtMode::Line => bytes
                .split(|&b| b == b'\n')
                .map(|l| to_raw(l.strip_suffix(b"\r").unwrap_or(l)))
                .collect(),
        };
        // A final newline does not start another (empty) line.
        if mode == TxtMode::Line && bytes.ends_with(b"\n") {
            records.pop();
        }
        Ok(Self {
            records: records.into_iter(),
            size,
            done: false,
        })
    }
}

impl Source for TextSource {
    fn read_batch(&mut self, out: &mut Vec<Raw>, budget: usize) -> Result<bool, ReadError> {
        let mut used = 0;
        while used < budget {
            match self.records.next() {
                Some(r) => {
                    used += match &r {
                        Raw::Doc(d) => d.text.len() + 1,
                        _ => 1,
                    };
                    out.push(r);
                }
                None => {
                    self.done = true;
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    fn skip(&mut self, n: u64) -> Result<(), ReadError> {
        for _ in 0..n {
            self.records.next();
        }
        Ok(())
    }

    fn bytes_read(&self) -> u64 {
        if self.done {
            self.size
        } else {
            0
        }
    }
}
