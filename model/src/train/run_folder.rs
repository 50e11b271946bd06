//! What a run keeps in its folder: the folder itself (refused when it holds a run and
//! --resume is not given, or files that are not a conveyor run's), metrics.jsonl, run.json,
//! model_config.json and RUN/diverged.json.

use std::io::Write;
use std::path::{Path, PathBuf};

use conveyor_pipeline::run_info::{Diverged, RunInfo};
use conveyor_pipeline::run_lock::{is_run_lock, RunKind, RunLock};

use super::{data_kind, io_error, DataKind, StepMetrics, TrainConfig, TrainError, TrainProgress};
use crate::checkpoint;

/// Rank 0 creates the run folder and locks it for the run (a second training process on
/// it is refused: [`RunLock`]); every rank finds the checkpoint to resume (the folder must
/// be shared by all ranks). A folder holding a run is refused without --resume; a folder
/// holding anything but a run is refused always (the trainer rewrites its files).
pub(super) fn prepare_out(
    cfg: &TrainConfig,
    rank: usize,
    progress: &dyn TrainProgress,
) -> Result<(Option<PathBuf>, Option<RunLock>), TrainError> {
    let mut lock = None;
    if rank == 0 {
        refuse_foreign(&cfg.out)?;
        std::fs::create_dir_all(&cfg.out).map_err(|e| io_error(&cfg.out, e))?;
        let taken = RunLock::take(&cfg.out, RunKind::Train)?;
        if !taken.held() {
            progress.note(&format!(
                "{} is on a file system without file locks: nothing stops a second trainer on it",
                cfg.out.display()
            ));
        }
        lock = Some(taken);
    }
    let existing = checkpoint::latest(&cfg.out)?;
    if existing.is_some() && !cfg.resume {
        return Err(TrainError::Refused(format!(
            "{} already holds a run; pass --resume to continue it, or choose another --out",
            cfg.out.display()
        )));
    }
    // The run starts again: an earlier divergence is history (the study reads it as final).
    if rank == 0 {
        Diverged::clear(&cfg.out)?;
    }
    Ok((existing, lock))
}

/// Refuses an `--out` that exists and is not empty unless it holds a conveyor run (a
/// run.json naming a known architecture, written before anything else of a run): the
/// trainer rewrites metrics.jsonl, run.json and model_config.json and replaces checkpoint
/// folders, which it may do only to files it wrote.
fn refuse_foreign(out: &Path) -> Result<(), TrainError> {
    let refuse = |what: String| {
        TrainError::Refused(format!(
            "{} {what}; choose an empty or new --out",
            out.display()
        ))
    };
    if out.exists() && !out.is_dir() {
        return Err(refuse("exists and is not a folder".into()));
    }
    // The lock of a run killed before its run.json was written is not content.
    let first = match std::fs::read_dir(out) {
        Ok(entries) => entries
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .find(|name| !name.as_ref().is_ok_and(|n| is_run_lock(n))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(out, e)),
    };
    let Some(first) = first else { return Ok(()) };
    let is_run = RunInfo::read(out).is_ok_and(|r| crate::config::Arch::parse(&r.arch).is_some());
    if is_run {
        return Ok(());
    }
    let name = first.unwrap_or_default();
    Err(refuse(format!(
        "is not empty (it holds {name}) and is not a conveyor training run (no run.json of one)"
    )))
}

/// The error of a step whose loss (or, at a checkpoint, weights) are not finite; rank 0 records it in RUN/diverged.json so
/// that a study can tell a diverged run from a failed one.
pub(super) fn diverged(
    cfg: &TrainConfig,
    rank: usize,
    step: u64,
    loss: String,
    weights: Option<String>,
    last: Option<&Path>,
) -> TrainError {
    let record = Diverged {
        step,
        loss,
        weights,
    };
    let what = match &record.weights {
        None => format!("loss became {}", record.loss),
        Some(name) => format!("update left {name} non-finite"),
    };
    if rank == 0 {
        if let Err(e) = record.write(&cfg.out) {
            return e.into();
        }
    }
    TrainError::NonFinite {
        step,
        what,
        last: last
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "none (no checkpoint was written yet)".into()),
    }
}

/// `metrics.jsonl` of the run (rank 0): lines of steps after the checkpoint resumed from
/// belong to the interrupted run and are dropped.
pub(super) struct MetricsFile {
    path: PathBuf,
    file: std::fs::File,
}

/// The largest metrics.jsonl a resume reads (a line per step is ~200 bytes: 5 M steps).
const MAX_METRICS_BYTES: u64 = 1 << 30;

/// The lines of `metrics.jsonl` a run resumed at `step` keeps: the metrics of steps up to it
/// (later ones are the interrupted run's, written again; a line cut short by a full disk or
/// a crash, or one that is not metrics at all, goes, so readers of the file can trust every
/// line). The file is split as bytes (a line that was not UTF-8 made the whole file read as
/// empty, and the run's history vanish); one that is not a regular file (a link, a FIFO) or
/// cannot be read is an error naming it.
fn kept_metrics(path: &Path, step: u64) -> Result<Vec<u8>, TrainError> {
    let refuse = |why: String| {
        TrainError::Refused(format!(
            "{} {why}: a run's metrics.jsonl is a file conveyor writes; move it away to resume",
            path.display()
        ))
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(path, e)),
        Ok(m) if !m.is_file() => return Err(refuse("is not a regular file".into())),
        Ok(m) if m.len() > MAX_METRICS_BYTES => {
            return Err(refuse(format!("is {} bytes", m.len())))
        }
        Ok(_) => {}
    }
    let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
    let kept_line = |line: &[u8]| {
        line.ends_with(b"\n")
            && serde_json::from_slice::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= step)
    };
    let mut kept = Vec::with_capacity(bytes.len());
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        if kept_line(line) {
            kept.extend_from_slice(line);
        }
    }
    Ok(kept)
}

impl MetricsFile {
    pub(super) fn open(cfg: &TrainConfig, step: u64, fresh: bool) -> Result<Self, TrainError> {
        // run.json first: it is what marks the folder as a run (refuse_foreign).
        if fresh {
            RunInfo {
                arch: cfg.model.arch.name().into(),
                init: cfg.init.as_ref().map(|p| p.display().to_string()),
                data: cfg.data.display().to_string(),
                objective: match data_kind(&cfg.data)? {
                    DataKind::Tokens(_) => "span_corruption (on the fly)".to_string(),
                    DataKind::Examples(m) => m.settings.objective.to_string(),
                },
                parameters: cfg.model.parameter_count(),
                precision: cfg.precision.name().into(),
                seed: Some(cfg.seed),
            }
            .write(&cfg.out)?;
        }
        let path = cfg.out.join("metrics.jsonl");
        let kept = kept_metrics(&path, step)?;
        // Whole, under a temporary name: a failed rewrite leaves the old file.
        conveyor_pipeline::manifest::write_atomic(&path, &kept)?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        let p = cfg.out.join("model_config.json");
        let text = serde_json::to_string_pretty(&cfg.model).expect("config serialises") + "\n";
        conveyor_pipeline::manifest::write_atomic(&p, text.as_bytes())?;
        Ok(Self { path, file })
    }

    pub(super) fn write(&mut self, m: &StepMetrics) -> Result<(), TrainError> {
        writeln!(
            self.file,
            "{}",
            serde_json::to_string(m).expect("metrics serialise")
        )
        .map_err(|e| io_error(&self.path, e))
    }
}
