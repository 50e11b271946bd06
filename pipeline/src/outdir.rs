//! The output folder rules every job follows: an empty or new folder starts the job, a
//! folder with this job's unfinished work resumes it, a folder with this job's finished
//! output is left as it is, and anything else is refused unless `--overwrite`, which removes
//! only what a conveyor job writes (the manifest, `*-of-*.parquet` shards, cleaned files,
//! the work folder, and the parts and work folders of a job split among workers).

use std::path::Path;

use crate::error::Error;

/// What the output folder holds for this job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutState {
    /// Nothing yet (or unfinished work of this job, to resume).
    Start,
    /// This job's finished output.
    Complete,
}

/// Where the job keeps its unfinished work inside `out`.
pub fn work_dir(out: &Path, name: &str) -> std::path::PathBuf {
    out.join(name)
}

/// Applies the rules. `work` names the job kind's work folder (`.conveyor-ingest`, ...);
/// `finished_job` reads the job id of a finished output's manifest.
pub fn prepare(
    out: &Path,
    work: &str,
    job: &str,
    overwrite: bool,
    finished_job: impl FnOnce(&Path) -> Result<String, Error>,
) -> Result<OutState, Error> {
    let refuse = |message: String| Error::OutputDir {
        path: out.to_path_buf(),
        message,
    };
    if out.exists() && !out.is_dir() {
        return Err(refuse("exists and is not a directory".into()));
    }
    if overwrite {
        clear_outputs(out, work)?;
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let work_path = work_dir(out, work);
    if out.join(MANIFEST).exists() {
        let found = finished_job(out)?;
        if found == job {
            // A kill between writing the manifest and removing the work folder.
            if work_path.exists() {
                std::fs::remove_dir_all(&work_path).map_err(|e| Error::io(&work_path, e))?;
            }
            return Ok(OutState::Complete);
        }
        return Err(refuse(format!(
            "holds the output of a different job (job {found}, this one is {job}); pass --overwrite to replace it or choose another --out"
        )));
    }
    if let Some(other) = existing_job(&work_path) {
        if other != job {
            return Err(refuse(format!(
                "holds an unfinished different job ({other}, this one is {job}); rerun that job's command to finish it, or pass --overwrite"
            )));
        }
        return Ok(OutState::Start);
    }
    let foreign = std::fs::read_dir(out)
        .map_err(|e| Error::io(out, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next();
    if let Some(name) = foreign {
        return Err(refuse(format!(
            "is not empty (it holds {name}) and is not a conveyor output; choose an empty or new --out, or pass --overwrite"
        )));
    }
    Ok(OutState::Start)
}

/// Renames a finished file to its final place unless an earlier, interrupted run already
/// did (so finalizing and merging can be repeated after a kill); if it is in neither place,
/// fails with `missing` (what to do) naming `from`.
pub fn rename_once(from: &Path, to: &Path, missing: &str) -> Result<(), Error> {
    if from.exists() {
        std::fs::rename(from, to).map_err(|e| Error::io(from, e))
    } else if to.exists() {
        Ok(())
    } else {
        Err(Error::OutputDir {
            path: from.to_path_buf(),
            message: missing.to_string(),
        })
    }
}

/// What a finalize says when a shard it journaled is gone.
pub const FINISHED_SHARD_MISSING: &str =
    "a finished shard is missing; rerun with --overwrite to start again";

const MANIFEST: &str = "manifest.json";

/// True for the files a finished conveyor output holds at its top level: the manifest,
/// shards (`…-of-NNNNN.parquet`) and cleaned files (`c4-clean.IIIII-of-NNNNN.json.gz`).
/// What `--overwrite` may remove, locally and at a URL.
pub fn is_output_file(name: &str) -> bool {
    let numbered = name.contains("-of-");
    name == MANIFEST
        || (numbered && name.ends_with(".parquet"))
        || (numbered && name.starts_with("c4-clean.") && name.ends_with(".json.gz"))
}
const JOB_FILE: &str = "job.json";

/// The job id recorded in a work folder, if any.
pub fn existing_job(work: &Path) -> Option<String> {
    std::fs::read_to_string(work.join(JOB_FILE))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Creates the work folder and records the job id in it (once).
pub fn claim(work: &Path, job: &str) -> Result<(), Error> {
    std::fs::create_dir_all(work).map_err(|e| Error::io(work, e))?;
    let path = work.join(JOB_FILE);
    if !path.exists() {
        crate::manifest::write_atomic(&path, job.as_bytes())?;
    }
    Ok(())
}

/// `--overwrite`: removes what a conveyor job writes and nothing else.
fn clear_outputs(out: &Path, work: &str) -> Result<(), Error> {
    if !out.is_dir() {
        return Ok(());
    }
    let worker_work = format!("{work}-worker-");
    let work = work_dir(out, work);
    if work.exists() {
        std::fs::remove_dir_all(&work).map_err(|e| Error::io(&work, e))?;
    }
    for entry in std::fs::read_dir(out)
        .map_err(|e| Error::io(out, e))?
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        // Workers' parts and work folders of a split job (see crate::workers).
        if name == crate::workers::PARTS_DIR || name.starts_with(&worker_work) {
            std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
            continue;
        }
        if is_output_file(&name) {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}
