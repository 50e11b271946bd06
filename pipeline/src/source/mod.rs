//! The source stage: reading documents out of corpus files. One trait, [`Source`], with an
//! implementation per format; inputs are chosen by extension.

mod bytes;
mod jsonl;
mod parquet;
mod parse;
mod text;
mod wet;

use std::path::{Path, PathBuf};

pub use crate::record::{ProblemKind, TxtMode, MAX_DOCUMENT_BYTES};
pub use parse::{parse_json_line, JsonFields};

use crate::error::Error;

/// A document read from an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub text: String,
    pub url: Option<String>,
    pub timestamp: Option<String>,
}

/// A record that was skipped, with its 1-based line (or row) number in the file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    pub line: u64,
    pub kind: ProblemKind,
    pub message: String,
}

/// One record as read, before (possibly parallel) parsing.
#[derive(Debug)]
pub enum Raw {
    /// A JSON line still to be parsed.
    Json(Vec<u8>),
    /// A document that needs no parsing.
    Doc(Document),
    /// A record that is already known to be bad.
    Bad(ProblemKind, String),
}

/// A file that could not be read to its end (corrupt or truncated compression, I/O error).
#[derive(Debug, Clone)]
pub struct ReadError {
    /// Records read successfully before the failure.
    pub records: u64,
    pub message: String,
    /// A remote input that could not be reached (or changed while read): not damage to record
    /// in the manifest but a reason to stop the job, so that a rerun resumes it.
    pub unreachable: bool,
}

impl ReadError {
    pub fn new(records: u64, message: String) -> ReadError {
        ReadError {
            records,
            message,
            unreachable: false,
        }
    }

    /// From an I/O error: an unreachable remote input keeps its own message, anything else
    /// gets `message()`.
    pub fn io(records: u64, e: &std::io::Error, message: impl FnOnce() -> String) -> ReadError {
        match crate::remote::read::unreachable_message(e) {
            Some(m) => ReadError {
                records,
                message: m,
                unreachable: true,
            },
            None => ReadError::new(records, message()),
        }
    }
}

/// The source stage: a file read as a sequence of records, in order.
pub trait Source: Send {
    /// Appends records to `out` until about `budget` bytes were read or the file ends.
    /// Returns false once the file is exhausted.
    fn read_batch(&mut self, out: &mut Vec<Raw>, budget: usize) -> Result<bool, ReadError>;

    /// Skips the next `n` records without parsing them (used when resuming).
    fn skip(&mut self, n: u64) -> Result<(), ReadError>;

    /// Compressed bytes consumed so far, for progress.
    fn bytes_read(&self) -> u64;
}

/// Input formats, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    JsonLines(Compression),
    /// WARC/WET extracted text (Common Crawl).
    Wet(Compression),
    Parquet,
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Format {
    /// The format of a path from its extension, or None if unsupported.
    pub fn of(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let ends = |s: &str| name.ends_with(s);
        Some(if ends(".warc.wet.gz") || ends(".wet.gz") {
            Format::Wet(Compression::Gzip)
        } else if ends(".warc.wet.zst") || ends(".wet.zst") {
            Format::Wet(Compression::Zstd)
        } else if ends(".warc.wet") || ends(".wet") {
            Format::Wet(Compression::None)
        } else if ends(".json.gz") || ends(".jsonl.gz") {
            Format::JsonLines(Compression::Gzip)
        } else if ends(".json.zst") || ends(".jsonl.zst") {
            Format::JsonLines(Compression::Zstd)
        } else if ends(".jsonl") || ends(".json") {
            Format::JsonLines(Compression::None)
        } else if ends(".parquet") {
            Format::Parquet
        } else if ends(".txt") {
            Format::Text
        } else {
            return None;
        })
    }
}

/// Options that shape how records are read.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    pub text_field: String,
    pub txt_mode: TxtMode,
    /// Records (JSON lines, text lines or files, Parquet cells, WET records) above this
    /// many bytes are skipped and counted as `too_long`, so memory stays bounded.
    pub max_document_bytes: usize,
}

/// Opens `path` as a source of its format.
pub fn open(path: &Path, opts: &SourceOptions) -> Result<Box<dyn Source>, Error> {
    match Format::of(path) {
        Some(Format::JsonLines(c)) => Ok(Box::new(jsonl::JsonLines::open(
            path,
            c,
            opts.max_document_bytes,
        )?)),
        Some(Format::Wet(c)) => Ok(Box::new(wet::WetSource::open(
            path,
            c,
            opts.max_document_bytes,
        )?)),
        Some(Format::Parquet) => Ok(Box::new(parquet::ParquetSource::open(
            path,
            &opts.text_field,
        )?)),
        Some(Format::Text) => Ok(Box::new(text::TextSource::open(
            path,
            opts.txt_mode,
            opts.max_document_bytes,
        )?)),
        None => Err(Error::UnsupportedInput {
            path: path.to_path_buf(),
        }),
    }
}

/// Turns a raw record into a document, or says why it is skipped (`limit`: the largest
/// text kept, see [`SourceOptions::max_document_bytes`]).
pub fn parse(raw: Raw, text_field: &str, limit: usize) -> Result<Document, (ProblemKind, String)> {
    let doc = match raw {
        Raw::Json(bytes) => parse_json_line(&bytes, text_field)?,
        Raw::Doc(d) => d,
        Raw::Bad(kind, msg) => return Err((kind, msg)),
    };
    if doc.text.len() > limit {
        return Err((
            ProblemKind::TooLong,
            bytes::too_long(doc.text.len() as u64, limit),
        ));
    }
    Ok(doc)
}

/// Expands the command-line inputs (files, directories searched recursively, glob patterns,
/// URLs of objects, prefixes or patterns; see [`crate::remote::list`]) into a list of files.
/// Order: arguments as given; within a directory, prefix or pattern, sorted by path.
/// Duplicates are dropped. Every argument must match something.
pub fn expand_inputs(args: &[String]) -> Result<Vec<PathBuf>, Error> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for arg in args {
        let mut found = Vec::new();
        let p = Path::new(arg);
        if crate::remote::is_url(arg) {
            let corpus =
                |name: &str| name != "manifest.json" && Format::of(Path::new(name)).is_some();
            found.extend(
                crate::remote::list::expand(arg, &corpus)?
                    .into_iter()
                    .map(PathBuf::from),
            );
        } else if p.is_dir() {
            walk(p, &mut found).map_err(|e| Error::io(p, e))?;
            if found.is_empty() {
                return Err(Error::NoInputs(arg.clone()));
            }
        } else if p.exists() {
            if Format::of(p).is_none() {
                return Err(Error::UnsupportedInput {
                    path: p.to_path_buf(),
                });
            }
            found.push(p.to_path_buf());
        } else if arg.contains(['*', '?', '[']) {
            let paths =
                glob::glob(arg).map_err(|e| Error::Config(format!("bad pattern {arg}: {e}")))?;
            for entry in paths.flatten() {
                if entry.is_file() && Format::of(&entry).is_some() {
                    found.push(entry);
                }
            }
            if found.is_empty() {
                return Err(Error::NoInputs(arg.clone()));
            }
        } else {
            return Err(Error::MissingInput(arg.clone()));
        }
        found.sort();
        for f in found {
            // One file named twice (`a.jsonl ./a.jsonl`, a link to it, a folder and a file in
            // it) is read once: by its real path where it has one (a URL as written).
            let real = if crate::remote::is_url(&f.to_string_lossy()) {
                f.clone()
            } else {
                std::fs::canonicalize(&f).unwrap_or_else(|_| f.clone())
            };
            if seen.insert(real) {
                out.push(f);
            }
        }
    }
    Ok(out)
}

/// The corpus files under `dir`, links to folders followed once each (a link to `.` looped;
/// a `latest` link beside a crawl is read through once, its files deduplicated by the caller).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    walk_once(dir, out, &mut std::collections::HashSet::new())
}

fn walk_once(
    dir: &Path,
    out: &mut Vec<PathBuf>,
    visited: &mut std::collections::HashSet<PathBuf>,
) -> std::io::Result<()> {
    if !visited.insert(std::fs::canonicalize(dir)?) {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        // A conveyor manifest in a folder of inputs (e.g. `conveyor clean`'s output) is not a
        // corpus file.
        let manifest = path.file_name().is_some_and(|n| n == "manifest.json");
        if path.is_dir() {
            walk_once(&path, out, visited)?;
        } else if Format::of(&path).is_some() && !manifest {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_named_twice_is_read_once_and_links_to_folders_are_not_followed() {
        let dir = std::env::temp_dir().join(format!("conveyor-expand-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a.jsonl"), "{}\n").unwrap();
        std::fs::write(dir.join("sub/b.jsonl"), "{}\n").unwrap();
        std::os::unix::fs::symlink(".", dir.join("loop")).unwrap();
        std::os::unix::fs::symlink("sub", dir.join("latest")).unwrap();
        std::os::unix::fs::symlink("a.jsonl", dir.join("c.jsonl")).unwrap();
        let d = dir.display().to_string();
        let got = expand_inputs(&[
            d.clone(),
            format!("{d}/a.jsonl"),
            format!("{d}/./a.jsonl"),
            format!("{d}/sub/../a.jsonl"),
        ])
        .unwrap();
        // a.jsonl once (c.jsonl is a link to it), b.jsonl once (through latest/, the first in
        // name order, not again through sub/, and not endlessly through loop/).
        assert_eq!(got, [dir.join("a.jsonl"), dir.join("latest/b.jsonl")]);
        // A folder reached only through a link is read.
        let other = dir.join("other");
        std::fs::create_dir_all(&other).unwrap();
        std::os::unix::fs::symlink(dir.join("sub"), other.join("linked")).unwrap();
        let got = expand_inputs(&[other.display().to_string()]).unwrap();
        assert_eq!(got, [other.join("linked/b.jsonl")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn formats_by_extension() {
        assert_eq!(
            Format::of(Path::new("c4-train.00000-of-01024.json.gz")),
            Some(Format::JsonLines(Compression::Gzip))
        );
        assert_eq!(
            Format::of(Path::new("a.JSONL.zst")),
            Some(Format::JsonLines(Compression::Zstd))
        );
        assert_eq!(
            Format::of(Path::new("a.jsonl")),
            Some(Format::JsonLines(Compression::None))
        );
        assert_eq!(Format::of(Path::new("a.parquet")), Some(Format::Parquet));
        assert_eq!(Format::of(Path::new("a.txt")), Some(Format::Text));
        assert_eq!(Format::of(Path::new("a.csv")), None);
    }

    #[test]
    fn missing_inputs_are_refused() {
        assert!(matches!(
            expand_inputs(&["/no/such/file.jsonl".into()]),
            Err(Error::MissingInput(_))
        ));
        assert!(matches!(
            expand_inputs(&["/no/such/*.jsonl".into()]),
            Err(Error::NoInputs(_))
        ));
    }
}
