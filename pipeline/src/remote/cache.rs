//! What the copies in a stage folder are copies of: the version (size, ETag, modification
//! time) of each object when it was fetched, kept beside the folder in `FOLDER.fetched.json`
//! (outside it, so no dataset or job folder ever holds a stranger). A copy is reused only
//! while its object is still that version: a cache keyed by size alone kept the old copy of
//! an object rewritten at the same size (a task file with its labels flipped), and trained
//! on it without a word.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use object_store::ObjectMeta;

use crate::error::Error;

/// The versions of the objects whose copies lie under one stage folder, by relative path.
pub struct Fetched {
    record: PathBuf,
    versions: BTreeMap<String, String>,
}

/// One object's version as its store reports it.
fn version(m: &ObjectMeta) -> String {
    format!(
        "{} {} {}",
        m.size,
        m.e_tag.as_deref().unwrap_or("-"),
        m.last_modified.to_rfc3339()
    )
}

impl Fetched {
    /// The record for the copies under `dir` (none yet, or unreadable: every copy is fetched
    /// again).
    pub fn open(dir: &Path) -> Fetched {
        let mut name = dir.file_name().unwrap_or_default().to_os_string();
        name.push(".fetched.json");
        let record = dir.with_file_name(name);
        let versions = std::fs::read(&record)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Fetched { record, versions }
    }

    /// Whether `path` is a whole copy of the object `m` describes, fetched as `rel`.
    pub fn is_current(&self, rel: &str, path: &Path, m: &ObjectMeta) -> bool {
        std::fs::metadata(path).is_ok_and(|f| f.len() == m.size)
            && self.versions.get(rel) == Some(&version(m))
    }

    /// Notes that `rel` now holds a copy of `m`.
    pub fn fetched(&mut self, rel: &str, m: &ObjectMeta) {
        self.versions.insert(rel.to_string(), version(m));
    }

    /// Forgets `rel` (a copy found damaged: the next read fetches it again).
    pub fn forget(&mut self, rel: &str) {
        self.versions.remove(rel);
    }

    /// Removes the record (its stage folder is being removed).
    pub fn remove(self) -> Result<(), Error> {
        match std::fs::remove_file(&self.record) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&self.record, e)),
            _ => Ok(()),
        }
    }

    /// Writes the record (whole, under a temporary name).
    pub fn save(&self) -> Result<(), Error> {
        if let Some(parent) = self.record.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let text = serde_json::to_vec_pretty(&self.versions).expect("a map of strings");
        crate::manifest::write_atomic(&self.record, &text)
    }
}
