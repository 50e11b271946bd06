//! What a run keeps in its folder: the folder itself (refused when it holds a run and
//! --resume is not given), metrics.jsonl, run.json, model_config.json and RUN/diverged.json.

use std::io::Write;
use std::path::{Path, PathBuf};

use conveyor_pipeline::run_info::Diverged;

use super::{data_kind, io_error, DataKind, StepMetrics, TrainConfig, TrainError};
use crate::checkpoint;

/// Rank 0 creates the run folder; every rank finds the checkpoint to resume (the folder must
/// be shared by all ranks). A folder holding a run is refused without --resume.
pub(super) fn prepare_out(cfg: &TrainConfig, rank: usize) -> Result<Option<PathBuf>, TrainError> {
    if rank == 0 {
        std::fs::create_dir_all(&cfg.out).map_err(|e| io_error(&cfg.out, e))?;
    }
    let existing = checkpoint::latest(&cfg.out);
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
    Ok(existing)
}

/// The error of a step whose loss is not finite; rank 0 records it in RUN/diverged.json so
/// that a study can tell a diverged run from a failed one.
pub(super) fn diverged(
    cfg: &TrainConfig,
    rank: usize,
    step: u64,
    value: f64,
    last: Option<&Path>,
) -> TrainError {
    if rank == 0 {
        let record = Diverged {
            step,
            loss: value.to_string(),
        };
        if let Err(e) = record.write(&cfg.out) {
            return e.into();
        }
    }
    TrainError::NonFinite {
        step,
        value,
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

impl MetricsFile {
    pub(super) fn open(cfg: &TrainConfig, step: u64, fresh: bool) -> Result<Self, TrainError> {
        let path = cfg.out.join("metrics.jsonl");
        let kept: Vec<String> = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v["step"].as_u64())
                    .is_some_and(|s| s <= step)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&path, kept.concat()).map_err(|e| io_error(&path, e))?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        if fresh {
            conveyor_pipeline::run_info::RunInfo {
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
        let p = cfg.out.join("model_config.json");
        std::fs::write(
            &p,
            serde_json::to_string_pretty(&cfg.model).expect("config serialises") + "\n",
        )
        .map_err(|e| io_error(&p, e))?;
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
