//! Plain text: the whole file as one document, or one document per line (streamed, so a
//! large file is never held in memory at once).

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use super::{Document, ProblemKind, Raw, ReadError, Source, TxtMode};
use crate::error::Error;

pub struct TextSource {
    path: PathBuf,
    reader: BufReader<super::bytes::Counting>,
    mode: TxtMode,
    /// The largest record kept (`--max-document-bytes`).
    cap: usize,
    /// Bytes consumed so far.
    offset: u64,
    /// Records handed out (or skipped) so far.
    records: u64,
    done: bool,
}

impl TextSource {
    pub fn open(path: &Path, mode: TxtMode, cap: usize) -> Result<Self, Error> {
        let (file, _) = super::bytes::open(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 20, file),
            mode,
            cap,
            offset: 0,
            records: 0,
            done: false,
        })
    }

    fn fail(&self, e: std::io::Error) -> ReadError {
        ReadError::io(self.records, &e, || {
            format!(
                "read failed after record {} (byte {}) of {}: {e}",
                self.records,
                self.offset,
                self.path.display()
            )
        })
    }

    /// The next record's bytes (Err: the size of a record above the cap, read and
    /// dropped), or None at the end.
    fn next_bytes(&mut self) -> Result<Option<Result<Vec<u8>, u64>>, ReadError> {
        if self.done {
            return Ok(None);
        }
        let mut buf = Vec::new();
        let mut cut = None;
        match self.mode {
            TxtMode::File => {
                let limit = self.cap as u64 + 1;
                let mut head = (&mut self.reader).take(limit);
                head.read_to_end(&mut buf).map_err(|e| self.fail(e))?;
                let mut n = buf.len() as u64;
                if n > self.cap as u64 {
                    buf = Vec::new();
                    n += std::io::copy(&mut self.reader, &mut std::io::sink())
                        .map_err(|e| self.fail(e))?;
                    cut = Some(n);
                }
                self.offset += n;
                self.done = true;
            }
            TxtMode::Line => {
                let line = super::bytes::read_line_capped(&mut self.reader, &mut buf, self.cap)
                    .map_err(|e| self.fail(e))?;
                if line.consumed == 0 {
                    self.done = true;
                    return Ok(None);
                }
                self.offset += line.consumed;
                cut = line.cut.then_some(line.consumed);
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                    if buf.last() == Some(&b'\r') {
                        buf.pop();
                    }
                }
            }
        }
        if self.records == 0 {
            super::bytes::strip_bom(&mut buf);
        }
        self.records += 1;
        Ok(Some(match cut {
            Some(n) => Err(n),
            None => Ok(buf),
        }))
    }
}

fn to_raw(bytes: Vec<u8>) -> Raw {
    match String::from_utf8(bytes) {
        Ok(text) => Raw::Doc(Document {
            text,
            url: None,
            timestamp: None,
        }),
        Err(e) => Raw::Bad(
            ProblemKind::InvalidUtf8,
            format!("invalid UTF-8 at byte {}", e.utf8_error().valid_up_to()),
        ),
    }
}

impl Source for TextSource {
    fn read_batch(&mut self, out: &mut Vec<Raw>, budget: usize) -> Result<bool, ReadError> {
        let mut used = 0;
        while used < budget {
            match self.next_bytes()? {
                Some(Ok(b)) => {
                    used += b.len() + 1;
                    out.push(to_raw(b));
                }
                Some(Err(n)) => out.push(Raw::Bad(
                    ProblemKind::TooLong,
                    super::bytes::too_long(n, self.cap),
                )),
                None => return Ok(false),
            }
        }
        Ok(!self.done)
    }

    fn skip(&mut self, n: u64) -> Result<(), ReadError> {
        for _ in 0..n {
            if self.next_bytes()?.is_none() {
                break;
            }
        }
        Ok(())
    }

    fn bytes_read(&self) -> u64 {
        self.offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(content: &[u8], mode: TxtMode, budget: usize) -> Vec<String> {
        read_capped(content, mode, budget, 1 << 20)
    }

    fn read_capped(content: &[u8], mode: TxtMode, budget: usize, cap: usize) -> Vec<String> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("conveyor-text-{}-{n}.txt", std::process::id()));
        std::fs::write(&p, content).unwrap();
        let mut s = TextSource::open(&p, mode, cap).unwrap();
        let mut out = Vec::new();
        while s.read_batch(&mut out, budget).unwrap() {}
        std::fs::remove_file(&p).ok();
        out.into_iter()
            .map(|r| match r {
                Raw::Doc(d) => d.text,
                Raw::Bad(k, _) => format!("<{}>", k.name()),
                Raw::Json(_) => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn lines_stream_one_document_each() {
        assert_eq!(
            read_all(b"a\r\nb\n\nc", TxtMode::Line, 1),
            vec!["a", "b", "", "c"]
        );
        // A final newline starts no further line.
        assert_eq!(read_all(b"a\nb\n", TxtMode::Line, 100), vec!["a", "b"]);
        assert_eq!(
            read_all(b"ok\n\xff\xfe\n", TxtMode::Line, 100),
            vec!["ok", "<invalid_utf8>"]
        );
    }

    #[test]
    fn a_file_is_one_document() {
        assert_eq!(read_all(b"a\nb\n", TxtMode::File, 1), vec!["a\nb\n"]);
    }

    #[test]
    fn records_above_the_cap_are_skipped_and_a_bom_dropped() {
        assert_eq!(
            read_capped(b"\xef\xbb\xbfab\nabcdef\nabc\n", TxtMode::Line, 1, 5),
            vec!["ab", "<too_long>", "abc"]
        );
        assert_eq!(
            read_capped(b"abcd", TxtMode::File, 1, 3),
            vec!["<too_long>"]
        );
        assert_eq!(read_capped(b"abc", TxtMode::File, 1, 3), vec!["abc"]);
    }
}
