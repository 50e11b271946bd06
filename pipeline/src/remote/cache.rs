//! What the copies in a stage folder are copies of: the version (size, ETag, modification
//! time) of each object when it was fetched, kept beside the folder in `FOLDER.fetched.json`
//! (outside it, so no dataset or job folder ever holds a stranger). Processes sharing a
//! folder (the ranks of one training run) fetch into it one at a time
//! ([`crate::run_lock::RunLock::wait`] on `FOLDER.fetch.lock`). A copy is reused only
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

/// One object's version as its store reports it; none where the store gives neither an
/// ETag nor a modification time (a bare HTTP server: its copies are fetched every time,
/// since nothing could tell a rewritten object of the same size).
fn version(m: &ObjectMeta) -> Option<String> {
    let dated = m.last_modified.timestamp() != 0;
    (m.e_tag.is_some() || dated).then(|| {
        format!(
            "{} {} {}",
            m.size,
            m.e_tag.as_deref().unwrap_or("-"),
            m.last_modified.to_rfc3339()
        )
    })
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
            && version(m).is_some_and(|v| self.versions.get(rel) == Some(&v))
    }

    /// Notes that `rel` now holds a copy of `m`.
    pub fn fetched(&mut self, rel: &str, m: &ObjectMeta) {
        match version(m) {
            Some(v) => self.versions.insert(rel.to_string(), v),
            None => self.versions.remove(rel),
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(e_tag: Option<&str>, seconds: i64) -> ObjectMeta {
        ObjectMeta {
            location: object_store::path::Path::from("d/train.tsv"),
            last_modified: chrono::DateTime::from_timestamp(seconds, 0).unwrap(),
            size: 5,
            e_tag: e_tag.map(String::from),
            version: None,
        }
    }

    #[test]
    fn a_copy_is_current_only_for_the_version_it_was_fetched_from() {
        let dir = std::env::temp_dir().join(format!("conveyor-fetched-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let copy = dir.join("train.tsv");
        std::fs::write(&copy, b"12345").unwrap();
        let mut f = Fetched::open(&dir);
        let v1 = meta(Some("\"a\""), 1_700_000_000);
        f.fetched("train.tsv", &v1);
        f.save().unwrap();
        let f = Fetched::open(&dir);
        assert!(f.is_current("train.tsv", &copy, &v1));
        // Rewritten at the same size: another ETag, or (no ETag) another date.
        assert!(!f.is_current("train.tsv", &copy, &meta(Some("\"b\""), 1_700_000_000)));
        let dated = meta(None, 1_700_000_000);
        let mut f = Fetched::open(&dir);
        f.fetched("train.tsv", &dated);
        assert!(f.is_current("train.tsv", &copy, &dated));
        assert!(!f.is_current("train.tsv", &copy, &meta(None, 1_700_000_001)));
        // A store that says neither: never taken as current.
        let bare = meta(None, 0);
        f.fetched("train.tsv", &bare);
        assert!(!f.is_current("train.tsv", &copy, &bare));
        f.remove().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
