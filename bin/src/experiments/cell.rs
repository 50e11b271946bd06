//! One fine-tuning run of a study's grid: its folder, its training (or resumption) through
//! `conveyor-torch finetune`, its evaluation on the dev split, and the guard that refuses to
//! reuse a folder another cell trained.

use std::path::{Path, PathBuf};

use conveyor_pipeline::run_info::{Diverged, RunInfo};
use conveyor_tasks::EvalSummary;

use super::progress::{Progress, FINETUNE};
use super::report::Best;
use super::study::{checkpoint, Cmd};
use super::study_file::{Score, Study, TaskCell};
use crate::torch_handoff::run_torch;

/// One fine-tuning run of the grid and its evaluation.
pub(super) struct Cell<'a> {
    pub task: &'a TaskCell,
    pub arch: &'a str,
    pub pretrained: bool,
    pub lr: f64,
    pub seed: u64,
}

impl Cell<'_> {
    fn kind(&self) -> &'static str {
        if self.pretrained {
            "pretrained"
        } else {
            "scratch"
        }
    }

    pub fn what(&self) -> String {
        format!(
            "{} {} {} lr {} seed {}",
            self.task.name,
            self.arch,
            self.kind(),
            self.lr,
            self.seed
        )
    }

    /// OUT/runs/TASK-ARCH-KIND-lrLR-sSEED.
    fn run_folder(&self, out: &Path) -> PathBuf {
        out.join(format!(
            "runs/{}-{}-{}-lr{}-s{}",
            self.task.name,
            self.arch,
            self.kind(),
            self.lr,
            self.seed
        ))
    }

    /// Trains (or resumes) the run; its final checkpoint, or the record of its divergence.
    pub fn finetune(
        &self,
        st: &Study,
        train: &Path,
        out: &Path,
        progress: &mut Progress,
    ) -> anyhow::Result<Result<PathBuf, Diverged>> {
        let f = &st.finetune;
        let steps = st.steps(self.task);
        let pre = checkpoint(
            &out.join(format!(
                "runs/pretrain-{}-s{}",
                self.arch,
                st.init_seed(self.seed)
            )),
            st.pretrain.steps,
        );
        let cmd = Cmd::new(&["finetune"])
            .arg("--task", &self.task.name)
            .path("--data", train)
            .arg("--arch", self.arch)
            .arg("--preset", &st.pretrain.preset)
            .arg("--batch-size", f.batch_size)
            .arg("--lr", self.lr)
            .arg("--seed", self.seed)
            .arg("--checkpoint-every", st.checkpoint_every(self.task))
            .arg("--device", &st.device)
            .opt_path("--config", st.pretrain.config.as_deref())
            .opt_path("--init", self.pretrained.then_some(pre.as_path()));
        let run = self.run_folder(out);
        let init = self.pretrained.then_some(pre.as_path());
        same_run(out, &run, self.arch, self.seed, init, train)?;
        let what = format!("fine-tune {}", self.what());
        Ok(match progress.train(FINETUNE, &what, &run, steps, cmd.0)? {
            None => Ok(checkpoint(&run, steps)),
            Some(d) => Err(d),
        })
    }

    /// The score of a run that diverged: none (its evaluations are skipped).
    pub fn diverged(&self, st: &Study, out: &Path, d: Diverged, progress: &mut Progress) -> Best {
        if st.finetune.score == Score::Best {
            self.skip_curve(st, progress);
        }
        progress.skip(&format!("evaluate {}", self.what()));
        Best {
            task: self.task.name.clone(),
            arch: self.arch.to_string(),
            pretrained: self.pretrained,
            lr: self.lr,
            seed: self.seed,
            accuracy: f64::NAN,
            run: self.run_folder(out),
            eval: PathBuf::new(),
            curve: Vec::new(),
            diverged: Some(d),
        }
    }

    /// The evaluations along the run that will not happen.
    pub fn skip_curve(&self, st: &Study, progress: &mut Progress) {
        for step in st.curve_steps(self.task) {
            progress.skip(&format!("evaluate {} at step {step}", self.what()));
        }
    }

    /// Evaluates the run at each 1/curve of its steps and at its last: its score is the best
    /// of them (on a tie the later checkpoint), `curve` holds them all.
    pub fn evaluate_best(
        &self,
        st: &Study,
        out: &Path,
        dev: &Path,
        progress: &mut Progress,
    ) -> anyhow::Result<Best> {
        let run = self.run_folder(out);
        let steps = st.curve_steps(self.task).into_iter();
        let mut curve = Vec::new();
        let mut best: Option<Best> = None;
        for step in steps.chain([st.steps(self.task)]) {
            let e = self.evaluate(st, &checkpoint(&run, step), dev, progress)?;
            curve.push((step, e.accuracy));
            if best.as_ref().is_none_or(|b| e.accuracy >= b.accuracy) {
                best = Some(e);
            }
        }
        let mut best = best.expect("a run has a last checkpoint");
        best.curve = curve;
        Ok(best)
    }

    /// Evaluates the checkpoint on the dev split unless the study evaluated it before. The
    /// study's evaluations have a folder of their own (`study-eval-TASK`): `conveyor eval`'s
    /// default, `eval-TASK`, holds whatever data a user evaluated on (a test split).
    pub fn evaluate(
        &self,
        st: &Study,
        ckpt: &Path,
        dev: &Path,
        progress: &mut Progress,
    ) -> anyhow::Result<Best> {
        let eval = ckpt.join(format!("study-eval-{}", self.task.name));
        let metrics = eval.join(EvalSummary::FILE);
        let ran = !evaluated_before(&metrics, ckpt, dev);
        if ran {
            let mut cmd = Cmd::new(&["eval"])
                .path("--checkpoint", ckpt)
                .path("--data", dev)
                .path("--out", &eval)
                .arg("--device", &st.device)
                .opt_path("--task-file", self.task.task_file.as_deref());
            if let Some(n) = self.task.dev_limit {
                cmd = cmd.arg("--limit", n);
            }
            run_torch(&cmd.0)?;
        }
        let at = ckpt.file_name().unwrap_or_default().to_string_lossy();
        progress.cell(&format!("evaluate {} at {at}", self.what()), ran);
        let m = EvalSummary::read(&metrics)?;
        Ok(Best {
            task: self.task.name.clone(),
            arch: self.arch.to_string(),
            pretrained: self.pretrained,
            lr: self.lr,
            seed: self.seed,
            accuracy: selection_score(&m.scores),
            run: ckpt
                .parent()
                .and_then(Path::parent)
                .unwrap_or(ckpt)
                .to_path_buf(),
            eval,
            curve: Vec::new(),
            diverged: None,
        })
    }
}

/// True when `metrics` is an evaluation of `ckpt` on `dev` (compared by their last parts: the
/// study folder may have moved since).
fn evaluated_before(metrics: &Path, ckpt: &Path, dev: &Path) -> bool {
    let Ok(m) = EvalSummary::read(metrics) else {
        return false;
    };
    let tail = |p: &Path, n: usize| -> Vec<std::ffi::OsString> {
        let normal = p.components().filter_map(|c| match c {
            std::path::Component::Normal(s) => Some(s.to_os_string()),
            _ => None,
        });
        let all: Vec<_> = normal.collect();
        all[all.len().saturating_sub(n)..].to_vec()
    };
    // RUN/checkpoints/step-N and tasks/TASK/dev.
    tail(&m.checkpoint, 3) == tail(ckpt, 3) && tail(&m.data, 3) == tail(dev, 3)
}

/// Refuses to reuse a run folder that a different cell trained (the study file changed since,
/// or another study shares the folder): its run.json must name this architecture, seed,
/// starting checkpoint and data. Paths are compared by their part inside the study folder
/// `out` (how `--out` is spelled does not matter here). A folder with neither a checkpoint
/// nor a divergence record holds nothing to keep.
pub(super) fn same_run(
    out: &Path,
    run: &Path,
    arch: &str,
    seed: u64,
    init: Option<&Path>,
    data: &Path,
) -> anyhow::Result<()> {
    let kept = run.join("checkpoints/latest").exists() || run.join(Diverged::FILE).exists();
    if !kept || !run.join(RunInfo::FILE).exists() {
        return Ok(());
    }
    let info = RunInfo::read(run)?;
    let same_path = |recorded: &str, wanted: &Path| {
        Path::new(recorded).ends_with(wanted.strip_prefix(out).unwrap_or(wanted))
    };
    let mismatch = if info.arch != arch {
        Some(format!("architecture {} (this cell: {arch})", info.arch))
    } else if info.seed.is_some_and(|s| s != seed) {
        Some(format!(
            "seed {} (this cell: {seed})",
            info.seed.unwrap_or(0)
        ))
    } else if !same_path(&info.data, data) {
        Some(format!(
            "data {} (this cell: {})",
            info.data,
            data.display()
        ))
    } else {
        match (&info.init, init) {
            (None, None) => None,
            (Some(a), Some(b)) if same_path(a, b) => None,
            (a, b) => Some(format!(
                "--init {} (this cell: {})",
                a.as_deref().unwrap_or("none"),
                b.map(|p| p.display().to_string())
                    .unwrap_or_else(|| "none".into())
            )),
        }
    };
    match mismatch {
        None => Ok(()),
        Some(m) => anyhow::bail!(
            "{}: this run folder holds a run with {m}; the study file changed since it ran, or another study wrote it. Use another --out, or move that folder away to train the cell again",
            run.display()
        ),
    }
}

/// The dev score a learning rate is chosen by: COGS's in-distribution category where the
/// evaluation has one, so that a generalisation file in a task's dev list is reported and
/// never tuned on (it was: the overall score over dev + gen); else the accuracy.
fn selection_score(s: &conveyor_tasks::Scores) -> f64 {
    s.per_category
        .get("in_distribution")
        .copied()
        .unwrap_or(s.accuracy)
}
