//! The ingest job's journal: how a killed run resumes. Work happens in `OUT/.conveyor-ingest/`
//! (`OUT/.conveyor-ingest-worker-IIIII-of-NNNNN/` for one worker of a split job):
//! `job.json` names the job, finished shards sit there as `shard-NNNNN.parquet`, and
//! `journal.jsonl` gets one line per finished shard or input, appended only after the shard
//! file is complete and synced. A rerun replays the journal, drops anything after its last
//! whole line, and carries on from there; shard boundaries depend only on the data, so the
//! result is the one an uninterrupted run would have written.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::manifest::{Counts, FileProblem, ShardRecord};

pub const WORK_DIR: &str = ".conveyor-ingest";
const JOURNAL_FILE: &str = "journal.jsonl";

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// A shard was finished; `counts` and `problems` cover the records since the previous
    /// entry of the same input.
    Shard {
        shard: ShardRecord,
        counts: Counts,
        problems: Vec<FileProblem>,
    },
    /// An input was read to its end (or to a read error).
    InputDone {
        input: usize,
        end_record: u64,
        counts: Counts,
        problems: Vec<FileProblem>,
        error: Option<String>,
    },
    /// Every input is done; shards may be being renamed to their final names.
    Finalizing { shards: usize },
}

pub struct Journal {
    dir: PathBuf,
    file: File,
    pub entries: Vec<Entry>,
}

/// The work folder's name: [`WORK_DIR`], or one per worker of a split job.
pub fn work_name(worker: Option<crate::job::workers::Worker>) -> String {
    crate::job::workers::work_name(WORK_DIR, worker)
}

impl Journal {
    /// Opens the journal of `job` in `out`'s work folder `work` (see [`work_name`]),
    /// starting a new one if there is none.
    pub fn open(out: &Path, work: &str, job: &str) -> Result<Journal, Error> {
        let dir = crate::job::outdir::work_dir(out, work);
        crate::job::outdir::claim(&dir, job)?;
        let path = dir.join(JOURNAL_FILE);
        let mut entries = Vec::new();
        let mut good_len = 0u64;
        if let Ok(f) = File::open(&path) {
            let mut r = BufReader::new(f);
            let mut line = String::new();
            loop {
                line.clear();
                let n = r.read_line(&mut line).map_err(|e| Error::io(&path, e))?;
                // A line without its newline was cut short by a kill: drop it.
                if n == 0 || !line.ends_with('\n') {
                    break;
                }
                match serde_json::from_str::<Entry>(&line) {
                    Ok(e) => entries.push(e),
                    Err(_) => break,
                }
                good_len += n as u64;
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        file.set_len(good_len).map_err(|e| Error::io(&path, e))?;
        Ok(Journal { dir, file, entries })
    }

    /// Appends an entry and syncs it.
    pub fn append(&mut self, entry: Entry) -> Result<(), Error> {
        let path = self.dir.join(JOURNAL_FILE);
        let mut line = serde_json::to_string(&entry).expect("entry serialises");
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.sync_data())
            .map_err(|e| Error::io(&path, e))?;
        self.entries.push(entry);
        Ok(())
    }

    /// Where shard `index` is written before its final rename.
    pub fn shard_path(&self, index: usize) -> PathBuf {
        self.dir.join(format!("shard-{index:05}.parquet"))
    }

    /// Shards finished so far.
    pub fn shards(&self) -> impl Iterator<Item = &ShardRecord> {
        self.entries.iter().filter_map(|e| match e {
            Entry::Shard { shard, .. } => Some(shard),
            _ => None,
        })
    }

    pub fn input_done(&self, input: usize) -> bool {
        self.entries
            .iter()
            .any(|e| matches!(e, Entry::InputDone { input: i, .. } if *i == input))
    }

    /// The record of `input` to continue from: the end of its last finished shard.
    pub fn resume_record(&self, input: usize) -> u64 {
        self.shards()
            .filter(|s| s.input == input)
            .map(|s| s.end_record)
            .max()
            .unwrap_or(0)
    }

    pub fn finalizing(&self) -> bool {
        self.entries
            .iter()
            .any(|e| matches!(e, Entry::Finalizing { .. }))
    }

    /// Removes the work directory once the output is complete.
    pub fn remove(self) -> Result<(), Error> {
        drop(self.file);
        std::fs::remove_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("conveyor-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn replays_whole_lines_and_drops_a_torn_one() {
        let out = tmpdir("torn");
        let mut j = Journal::open(&out, WORK_DIR, "job1").unwrap();
        j.append(Entry::Finalizing { shards: 2 }).unwrap();
        drop(j);
        let path = crate::job::outdir::work_dir(&out, WORK_DIR).join(JOURNAL_FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"kind\":\"finaliz").unwrap();
        drop(f);
        let mut j = Journal::open(&out, WORK_DIR, "job1").unwrap();
        assert_eq!(j.entries.len(), 1);
        assert!(j.finalizing());
        j.append(Entry::Finalizing { shards: 3 }).unwrap();
        drop(j);
        let j = Journal::open(&out, WORK_DIR, "job1").unwrap();
        assert_eq!(j.entries.len(), 2);
        assert_eq!(
            crate::job::outdir::existing_job(&crate::job::outdir::work_dir(&out, WORK_DIR))
                .as_deref(),
            Some("job1")
        );
        j.remove().unwrap();
        assert!(!crate::job::outdir::work_dir(&out, WORK_DIR).exists());
    }
}
