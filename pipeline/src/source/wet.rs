//! WARC/WET files (Common Crawl's extracted text, `.warc.wet.gz`): each `conversion` record
//! becomes a document with its `WARC-Target-URI` as url and `WARC-Date` as timestamp; other
//! records (warcinfo, ...) are passed over. Gzip WET files are many gzip members, one per
//! record, read as one stream.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use super::{Compression, Document, ProblemKind, Raw, ReadError, Source};
use crate::error::Error;

/// A record's headers (name, value) and its body, or the body's length where it is over
/// the limit (passed over unread into memory).
type Record = (Vec<(String, String)>, Result<Vec<u8>, u64>);

/// The longest header line read: a WARC header is a name and a short value.
const MAX_HEADER_LINE: u64 = 64 << 10;

pub struct WetSource {
    path: PathBuf,
    reader: Box<dyn BufRead + Send>,
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Documents handed out (or skipped) so far.
    records: u64,
    /// The largest body read into memory (`SourceOptions::max_document_bytes`).
    cap: usize,
}

impl WetSource {
    pub fn open(path: &Path, compression: Compression, cap: usize) -> Result<Self, Error> {
        let (reader, read) = super::bytes::open_decoded(path, compression)?;
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            read,
            records: 0,
            cap,
        })
    }

    fn fail(&self, message: String) -> ReadError {
        ReadError::new(
            self.records,
            format!(
                "{} after document {}: {message}",
                self.path.display(),
                self.records
            ),
        )
    }

    /// A read error: the input's own fault, or a remote input out of reach.
    fn fail_io(&self, e: std::io::Error, what: &str) -> ReadError {
        ReadError::io(self.records, &e, || self.fail(format!("{what}{e}")).message)
    }

    /// Reads the next line into `line` (cleared first); its length, 0 at the end. A line
    /// longer than a header can be is an error, not read whole.
    fn read_line(&mut self, line: &mut String) -> Result<usize, ReadError> {
        line.clear();
        let n = (&mut self.reader)
            .take(MAX_HEADER_LINE)
            .read_line(line)
            .map_err(|e| self.fail_io(e, ""))?;
        if n as u64 == MAX_HEADER_LINE && !line.ends_with('\n') {
            return Err(self.fail(format!(
                "a line of over {MAX_HEADER_LINE} bytes where WARC headers are: not a WET file?"
            )));
        }
        Ok(n)
    }

    /// The next record: its headers (name, value) and body, or None at the end.
    fn next_record(&mut self) -> Result<Option<Record>, ReadError> {
        let mut line = String::new();
        // Skip the blank lines between records, then expect the version line.
        loop {
            if self.read_line(&mut line)? == 0 {
                return Ok(None);
            }
            if !line.trim().is_empty() {
                break;
            }
        }
        if !line.starts_with("WARC/") {
            return Err(self.fail(format!("expected a WARC record, found {:?}", line.trim())));
        }
        let mut headers = Vec::new();
        loop {
            if self.read_line(&mut line)? == 0 {
                return Err(self.fail("the file ends inside a record's headers".into()));
            }
            let l = line.trim_end_matches(['\r', '\n']);
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let length: u64 = header(&headers, "Content-Length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| self.fail("a record without a valid Content-Length".into()))?;
        // Read as it comes, never allocated from the header: a Content-Length of 2^50 is a
        // damaged or hostile file, not a reason to ask for a petabyte.
        let mut body = Vec::new();
        let mut rest = (&mut self.reader).take(length);
        let read = if length > self.cap as u64 {
            std::io::copy(&mut rest, &mut std::io::sink())
        } else {
            rest.read_to_end(&mut body).map(|n| n as u64)
        }
        .map_err(|e| self.fail_io(e, "a record is cut short: "))?;
        if read < length {
            return Err(self.fail(format!(
                "a record is cut short: its Content-Length is {length}, the file ends after {read} bytes of it"
            )));
        }
        let body = if length > self.cap as u64 {
            Err(length)
        } else {
            Ok(body)
        };
        Ok(Some((headers, body)))
    }
}

/// A header's value, by case-insensitive name.
fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

impl WetSource {
    /// The next `conversion` record (the extracted text of one page), passing over the
    /// others, and counting it.
    fn next_conversion(&mut self) -> Result<Option<Record>, ReadError> {
        while let Some((headers, body)) = self.next_record()? {
            if header(&headers, "WARC-Type").as_deref() == Some("conversion") {
                self.records += 1;
                return Ok(Some((headers, body)));
            }
        }
        Ok(None)
    }
}

impl Source for WetSource {
    fn read_batch(&mut self, out: &mut Vec<Raw>, budget: usize) -> Result<bool, ReadError> {
        let mut used = 0usize;
        while used < budget {
            let Some((headers, body)) = self.next_conversion()? else {
                return Ok(false);
            };
            let body = match body {
                Ok(body) => body,
                Err(length) => {
                    out.push(Raw::Bad(
                        ProblemKind::TooLong,
                        super::bytes::too_long(length, self.cap),
                    ));
                    continue;
                }
            };
            used += body.len();
            out.push(match String::from_utf8(body) {
                Ok(text) => Raw::Doc(Document {
                    text,
                    url: header(&headers, "WARC-Target-URI"),
                    timestamp: header(&headers, "WARC-Date"),
                }),
                Err(e) => Raw::Bad(ProblemKind::InvalidUtf8, e.to_string()),
            });
        }
        Ok(true)
    }

    fn skip(&mut self, n: u64) -> Result<(), ReadError> {
        for _ in 0..n {
            if self.next_conversion()?.is_none() {
                break;
            }
        }
        Ok(())
    }

    fn bytes_read(&self) -> u64 {
        self.read.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: &str, uri: &str, body: &str) -> String {
        format!(
            "WARC/1.0\r\nWARC-Type: {kind}\r\nWARC-Target-URI: {uri}\r\nWARC-Date: 2024-05-18T01:58:10Z\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}\r\n\r\n",
            body.len()
        )
    }

    #[test]
    fn conversion_records_become_documents() {
        let dir = std::env::temp_dir().join(format!("conveyor-wet-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.warc.wet");
        let text = record("warcinfo", "", "software: x\r\n")
            + &record(
                "conversion",
                "https://a.example/1",
                "First line.\nSecond é line.",
            )
            + &record("conversion", "https://a.example/2", "Other page.");
        std::fs::write(&p, text).unwrap();
        let mut s = WetSource::open(&p, Compression::None, 1 << 20).unwrap();
        let mut out = Vec::new();
        assert!(!s.read_batch(&mut out, usize::MAX).unwrap());
        assert_eq!(out.len(), 2);
        match &out[0] {
            Raw::Doc(d) => {
                assert_eq!(d.text, "First line.\nSecond é line.");
                assert_eq!(d.url.as_deref(), Some("https://a.example/1"));
                assert_eq!(d.timestamp.as_deref(), Some("2024-05-18T01:58:10Z"));
            }
            r => panic!("{r:?}"),
        }
        // A record cut short is an error naming the file.
        std::fs::write(&p, &record("conversion", "u", "abcdef")[..120]).unwrap();
        let mut s = WetSource::open(&p, Compression::None, 1 << 20).unwrap();
        let e = s.read_batch(&mut Vec::new(), usize::MAX).unwrap_err();
        assert!(e.message.contains("x.warc.wet"), "{}", e.message);
        // A Content-Length no file holds is not allocated (it aborted the process, or
        // panicked on capacity overflow): the record is cut short, named.
        for huge in ["1125899906842624", "18446744073709551615"] {
            let bomb = record("conversion", "u", "abc")
                .replace("Content-Length: 3", &format!("Content-Length: {huge}"));
            std::fs::write(&p, bomb).unwrap();
            let mut s = WetSource::open(&p, Compression::None, 1 << 20).unwrap();
            let e = s.read_batch(&mut Vec::new(), usize::MAX).unwrap_err();
            assert!(
                e.message.contains("x.warc.wet") && e.message.contains("cut short"),
                "{}",
                e.message
            );
        }
        // A record over the limit is passed over as too long; the next one reads.
        let long = "x".repeat(2000);
        std::fs::write(
            &p,
            record("conversion", "u1", &long) + &record("conversion", "u2", "short"),
        )
        .unwrap();
        let mut s = WetSource::open(&p, Compression::None, 1000).unwrap();
        let mut out = Vec::new();
        assert!(!s.read_batch(&mut out, usize::MAX).unwrap());
        assert!(
            matches!(&out[0], Raw::Bad(ProblemKind::TooLong, _)),
            "{:?}",
            out[0]
        );
        assert!(
            matches!(&out[1], Raw::Doc(d) if d.text == "short"),
            "{:?}",
            out[1]
        );
        // A header line without end is refused, not read whole.
        std::fs::write(
            &p,
            format!("WARC/1.0\r\nWARC-Type: {}", "y".repeat(100_000)),
        )
        .unwrap();
        let mut s = WetSource::open(&p, Compression::None, 1 << 20).unwrap();
        let e = s.read_batch(&mut Vec::new(), usize::MAX).unwrap_err();
        assert!(e.message.contains("not a WET file"), "{}", e.message);
    }

    #[test]
    fn the_common_crawl_excerpt_reads() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/data/c4/wet/whirlwind.warc.wet.gz");
        let mut s = WetSource::open(&p, Compression::Gzip, 1 << 20).unwrap();
        let mut out = Vec::new();
        s.read_batch(&mut out, usize::MAX).unwrap();
        assert_eq!(out.len(), 1);
        match &out[0] {
            Raw::Doc(d) => {
                assert_eq!(
                    d.url.as_deref(),
                    Some("https://an.wikipedia.org/wiki/Escopete")
                );
                assert!(d.text.len() > 1000);
            }
            r => panic!("{r:?}"),
        }
    }
}
