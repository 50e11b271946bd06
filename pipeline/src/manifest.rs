//! `manifest.json`: what a token directory holds and how it was made. Other tools rely on
//! it (docs/formats.md): format and version, vocabulary, exact configuration and inputs,
//! per-shard rows / tokens / bytes / sha256, totals, and every skipped record.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::record::{ProblemKind, TxtMode};

pub const TOKENS_FORMAT: &str = "conveyor.tokens";
pub const TOKENS_VERSION: u32 = 1;
/// Problems listed one by one in a manifest; beyond this only counts are kept.
pub const MAX_LISTED_PROBLEMS: usize = 1000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VocabInfo {
    pub path: String,
    pub sha256: String,
    pub size: usize,
    pub unk_id: u32,
    pub eos_id: Option<u32>,
    pub pad_id: Option<u32>,
}

/// The settings that decide the output; two runs with equal settings and inputs write
/// identical files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestSettings {
    pub split: String,
    pub text_field: String,
    pub txt_mode: TxtMode,
    pub append_eos: bool,
    pub shard_bytes: u64,
    pub shard_tokens: Option<u64>,
    pub token_type: String,
    /// Documents above this many bytes are skipped as `too_long` (16 MiB in manifests
    /// written before the limit existed, which had none).
    #[serde(default = "default_max_document_bytes")]
    pub max_document_bytes: usize,
}

fn default_max_document_bytes() -> usize {
    crate::record::MAX_DOCUMENT_BYTES
}

/// Per-input (or per-segment) counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Records read (lines or rows), bad ones included.
    pub records: u64,
    /// Documents written.
    pub documents: u64,
    pub tokens: u64,
    /// UTF-8 bytes of the documents' text.
    pub text_bytes: u64,
    /// Skipped records by reason.
    pub skipped: BTreeMap<ProblemKind, u64>,
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.records += other.records;
        self.documents += other.documents;
        self.tokens += other.tokens;
        self.text_bytes += other.text_bytes;
        for (k, v) in &other.skipped {
            *self.skipped.entry(*k).or_default() += v;
        }
    }

    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputRecord {
    pub path: String,
    /// The name written in the shards' `source` column.
    pub name: String,
    pub bytes: u64,
    /// A local input's modification time (nanoseconds since 1970): a rerun over a file
    /// edited in place at the same size is another job's, not "already complete". Absent for
    /// URLs and in manifests written before the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<u64>,
    #[serde(flatten)]
    pub counts: Counts,
    /// Why the file could not be read to its end, if it could not.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardRecord {
    pub file: String,
    pub rows: u64,
    pub tokens: u64,
    pub bytes: u64,
    pub sha256: String,
    /// The input the rows come from and the range of its records they cover.
    pub input: usize,
    pub first_record: u64,
    pub end_record: u64,
}

/// A skipped record, located by file and 1-based line (or row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileProblem {
    pub file: String,
    pub line: u64,
    pub kind: ProblemKind,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub created_by: String,
    /// A digest of the inputs, vocabulary and settings: reruns of the same job match it.
    pub job: String,
    pub vocab: VocabInfo,
    pub settings: IngestSettings,
    pub tokenizer: String,
    pub inputs: Vec<InputRecord>,
    pub shards: Vec<ShardRecord>,
    pub totals: Counts,
    pub failed_inputs: usize,
    pub problems: Vec<FileProblem>,
    pub problems_total: u64,
}

/// A dataset manifest with a format name and version (token and example datasets): what
/// [`read_versioned`] needs to read one and refuse another.
pub trait Versioned: serde::de::DeserializeOwned {
    /// The format name it must have, and the newest version this conveyor reads.
    const FORMAT: &'static str;
    const VERSION: u32;
    /// How a reader calls it ("conveyor manifest").
    const WHAT: &'static str;
    /// What such a folder is, for messages.
    const FOLDER: &'static str;
    fn format_version(&self) -> (&str, u32);
    /// Refuses names read from `source` that are not plain names.
    fn check_names(&self, source: &Path) -> Result<(), Error>;
}

/// The `format` named by `DIR/manifest.json` ("" when it names none), to pick the typed
/// reader: an unreadable file is an I/O error, text that is not JSON a manifest error.
pub fn format_of(dir: &Path) -> Result<String, Error> {
    let path = dir.join(Manifest::FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Manifest {
        path: path.clone(),
        message: format!("not JSON: {e}"),
    })?;
    Ok(v["format"].as_str().unwrap_or_default().to_string())
}

/// Reads `DIR/manifest.json` as `M`: parsed, of `M`'s format and a version this conveyor
/// reads, every name in it a plain name.
pub fn read_versioned<M: Versioned>(dir: &Path) -> Result<M, Error> {
    let path = dir.join(Manifest::FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    // Another kind of conveyor folder is named as such (it was "missing field text_field").
    let format = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("format")?.as_str().map(str::to_string));
    if let Some(f) = format.filter(|f| f != M::FORMAT && f.starts_with("conveyor")) {
        return Err(Error::Manifest {
            path,
            message: format!(
                "is the manifest of a {f} folder, and this command reads {} folders: give it a folder of that kind ({})",
                M::FORMAT,
                M::FOLDER
            ),
        });
    }
    let m: M = serde_json::from_str(&text).map_err(|e| Error::Manifest {
        path: path.clone(),
        message: format!("not a {}: {e}", M::WHAT),
    })?;
    let (format, version) = m.format_version();
    if format != M::FORMAT || version > M::VERSION {
        return Err(Error::Manifest {
            path,
            message: format!(
                "format {format} version {version} is not one this conveyor reads ({} <= {})",
                M::FORMAT,
                M::VERSION
            ),
        });
    }
    m.check_names(&path)?;
    Ok(m)
}

impl Versioned for Manifest {
    const FORMAT: &'static str = TOKENS_FORMAT;
    const VERSION: u32 = TOKENS_VERSION;
    const WHAT: &'static str = "conveyor manifest";
    const FOLDER: &'static str = "token shards, as ingest writes them";

    fn format_version(&self) -> (&str, u32) {
        (&self.format, self.version)
    }

    fn check_names(&self, source: &Path) -> Result<(), Error> {
        Manifest::check_names(self, source)
    }
}

impl Manifest {
    pub const FILE: &'static str = "manifest.json";

    /// Reads `DIR/manifest.json`.
    pub fn read(dir: &Path) -> Result<Manifest, Error> {
        read_versioned(dir)
    }

    /// Refuses a split or shard name (read from `source`) that is not a plain name.
    pub fn check_names(&self, source: &Path) -> Result<(), Error> {
        let files = self.shards.iter().map(|s| s.file.as_str());
        crate::manifest::check_names(&self.settings.split, files, source)
    }

    /// Writes `DIR/manifest.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<(), Error> {
        let text = serde_json::to_string_pretty(self).expect("manifest serialises") + "\n";
        write_atomic(&dir.join(Self::FILE), text.as_bytes())
    }
}

/// Refuses a dataset manifest's split or shard names (read from `source`) that are not
/// plain names, or a shard listed twice (read twice an epoch, in place of another);
/// token and example manifests share the rule.
pub fn check_names<'a>(
    split: &str,
    files: impl IntoIterator<Item = &'a str>,
    source: &Path,
) -> Result<(), Error> {
    crate::contain::check_split(split, &source.display().to_string())?;
    let mut seen = std::collections::HashSet::new();
    for f in files {
        crate::contain::check_name(f, source)?;
        if !seen.insert(f) {
            return Err(Error::Manifest {
                path: source.to_path_buf(),
                message: format!(
                    "the shard {f:?} is listed twice: the file was edited or is damaged; re-create the data (a worker's part.json: rerun its worker with --overwrite)"
                ),
            });
        }
    }
    Ok(())
}

/// `DIR/FILE` for one of the shards a dataset manifest (`DIR/manifest.json`) lists, kept
/// inside `dir`.
pub fn shard_path(dir: &Path, file: &str) -> Result<std::path::PathBuf, Error> {
    crate::contain::join(dir, file, &dir.join(Manifest::FILE))
}

/// Lower-case hexadecimal of `bytes` (how sha256 sums are written in manifests).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a file through a temporary name and a rename, so readers never see half of it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let res = (|| {
        use std::io::Write;
        let (tmp, mut f) = create_temporary(path)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    res.map_err(|e| Error::io(path, e))
}

/// A new file beside `path` to write it under until it is whole: hidden, named after it and
/// this process (`.NAME.PID-N.tmp`) and created only if no file has that name, so that no
/// file of a user's (`NAME.tmp`, say) is ever written over.
pub fn create_temporary(path: &Path) -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut n = 0;
    loop {
        let tmp = path.with_file_name(format!(".{name}.{}-{n}.tmp", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Whether `name` is one of [`create_temporary`]'s names for `of` (a killed writer's).
pub fn is_temporary_of(name: &str, of: &str) -> bool {
    name.strip_prefix('.')
        .and_then(|n| n.strip_prefix(of))
        .and_then(|n| n.strip_prefix('.'))
        .and_then(|n| n.strip_suffix(".tmp"))
        .is_some_and(|id| {
            id.split_once('-').is_some_and(|(pid, k)| {
                [pid, k]
                    .iter()
                    .all(|x| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of a user's under the old temporary name (`NAME.tmp`) is never written over.
    #[test]
    fn atomic_writes_leave_other_files_alone() {
        let dir = std::env::temp_dir().join(format!("conveyor-atomic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("report.json");
        std::fs::write(dir.join("report.tmp"), "mine").unwrap();
        let (taken, _f) = create_temporary(&target).unwrap();
        write_atomic(&target, b"{}").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "{}");
        assert_eq!(
            std::fs::read_to_string(dir.join("report.tmp")).unwrap(),
            "mine"
        );
        let name = taken.file_name().unwrap().to_str().unwrap();
        assert!(is_temporary_of(name, "report.json"), "{name}");
        assert!(!is_temporary_of("report.tmp", "report.json"));
        assert!(!is_temporary_of(".report.json.x-1.tmp", "report.json"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn counts_add_up() {
        let mut a = Counts {
            records: 3,
            documents: 2,
            tokens: 10,
            text_bytes: 40,
            skipped: [(ProblemKind::Empty, 1)].into(),
        };
        a.add(&a.clone());
        assert_eq!(
            (a.records, a.documents, a.tokens, a.skipped_total()),
            (6, 4, 20, 2)
        );
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.contains("\"empty\":2"), "{json}");
    }
}
