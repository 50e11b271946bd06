//! The pages of clean's outputs: the C4 JSON-lines writer, reading pages back, and the
//! corpus-wide line dedup (first occurrence in input order kept).

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{LineDrop, PageDrop, RuleCounts};
use crate::error::Error;
use crate::source::{self, Document};

/// Calls `f(page index, page)` for every page of a C4 JSON-lines `.json.gz` file conveyor
/// wrote (an output or a worker's filtered pages).
pub(super) fn read_pages(
    file: &Path,
    mut f: impl FnMut(usize, Document) -> Result<(), Error>,
) -> Result<(), Error> {
    let reader = std::io::BufReader::new(flate2::read::GzDecoder::new(
        std::fs::File::open(file).map_err(|e| Error::io(file, e))?,
    ));
    for (i, line) in std::io::BufRead::lines(reader).enumerate() {
        let line = line.map_err(|e| Error::io(file, e))?;
        let doc = source::parse_json_line(line.as_bytes(), "text").map_err(|(_, m)| {
            Error::OutputDir {
                path: file.to_path_buf(),
                message: m,
            }
        })?;
        f(i, doc)?;
    }
    Ok(())
}

/// Line dedup across the corpus: the first occurrence of a line (lower-cased, trimmed) in
/// input order is kept.
#[derive(Default)]
pub(super) struct Dedup {
    seen: HashSet<[u8; 16]>,
    /// The first occurrences on pages dropped after the dedup since the last
    /// [`Dedup::take_dropped`]: seen, but in no output (a resumed run reads them back).
    dropped: Vec<[u8; 16]>,
}

impl Dedup {
    /// Marks every line of a finished output file as seen (resuming a killed run).
    pub fn add_output(&mut self, file: &Path) -> Result<(), Error> {
        read_pages(file, |_, doc| {
            for l in doc.text.split('\n') {
                self.seen.insert(line_key(l));
            }
            Ok(())
        })
    }

    /// The page's lines not seen before, or None (counted) when none is left or they hold
    /// fewer than `min_sentences` sentences.
    pub fn keep(
        &mut self,
        lines: Vec<String>,
        min_sentences: usize,
        counts: &mut RuleCounts,
    ) -> Option<Vec<String>> {
        let before = lines.len();
        let mut keys = Vec::new();
        let kept: Vec<String> = lines
            .into_iter()
            .filter(|l| {
                let k = line_key(l);
                self.seen.insert(k) && {
                    keys.push(k);
                    true
                }
            })
            .collect();
        let page = after_dedup(kept, before, min_sentences, counts);
        if page.is_none() {
            self.dropped.extend(keys);
        }
        page
    }

    /// The keys [`Dedup::keep`] saw on pages it dropped, since the last call.
    pub fn take_dropped(&mut self) -> Vec<[u8; 16]> {
        std::mem::take(&mut self.dropped)
    }

    /// Marks keys written by [`Dedup::take_dropped`]'s caller as seen (resuming).
    pub fn add_keys(&mut self, bytes: &[u8]) {
        for k in bytes.chunks_exact(16) {
            self.seen.insert(k.try_into().expect("16 bytes"));
        }
    }
}

/// A page after line dedup (`before` lines in): counts the dropped lines, and the page
/// (None) when none is left or, as C4's dedup does, when what is left holds fewer than
/// `min_sentences` sentences (a page that kept one line of three).
pub(super) fn after_dedup(
    kept: Vec<String>,
    before: usize,
    min_sentences: usize,
    counts: &mut RuleCounts,
) -> Option<Vec<String>> {
    let dupes = (before - kept.len()) as u64;
    if dupes > 0 {
        *counts.lines_dropped.entry(LineDrop::Duplicate).or_default() += dupes;
    }
    let drop = if kept.is_empty() {
        PageDrop::AllLinesDuplicate
    } else if dupes > 0 && super::rules::count_sentences(&kept.join("\n")) < min_sentences {
        PageDrop::TooFewSentencesAfterDedup
    } else {
        return Some(kept);
    };
    *counts.pages_dropped.entry(drop).or_default() += 1;
    None
}

/// Writes pages as C4 JSON lines (`text`, `timestamp`, `url`), gzip.
pub(super) struct PageWriter {
    path: PathBuf,
    gz: flate2::write::GzEncoder<std::io::BufWriter<std::fs::File>>,
    text_bytes: u64,
}

impl PageWriter {
    pub fn create(path: &Path) -> Result<Self, Error> {
        let f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            gz: flate2::write::GzEncoder::new(
                std::io::BufWriter::new(f),
                flate2::Compression::new(6),
            ),
            text_bytes: 0,
        })
    }

    pub fn page(&mut self, text: &str, doc: &Document) -> Result<(), Error> {
        let row = serde_json::json!({"text": text, "timestamp": doc.timestamp, "url": doc.url});
        let mut line = serde_json::to_vec(&row).expect("row serialises");
        line.push(b'\n');
        self.text_bytes += text.len() as u64;
        self.gz
            .write_all(&line)
            .map_err(|e| Error::io(&self.path, e))
    }

    /// Finishes the file; returns the bytes of text written.
    /// Ends the file, on disk (synced): (text bytes written, the file's size).
    pub fn finish(self) -> Result<(u64, u64), Error> {
        let file = self
            .gz
            .finish()
            .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
            .and_then(|f| f.sync_all().map(|_| f))
            .and_then(|f| f.metadata())
            .map_err(|e| Error::io(&self.path, e))?;
        Ok((self.text_bytes, file.len()))
    }
}

/// The dedup key of a line: a digest of it lower-cased and trimmed.
pub(super) fn line_key(line: &str) -> [u8; 16] {
    let d = Sha256::digest(line.trim().to_lowercase().as_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&d[..16]);
    k
}
