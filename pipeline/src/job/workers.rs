//! Splitting a job among N workers that an existing scheduler starts (a Slurm job array, a
//! Kubernetes Indexed Job, N shell processes): worker I of N takes the inputs whose index is
//! I modulo N. Every worker lists the inputs the same way (sorted paths), so the split needs
//! no coordination; each writes its part under `OUT/parts/worker-IIIII-of-NNNNN/`, and
//! `conveyor manifest merge OUT` joins the parts into the dataset one worker would have
//! written (see [`crate::merge`]).

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Worker `index` of `count` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Worker {
    pub index: usize,
    pub count: usize,
}

pub use super::PARTS_DIR;

impl Worker {
    pub fn new(index: usize, count: usize) -> Result<Worker, Error> {
        if count == 0 || index >= count {
            return Err(Error::Config(format!(
                "worker index {index} is not below the number of workers {count} (indices count from 0)"
            )));
        }
        Ok(Worker { index, count })
    }

    /// Whether input `item` (its index in the job's sorted input list) is this worker's.
    pub fn owns(&self, item: usize) -> bool {
        item % self.count == self.index
    }

    /// `worker-00003-of-00008`: the name of this worker's part folder.
    pub fn tag(&self) -> String {
        format!("worker-{:05}-of-{:05}", self.index, self.count)
    }

    /// The worker this process is, from `--worker-index` / `--num-workers` when given, else
    /// from the scheduler's environment: Slurm job arrays (`SLURM_ARRAY_TASK_ID` minus
    /// `SLURM_ARRAY_TASK_MIN`, `SLURM_ARRAY_TASK_COUNT`) or Kubernetes Indexed Jobs
    /// (`JOB_COMPLETION_INDEX`; the count must then be given). `None` means one worker does
    /// the whole job (also when the count is 1). The string says where the split came from.
    pub fn resolve(
        worker_index: Option<usize>,
        num_workers: Option<usize>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<(Worker, String)>, Error> {
        let num = |name: &str| -> Result<Option<usize>, Error> {
            env(name)
                .map(|v| {
                    v.trim().parse::<usize>().map_err(|_| {
                        Error::Config(format!("{name}={v:?} is not a non-negative integer"))
                    })
                })
                .transpose()
        };
        let slurm_index = match num("SLURM_ARRAY_TASK_ID")? {
            Some(id) => Some(
                id.checked_sub(num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0))
                    .ok_or_else(|| {
                        Error::Config("SLURM_ARRAY_TASK_ID is below SLURM_ARRAY_TASK_MIN".into())
                    })?,
            ),
            None => None,
        };
        let (index, index_from) = match (worker_index, slurm_index, num("JOB_COMPLETION_INDEX")?) {
            (Some(i), _, _) => (Some(i), "--worker-index"),
            (None, Some(i), _) => (Some(i), "SLURM_ARRAY_TASK_ID"),
            (None, None, Some(i)) => (Some(i), "JOB_COMPLETION_INDEX"),
            _ => (None, ""),
        };
        // An array with gaps (`--array=10,12`, or a step) numbers its tasks otherwise than
        // the workers 0..count: ID - MIN would give task 12 worker 1's share.
        if let (None, Some(_), Some(min), Some(max), Some(count)) = (
            worker_index,
            slurm_index,
            num("SLURM_ARRAY_TASK_MIN")?,
            num("SLURM_ARRAY_TASK_MAX")?,
            num("SLURM_ARRAY_TASK_COUNT")?,
        ) {
            if max.checked_sub(min).map(|d| d + 1) != Some(count) {
                return Err(Error::Config(format!(
                    "the Slurm array (tasks {min} to {max}, {count} of them) has gaps or a step, so this task's worker index cannot be told from SLURM_ARRAY_TASK_ID; give --num-workers and --worker-index in the batch script"
                )));
            }
        }
        // The index from an array's numbering fits only that whole array: a rerun's smaller
        // array (`--array=17` with --num-workers 64) made task 17 worker 0.
        if let (Some(n), None, Some(_), Some(count)) = (
            num_workers,
            worker_index,
            slurm_index,
            num("SLURM_ARRAY_TASK_COUNT")?,
        ) {
            if count != n {
                return Err(Error::Config(format!(
                    "--num-workers {n}, but this Slurm array has {count} task(s), so SLURM_ARRAY_TASK_ID does not give this task's worker index: give --worker-index too (e.g. --worker-index $SLURM_ARRAY_TASK_ID for an array numbered from 0)"
                )));
            }
        }
        let (count, count_from) = match (num_workers, num("SLURM_ARRAY_TASK_COUNT")?) {
            (Some(n), _) => (Some(n), "--num-workers"),
            (None, Some(n)) if index_from == "SLURM_ARRAY_TASK_ID" => {
                (Some(n), "SLURM_ARRAY_TASK_COUNT")
            }
            _ => (None, ""),
        };
        match (index, count) {
            (None, None) => Ok(None),
            (None, Some(n)) if n <= 1 => Ok(None),
            (Some(_), None) => Err(Error::Config(format!(
                "the worker index comes from {index_from} but the number of workers is unknown; pass --num-workers"
            ))),
            (None, Some(_)) => Err(Error::Config(format!(
                "the number of workers comes from {count_from} but this worker's index is unknown; pass --worker-index"
            ))),
            (Some(i), Some(n)) => {
                let w = Worker::new(i, n)?;
                Ok((n > 1).then(|| (w, format!("{index_from}, {count_from}"))))
            }
        }
    }
}

/// What every worker's `part.json` starts with (the rest depends on the job kind).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartHeader {
    /// `conveyor-ingest-part`, `conveyor-corrupt-part`, ...
    pub format: String,
    pub job: String,
    pub worker: Worker,
}

/// A worker's `part.json` of one job kind, read by [`read_part`].
pub trait Part: serde::de::DeserializeOwned {
    /// The job kind, for messages ("ingest", "corrupt", "task", "clean").
    const KIND: &'static str;
    /// Refuses names read from `source` (the part's files) that are not plain names.
    fn check_names(&self, source: &std::path::Path) -> Result<(), Error>;
}

/// Reads a worker's `part.json` as `P`, every file name in it checked.
pub fn read_part<P: Part>(path: &std::path::Path) -> Result<P, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let part: P = serde_json::from_str(&text).map_err(|e| Error::OutputDir {
        path: path.to_path_buf(),
        message: format!("not a readable {} part: {e}", P::KIND),
    })?;
    part.check_names(path)?;
    Ok(part)
}

/// The folder of worker `w`'s part in `out`.
pub fn part_dir(out: &std::path::Path, w: Worker) -> std::path::PathBuf {
    out.join(PARTS_DIR).join(w.tag())
}

/// Worker `w`'s `part.json` in `out`.
pub fn part_file(out: &std::path::Path, w: Worker) -> std::path::PathBuf {
    part_dir(out, w).join("part.json")
}

/// The item count of a split job (its inputs, or token shards) that a merge sizes its slots
/// by, from the parts' claims `(worker, claimed count, items it lists)`: every part must
/// claim the same count, and the parts together must list that many items (one worker
/// does each), so an edited `part.json` is named instead of indexing past its lists or
/// allocating for a count nobody lists.
pub fn claimed_count(
    out: &std::path::Path,
    what: &str,
    parts: &[(Worker, usize, usize)],
) -> Result<usize, Error> {
    let Some(&(first, n, _)) = parts.first() else {
        return Ok(0);
    };
    if let Some(&(w, claimed, _)) = parts.iter().find(|p| p.1 != n) {
        return Err(Error::OutputDir {
            path: part_file(out, w),
            message: format!(
                "says the job has {claimed} {what}, {} says {n}: every worker must get the same inputs and settings; rerun this worker with --overwrite",
                first.tag()
            ),
        });
    }
    let listed: usize = parts.iter().map(|p| p.2).sum();
    if listed != n {
        return Err(Error::OutputDir {
            path: out.to_path_buf(),
            message: format!(
                "the workers' parts say the job has {n} {what} and list {listed} between them: a part.json is damaged; rerun its worker with --overwrite"
            ),
        });
    }
    Ok(n)
}

/// A merge's check, before anything moves, that no two slots name the same worker file (a
/// duplicated entry in an edited part.json would otherwise fail half-way through the moves).
pub fn check_distinct<'a>(
    files: impl IntoIterator<Item = &'a std::path::PathBuf>,
) -> Result<(), Error> {
    let mut seen = std::collections::HashSet::new();
    for f in files {
        if !seen.insert(f) {
            return Err(Error::OutputDir {
                path: f.clone(),
                message: "is listed twice by the workers' parts: a part.json is damaged; rerun its worker with --overwrite and merge again".into(),
            });
        }
    }
    Ok(())
}

/// After a merge: removes the parts it merged (worker folders holding their `part.json`,
/// and dedup drop lists), then `parts/` itself when nothing else is left in it; anything
/// else there stays.
pub fn remove_parts(out: &std::path::Path) -> Result<(), Error> {
    let dir = out.join(PARTS_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let drop_list = name
            .strip_prefix("dedup-")
            .and_then(|n| n.strip_suffix(".bin"))
            .is_some_and(crate::job::outdir::is_worker_tag);
        let part = crate::job::outdir::is_worker_tag(&name) && path.join("part.json").is_file();
        if e.file_type().is_ok_and(|t| t.is_dir()) && part {
            std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        } else if drop_list && e.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    // Fails when something else is left, which stays with the folder.
    let _ = std::fs::remove_dir(&dir);
    Ok(())
}

/// The worker counts of the split jobs whose workers have work folders in `out` (named
/// `{base}-worker-IIIII-of-NNNNN`, holding conveyor's job record), running or killed.
pub fn split_work_counts(out: &std::path::Path, base: &str) -> Vec<usize> {
    let prefix = format!("{base}-worker-");
    let Ok(entries) = std::fs::read_dir(out) else {
        return Vec::new();
    };
    let mut counts: Vec<usize> = entries
        .flatten()
        .filter(|e| e.path().join(crate::job::outdir::JOB_FILE).is_file())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let tag = name.strip_prefix(&prefix)?;
            crate::job::outdir::is_worker_tag(&format!("worker-{tag}")).then_some(())?;
            tag.split_once("-of-")?.1.parse().ok()
        })
        .collect();
    counts.sort_unstable();
    counts.dedup();
    counts
}

/// Every `parts/*/part.json` in `out` with its header, in folder-name order.
pub fn read_part_files(
    out: &std::path::Path,
) -> Result<Vec<(std::path::PathBuf, PartHeader)>, Error> {
    let dir = out.join(PARTS_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut files: Vec<std::path::PathBuf> = entries
        .flatten()
        .map(|e| e.path().join("part.json"))
        .filter(|p| p.exists())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
            let h: PartHeader = serde_json::from_str(&text).map_err(|e| Error::OutputDir {
                path: p.clone(),
                message: format!("not a conveyor worker part: {e}"),
            })?;
            Ok((p, h))
        })
        .collect()
}

/// Where one worker of a split job stands in the shared output folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// The parts were already merged into this job's dataset.
    Merged,
    /// This worker's part is already there.
    PartDone,
    /// Work to do (from scratch, or resuming this worker's work folder).
    Start,
}

/// Output folder rules for worker `w` of a split job whose id is `job` and whose work
/// folder is named `work`. The folder is shared, so other workers' parts and work folders
/// are expected; a part of another job or another worker count is refused, and so is a
/// merged dataset of another job. `--overwrite` clears only this worker's part and work.
pub fn prepare_out(
    out: &std::path::Path,
    work: &str,
    job: &str,
    w: Worker,
    overwrite: bool,
    merged_job: impl FnOnce(&std::path::Path) -> Result<String, Error>,
) -> Result<WorkerState, Error> {
    let refuse = |message: String| Error::OutputDir {
        path: out.to_path_buf(),
        message,
    };
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let part = part_dir(out, w);
    let work = crate::job::outdir::work_dir(out, work);
    if overwrite {
        // Only folders conveyor claimed: a work folder records its job, a part its part.json.
        for (d, mark) in [(&part, "part.json"), (&work, "job.json")] {
            if d.join(mark).is_file() {
                std::fs::remove_dir_all(d).map_err(|e| Error::io(d, e))?;
            }
        }
    }
    if out.join("manifest.json").exists() {
        let found = merged_job(out)?;
        if found == job {
            crate::job::outdir::check_complete(out)?;
            return Ok(WorkerState::Merged);
        }
        return Err(refuse(format!(
            "holds the merged output of a different job ({found}, this one is {job}); choose another --out"
        )));
    }
    if let Some(name) = crate::job::outdir::split_stranger(out)? {
        return Err(refuse(format!(
            "holds {name}, which is not a part of a split conveyor job; the workers and the merge write only into a new or empty --out or one holding their own parts. Move {name} away or choose another --out"
        )));
    }
    let base = work.file_name().map_or(String::new(), |n| {
        let n = n.to_string_lossy();
        n.rsplit_once("-worker-")
            .map_or(n.to_string(), |(b, _)| b.to_string())
    });
    if let Some(n) = split_work_counts(out, &base)
        .into_iter()
        .find(|&n| n != w.count)
    {
        return Err(refuse(format!(
            "holds the work of a {n}-worker split; this worker was asked to be one of {}: give --num-workers {n} and --worker-index (a Slurm array of some of the tasks, such as `sbatch --array=16-17`, does not say the split's worker count or the task's index: give both in the batch script)",
            w.count
        )));
    }
    let mut done = false;
    for (_, other) in read_part_files(out)? {
        if other.job != job {
            return Err(refuse(format!(
                "holds the part of {} for a different job ({}, this one is {job}); every worker must get the same inputs, spelled the same way (`corpus`, `./corpus` and an absolute path are different inputs), and the same settings: compare this command with the inputs and settings in {}",
                other.worker.tag(),
                other.job,
                part_dir(out, other.worker).join("part.json").display()
            )));
        }
        if other.worker.count != w.count {
            return Err(refuse(format!(
                "holds a part of a {n}-worker split; this worker was asked to be one of {}: give --num-workers {n} and --worker-index (a Slurm array of some of the tasks, such as `sbatch --array=16-17`, does not say the split's worker count or the task's index: give both in the batch script)",
                w.count,
                n = other.worker.count
            )));
        }
        done |= other.worker == w;
    }
    if done {
        return Ok(WorkerState::PartDone);
    }
    if let Some(other) = crate::job::outdir::existing_job(&work) {
        if other != job {
            return Err(refuse(format!(
                "holds this worker's unfinished work of a different job ({other}); pass --overwrite to restart this worker"
            )));
        }
    }
    Ok(WorkerState::Start)
}

/// The name of a job's work folder: `base` (`.conveyor-ingest`, ...), or one per worker.
pub fn work_name(base: &str, worker: Option<Worker>) -> String {
    match worker {
        None => base.to_string(),
        Some(w) => format!("{base}-{}", w.tag()),
    }
}

/// Takes the job's lock on `out` ([`crate::job::lock::OutLock`]), then applies the output folder
/// rules of a job, whole ([`crate::job::outdir::prepare`]) or one worker's share
/// ([`prepare_out`]); returns where it stands, its work folder's name and the lock, which
/// the caller holds until the job ends. `Merged` also stands for a whole job's finished
/// output.
pub fn start_job(
    out: &std::path::Path,
    kind: super::JobKind,
    job: &str,
    worker: Option<Worker>,
    overwrite: bool,
    merged_job: impl FnOnce(&std::path::Path) -> Result<String, Error>,
) -> Result<(WorkerState, String, crate::job::lock::OutLock), Error> {
    let name = work_name(kind.work, worker);
    if out.exists() && !out.is_dir() {
        return Err(Error::OutputDir {
            path: out.to_path_buf(),
            message: "exists and is not a directory".into(),
        });
    }
    let lock = crate::job::lock::OutLock::take(out, &name)?;
    let state = match worker {
        None => match crate::job::outdir::prepare(out, kind, job, overwrite, merged_job)? {
            crate::job::outdir::OutState::Complete => WorkerState::Merged,
            crate::job::outdir::OutState::Start => WorkerState::Start,
        },
        Some(w) => prepare_out(out, &name, job, w, overwrite, merged_job)?,
    };
    Ok((state, name, lock))
}

/// The checks that `parts` (headers) make one split job of `format`: one job, one worker
/// count, every worker present exactly once. Names the missing workers.
pub fn check_parts(out: &std::path::Path, parts: &[PartHeader]) -> Result<(), Error> {
    let refuse = |message: String| Error::OutputDir {
        path: out.to_path_buf(),
        message,
    };
    let first = &parts[0];
    let count = first.worker.count;
    for p in parts {
        if p.format != first.format || p.job != first.job {
            return Err(refuse(format!(
                "{} and {} are parts of different jobs ({} {} and {} {}): the workers were given different inputs or settings",
                first.worker.tag(),
                p.worker.tag(),
                first.format,
                first.job,
                p.format,
                p.job
            )));
        }
        if p.worker.count != count {
            return Err(refuse(format!(
                "{} belongs to a {count}-worker split and {} to a {}-worker one",
                first.worker.tag(),
                p.worker.tag(),
                p.worker.count
            )));
        }
    }
    let missing: Vec<String> = (0..count)
        .filter(|i| !parts.iter().any(|p| p.worker.index == *i))
        .map(|i| i.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(refuse(format!(
            "worker(s) {} of {count} have not finished (no {PARTS_DIR}/worker-*/part.json); run them (e.g. --worker-index {} --num-workers {count}) and merge again",
            missing.join(", "),
            missing[0]
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn a_merge_sizes_nothing_by_a_count_the_parts_do_not_list() {
        let out = std::path::Path::new("out");
        let w = |index| Worker { index, count: 2 };
        assert_eq!(
            claimed_count(out, "inputs", &[(w(0), 3, 2), (w(1), 3, 1)]).unwrap(),
            3
        );
        assert_eq!(claimed_count(out, "inputs", &[]).unwrap(), 0);
        let e = claimed_count(out, "inputs", &[(w(0), 3, 2), (w(1), 1, 1)]).unwrap_err();
        assert!(
            e.to_string()
                .contains("worker-00001-of-00002/part.json: says the job has 1 inputs"),
            "{e}"
        );
        let huge = usize::MAX / 2;
        let e =
            claimed_count(out, "token shards", &[(w(0), huge, 2), (w(1), huge, 1)]).unwrap_err();
        assert!(e.to_string().contains("list 3 between them"), "{e}");
    }

    #[test]
    fn workers_split_inputs_round_robin_without_overlap() {
        let ws: Vec<Worker> = (0..3).map(|i| Worker::new(i, 3).unwrap()).collect();
        for item in 0..10 {
            assert_eq!(ws.iter().filter(|w| w.owns(item)).count(), 1);
        }
        assert!(ws[1].owns(4) && !ws[1].owns(5));
        assert_eq!(ws[2].tag(), "worker-00002-of-00003");
        assert!(Worker::new(3, 3).is_err());
    }

    #[test]
    fn flags_then_slurm_then_kubernetes() {
        let none: &[(&str, &str)] = &[];
        assert_eq!(Worker::resolve(None, None, env(none)).unwrap(), None);
        let w = |i, n| Some(Worker::new(i, n).unwrap());
        let got = |r: Option<(Worker, String)>| r.map(|(w, _)| w);
        assert_eq!(
            got(Worker::resolve(Some(1), Some(4), env(none)).unwrap()),
            w(1, 4)
        );
        let slurm = [
            ("SLURM_ARRAY_TASK_ID", "12"),
            ("SLURM_ARRAY_TASK_MIN", "10"),
            ("SLURM_ARRAY_TASK_COUNT", "5"),
        ];
        assert_eq!(
            got(Worker::resolve(None, None, env(&slurm)).unwrap()),
            w(2, 5)
        );
        // Flags win over the environment.
        assert_eq!(
            got(Worker::resolve(Some(0), Some(2), env(&slurm)).unwrap()),
            w(0, 2)
        );
        let k8s = [("JOB_COMPLETION_INDEX", "3")];
        assert_eq!(
            got(Worker::resolve(None, Some(4), env(&k8s)).unwrap()),
            w(3, 4)
        );
        let e = Worker::resolve(None, None, env(&k8s))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--num-workers"), "{e}");
        // One worker is the whole job.
        assert_eq!(Worker::resolve(Some(0), Some(1), env(none)).unwrap(), None);
        assert!(Worker::resolve(Some(4), Some(4), env(none)).is_err());
        let bad = [("SLURM_ARRAY_TASK_ID", "x")];
        assert!(Worker::resolve(None, None, env(&bad)).is_err());
        // A whole array numbered from 10 (MAX given, as Slurm does), then one with a gap.
        let mut whole = slurm.to_vec();
        whole.push(("SLURM_ARRAY_TASK_MAX", "14"));
        assert_eq!(
            got(Worker::resolve(None, None, env(&whole)).unwrap()),
            w(2, 5)
        );
        whole[3].1 = "15";
        let e = Worker::resolve(None, Some(5), env(&whole))
            .unwrap_err()
            .to_string();
        assert!(e.contains("gaps") && e.contains("--worker-index"), "{e}");
        // A rerun's array of one task with the split's size given: the index is unknown.
        let rerun = [
            ("SLURM_ARRAY_TASK_ID", "17"),
            ("SLURM_ARRAY_TASK_MIN", "17"),
            ("SLURM_ARRAY_TASK_MAX", "17"),
            ("SLURM_ARRAY_TASK_COUNT", "1"),
        ];
        let e = Worker::resolve(None, Some(64), env(&rerun))
            .unwrap_err()
            .to_string();
        assert!(e.contains("give --worker-index too"), "{e}");
        assert_eq!(
            got(Worker::resolve(Some(17), Some(64), env(&rerun)).unwrap()),
            w(17, 64)
        );
    }
}
