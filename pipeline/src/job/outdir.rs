//! The output folder rules every job follows: an empty or new folder starts the job, a
//! folder with this job's unfinished work resumes it, a folder with this job's finished
//! output is left as it is, and anything else is refused unless `--overwrite`, which removes
//! only what the existing manifest lists and conveyor's own work and parts folders, after
//! checking that the folder holds nothing else (see [`clear_outputs`]).

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

/// Runs a job that writes into `out` (`shared`: a worker's, whose folder the others use too);
/// when it fails, a folder it made goes again while nothing is in it: a failed run leaves no
/// empty output behind (a folder that was there before, or holds anything, stays).
pub fn removed_if_failed_empty<T, E>(
    out: &Path,
    shared: bool,
    job: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    let made = !shared && !out.exists();
    let done = job();
    if done.is_err() && made {
        // Fails, leaving it, unless the folder is empty.
        let _ = std::fs::remove_dir(out);
    }
    done
}

/// Where the job keeps its unfinished work inside `out`.
pub fn work_dir(out: &Path, name: &str) -> std::path::PathBuf {
    out.join(name)
}

/// Applies the rules for a job of `kind` (its work folder and manifest format);
/// `finished_job` reads the job id of a finished output's manifest.
pub fn prepare(
    out: &Path,
    kind: super::JobKind,
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
    let work = kind.work;
    if overwrite {
        clear_outputs(out, kind)?;
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let work_path = work_dir(out, work);
    if out.join(MANIFEST).exists() {
        let found = finished_job(out)?;
        if found == job {
            check_complete(out)?;
            // A kill between writing the manifest and removing the work folder.
            if work_path.exists() {
                std::fs::remove_dir_all(&work_path).map_err(|e| Error::io(&work_path, e))?;
            }
            return Ok(OutState::Complete);
        }
        return Err(Error::OtherJob {
            path: out.to_path_buf(),
            found,
            job: job.to_string(),
        });
    }
    if let Some(other) = existing_job(&work_path) {
        if other != job {
            return Err(Error::OtherUnfinishedJob {
                path: out.to_path_buf(),
                found: other,
                job: job.to_string(),
            });
        }
        remove_manifest_temporaries(out)?;
        return Ok(OutState::Start);
    }
    // A split job's parts: this process was asked to run the whole job, most often by a
    // scheduler rerunning one worker (`sbatch --array=17` is an array of one task).
    let parts = super::workers::read_part_files(out)?;
    let running = super::workers::split_work_counts(out, work);
    if let (None, Some(&n)) = (parts.first(), running.first()) {
        return Err(refuse(format!(
            "holds the work of a {n}-worker split of a job (its workers' work folders), and this process was asked to run the whole job as one: to run a worker of that split give --num-workers {n} --worker-index I (a Slurm array of some of the tasks, such as `sbatch --array=17`, does not say the split's worker count: give both flags in the batch script). --overwrite would remove their work"
        )));
    }
    if let Some((_, p)) = parts.first() {
        return Err(refuse(format!(
            "holds the parts of a {n}-worker split ({} of them finished), and this process was asked to run the whole job as one: to run a worker of that split give --num-workers {n} --worker-index I (a Slurm array of some of the tasks, such as `sbatch --array=17`, does not say the split's worker count: give both flags in the batch script); once all {n} are finished, `conveyor manifest merge` joins them. --overwrite would remove them",
            parts.len(),
            n = p.worker.count
        )));
    }
    let foreign = std::fs::read_dir(out)
        .map_err(|e| Error::io(out, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|name| !crate::job::lock::is_lock_file(name));
    if let Some(name) = foreign {
        return Err(refuse(format!(
            "is not empty (it holds {name}) and is not a conveyor output; choose an empty or new --out (--overwrite replaces only what conveyor wrote, so it does not help here)"
        )));
    }
    Ok(OutState::Start)
}

/// A finished output is "already complete" only when every file its manifest lists is there
/// at the size it lists: a missing or truncated one is named, with what to do.
pub fn check_complete(out: &Path) -> Result<(), Error> {
    let manifest = out.join(MANIFEST);
    let text = std::fs::read_to_string(&manifest).map_err(|e| Error::io(&manifest, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let (entries, key) = listed_entries(&v);
    for entry in entries {
        let Some(name) = entry[key].as_str() else {
            continue;
        };
        let path = crate::contain::join(out, name, &manifest)?;
        let listed = entry["bytes"].as_u64();
        let damaged = |what: String| {
            Error::Verify {
            path: path.clone(),
            message: format!(
                "{what}: this finished output is damaged; rerun the command with --overwrite to make it again"
            ),
        }
        };
        match std::fs::metadata(&path) {
            Err(_) => return Err(damaged("is missing".into())),
            Ok(m) if listed.is_some_and(|b| b != m.len()) => {
                return Err(damaged(format!(
                    "is {} bytes, its manifest lists {}",
                    m.len(),
                    listed.unwrap_or_default()
                )))
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

/// A resumed job removes the temporary manifests a killed run of it left (by their names,
/// [`crate::manifest::is_temporary_of`]).
fn remove_manifest_temporaries(out: &Path) -> Result<(), Error> {
    for e in std::fs::read_dir(out)
        .map_err(|e| Error::io(out, e))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if crate::manifest::is_temporary_of(&name, MANIFEST)
            && e.file_type().is_ok_and(|t| t.is_file())
        {
            std::fs::remove_file(e.path()).map_err(|err| Error::io(&e.path(), err))?;
        }
    }
    Ok(())
}

/// Renames a finished file to its final place unless an earlier, interrupted run already
/// did (so finalizing and merging can be repeated after a kill); if it is in neither place,
/// fails with `missing` (what to do) naming `from`; if it is in both, see [`check_place`].
pub fn rename_once(from: &Path, to: &Path, missing: &str) -> Result<(), Error> {
    if from.exists() && to.symlink_metadata().is_ok() {
        check_place(from, to)?;
        // The same bytes in both places (a rerun after an interrupted move): one is enough.
        std::fs::remove_file(from).map_err(|e| Error::io(from, e))
    } else if from.exists() {
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

/// Before anything moves: a file already in `to`'s place while `from` is still there must
/// hold `from`'s very bytes (an interrupted move redone, a staging folder downloaded again);
/// anything else there is someone else's, named and left.
pub fn check_place(from: &Path, to: &Path) -> Result<(), Error> {
    let (Ok(a), Ok(b)) = (std::fs::metadata(from), to.symlink_metadata()) else {
        return Ok(());
    };
    let same = b.is_file()
        && a.len() == b.len()
        && crate::shard::file_sha256(from)? == crate::shard::file_sha256(to)?;
    if same {
        return Ok(());
    }
    Err(super::moves::in_the_way(from, to))
}

/// What a finalize says when a shard it journaled is gone.
pub const FINISHED_SHARD_MISSING: &str =
    "a finished shard is missing; rerun with --overwrite to start again";

const MANIFEST: &str = "manifest.json";

/// True for the files a finished conveyor output holds at its top level: the manifest,
/// shards (`…-of-NNNNN.parquet`) and cleaned files (`c4-clean.IIIII-of-NNNNN.json.gz`).
/// What `--overwrite` may remove, locally and at a URL.
pub fn is_output_file(name: &str) -> bool {
    // SPLIT-IIIII-of-NNNNN.parquet, SPLIT a valid split name.
    let shard = name
        .strip_suffix(".parquet")
        .and_then(|stem| {
            let (head, _) = stem.rsplit_once("-of-")?;
            let (split, _) = head.rsplit_once('-')?;
            Some((split, &stem[split.len() + 1..]))
        })
        .is_some_and(|(split, rest)| {
            numbered(rest) && crate::contain::check_split(split, "a shard").is_ok()
        });
    let cleaned = name
        .strip_prefix("c4-clean.")
        .and_then(|n| n.strip_suffix(".json.gz"))
        .is_some_and(numbered);
    name == MANIFEST || shard || cleaned
}

/// A temporary file an unfinished job of conveyor's may leave at the top of its output: an
/// output file's (`NAME.tmp`) or the manifest's (`manifest::create_temporary`'s name).
fn is_output_temporary(name: &str) -> bool {
    name.strip_suffix(".tmp").is_some_and(is_output_file)
        || crate::manifest::is_temporary_of(name, MANIFEST)
}
pub(crate) const JOB_FILE: &str = "job.json";

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

/// `--overwrite`: removes what the existing output's manifest lists (and conveyor's own work
/// and parts folders), and only after checking that everything in `out` is one of those;
/// a folder holding anything else is refused before a file is touched.
fn clear_outputs(out: &Path, kind: super::JobKind) -> Result<(), Error> {
    if !out.is_dir() {
        return Ok(());
    }
    for path in overwrite_plan(out, kind)? {
        let res = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match res {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&path, e)),
            _ => {}
        }
    }
    Ok(())
}

/// What `--overwrite` removes from `out`, decided before anything is removed.
fn overwrite_plan(out: &Path, kind: super::JobKind) -> Result<Vec<std::path::PathBuf>, Error> {
    let work = kind.work;
    let mut remove = Vec::new();
    let mut known = std::collections::HashSet::new();
    let manifest = out.join(MANIFEST);
    if manifest.exists() {
        for name in listed_files(&manifest, kind.format)? {
            let path = crate::contain::join(out, &name, &manifest)?;
            if path.symlink_metadata().is_ok_and(|m| !m.is_file()) {
                return Err(Error::OutputDir {
                    path: manifest.clone(),
                    message: format!(
                        "lists {name}, which is not a file; nothing was removed. Remove the folder by hand if it is yours to remove"
                    ),
                });
            }
            remove.push(path);
            known.insert(name);
        }
        remove.push(manifest);
        known.insert(MANIFEST.to_string());
    }
    // An unfinished job of this kind (its claimed work folder is there) may have left
    // shards under their final names, or a temporary manifest, before a kill.
    let unfinished = work_dir(out, work).join(JOB_FILE).is_file();
    let worker_work = format!("{work}-worker-");
    for entry in std::fs::read_dir(out)
        .map_err(|e| Error::io(out, e))?
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if known.contains(&name) || crate::job::lock::is_lock_file(&name) {
            continue;
        }
        let file = path.symlink_metadata().is_ok_and(|m| m.is_file());
        let ours = if name == work || name.starts_with(&worker_work) {
            path.join(JOB_FILE).is_file()
        } else if name == super::PARTS_DIR {
            is_parts_folder(&path, true)
        } else {
            unfinished && file && (is_output_file(&name) || is_output_temporary(&name))
        };
        if !ours {
            return Err(Error::OutputDir {
                path: out.to_path_buf(),
                message: format!(
                    "holds {name}, which no conveyor manifest there lists; --overwrite removes only what conveyor wrote, so nothing was removed. Move {name} away or choose another --out"
                ),
            });
        }
        remove.push(path);
    }
    Ok(remove)
}

/// A manifest's entries and the key naming each one's file: token and example manifests
/// list `shards` (`file`), clean manifests `files` (`output`).
pub(crate) fn listed_entries(v: &serde_json::Value) -> (&[serde_json::Value], &'static str) {
    let (list, key) = match v.get("shards") {
        Some(list) => (list, "file"),
        None => (&v["files"], "output"),
    };
    (list.as_array().map(Vec::as_slice).unwrap_or_default(), key)
}

/// The files an existing `manifest.json` lists, after checking it is the manifest of an
/// output this job (named by its work folder) may replace.
fn listed_files(manifest: &Path, writes: &str) -> Result<Vec<String>, Error> {
    let refuse = |message: String| Error::OutputDir {
        path: manifest.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(manifest).map_err(|e| Error::io(manifest, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        refuse(format!(
            "is not a conveyor manifest ({e}); --overwrite replaces only conveyor outputs, so nothing was removed"
        ))
    })?;
    let format = v["format"].as_str().unwrap_or_default();
    if format != writes {
        return Err(refuse(format!(
            "holds a {format:?} output, which this command does not write ({writes}); nothing was removed. Choose another --out"
        )));
    }
    let (names, key) = listed_entries(&v);
    names
        .iter()
        .map(|entry| match entry[key].as_str() {
            Some(name) if is_output_file(name) && name != MANIFEST => Ok(name.to_string()),
            Some(name) => Err(refuse(format!(
                "lists {name:?}, which is not a name conveyor gives its outputs (NAME-IIIII-of-NNNNN.parquet, c4-clean.IIIII-of-NNNNN.json.gz); --overwrite removes only what conveyor wrote, so nothing was removed"
            ))),
            None => Err(refuse(format!("lists an entry without a {key:?}: {entry}"))),
        })
        .collect()
}

/// The first entry of a split job's `out` that none of its workers or its merge wrote: a
/// split job's folder holds lock files, work folders (`.conveyor-*`), `parts/`
/// (worker folders and drop lists, by name; a running worker's has no part.json yet) and,
/// after an interrupted merge, output files under their final names.
pub fn split_stranger(out: &Path) -> Result<Option<String>, Error> {
    let Ok(entries) = std::fs::read_dir(out) else {
        return Ok(None);
    };
    for e in entries {
        let e = e.map_err(|e| Error::io(out, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        let ours = crate::job::lock::is_lock_file(&name)
            // Another worker's work folder (it may not have written its job.json yet).
            || (is_dir && name.starts_with(".conveyor-"))
            || (is_dir && name == super::PARTS_DIR && is_parts_folder(&path, false))
            || (!is_dir && (is_output_file(&name) || is_output_temporary(&name)));
        if !ours {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// A killed `--dedup-shard`'s temporary drop list (`manifest::create_temporary`'s name).
fn is_drop_list_temporary(name: &str) -> bool {
    name.strip_prefix(".dedup-")
        .and_then(|n| n.split_once(".bin."))
        .is_some_and(|(tag, _)| {
            is_worker_tag(tag)
                && crate::manifest::is_temporary_of(name, &format!("dedup-{tag}.bin"))
        })
}

/// A `parts/` folder of a split job: worker folders (`worker-IIIII-of-NNNNN/`, holding their
/// `part.json` when `finished`: a running worker's has none yet) and dedup drop lists
/// (`dedup-worker-IIIII-of-NNNNN.bin`, or a killed `--dedup-shard`'s temporary one) only.
fn is_parts_folder(dir: &Path, finished: bool) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().all(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(kind) = e.file_type() else {
            return false;
        };
        match name
            .strip_prefix("dedup-")
            .and_then(|n| n.strip_suffix(".bin"))
        {
            Some(tag) => kind.is_file() && is_worker_tag(tag),
            None if kind.is_file() => is_drop_list_temporary(&name),
            None => {
                kind.is_dir()
                    && is_worker_tag(&name)
                    && (!finished || e.path().join("part.json").is_file())
            }
        }
    })
}

/// `worker-IIIII-of-NNNNN`, as [`super::workers::Worker::tag`] writes it.
pub(crate) fn is_worker_tag(name: &str) -> bool {
    name.strip_prefix("worker-").is_some_and(numbered)
}

/// `IIIII-of-NNNNN` (five digits or more each), as shard, output and worker names number.
fn numbered(s: &str) -> bool {
    let digits = |d: &str| d.len() >= 5 && d.bytes().all(|b| b.is_ascii_digit());
    s.split_once("-of-")
        .is_some_and(|(i, n)| digits(i) && digits(n))
}

/// Refuses an `--out` that is, holds or is inside one of the job's local inputs, before
/// `--overwrite` could remove them.
pub fn check_not_input(out: &Path, inputs: &[std::path::PathBuf]) -> Result<(), Error> {
    match inputs
        .iter()
        .find(|i| i.exists() && crate::contain::overlaps(out, i))
    {
        Some(input) => Err(Error::OutputDir {
            path: out.to_path_buf(),
            message: format!(
                "is, holds or is inside the input {}; write the output to a folder of its own",
                input.display()
            ),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the names conveyor gives its outputs count as its outputs.
    #[test]
    fn output_names_are_matched_exactly() {
        for ours in [
            "manifest.json",
            "train-00003-of-00020.parquet",
            "my.split-2-00000-of-00001.parquet",
            "c4-clean.00001-of-00002.json.gz",
        ] {
            assert!(is_output_file(ours), "{ours}");
        }
        for theirs in [
            "state-of-the-art.parquet",
            "-00000-of-00001.parquet",
            "train-3-of-20.parquet",
            "train-00003-of-00020.parquet.bak",
            "c4-clean.x-of-y.json.gz",
            "notes-of-00001.parquet",
        ] {
            assert!(!is_output_file(theirs), "{theirs}");
        }
        assert!(is_output_temporary("train-00000-of-00001.parquet.tmp"));
        assert!(is_output_temporary(".manifest.json.77-0.tmp"));
        assert!(!is_output_temporary("notes.tmp"));
        assert!(!is_output_temporary("manifest.tmp"));
    }
}
