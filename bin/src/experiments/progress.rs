//! A study's progress: a line when each cell starts and ends (the trainer shows its own
//! step, loss and ETA in between) and an estimate of the training time left in the whole
//! study from the pace of the cells run so far.

use std::path::Path;

use conveyor_pipeline::progress::human_duration;
use conveyor_pipeline::run_info::Diverged;

use super::study_file::{Score, Study};
use crate::torch_handoff::run_torch_live;

/// The step of a run folder's latest checkpoint, if any (for the estimate only: a pointer
/// that is not a short regular file, a FIFO or /dev/zero, counts as none, unread).
fn latest_step(run: &Path) -> Option<u64> {
    let name = conveyor_pipeline::regular::read(&run.join("checkpoints/latest"), 4096).ok()?;
    String::from_utf8_lossy(&name)
        .trim()
        .strip_prefix("step-")?
        .parse()
        .ok()
}

/// Seconds spent and steps run by the training cells of one kind in this invocation.
#[derive(Default)]
struct Pace {
    secs: f64,
    steps: u64,
}

/// Counts cells, announces them, and estimates the training time left in the study.
pub struct Progress {
    n: usize,
    cells: usize,
    started: std::time::Instant,
    /// Pre-training and fine-tuning steps (their costs differ), run so far and still to run.
    pace: [Pace; 2],
    left: [u64; 2],
}

pub const PRETRAIN: usize = 0;
pub const FINETUNE: usize = 1;

impl Progress {
    /// Counts the study's cells and training steps.
    pub fn new(st: &Study) -> Progress {
        let archs = st.pretrain.archs.len();
        let tasks = st.tasks.len();
        let runs = archs * 2 * st.finetune_runs();
        // Runs evaluated along the way: those at the chosen rate, or all to find their best.
        let curve_runs = match st.finetune.score {
            Score::Last => archs * 2 * st.seeds.len(),
            Score::Best => runs,
        };
        let cells = 2
            + usize::from(st.corpus.task_texts)
            + archs * st.pretrain_seeds().len()
            + tasks
            + runs * tasks * 2
            + st.tasks
                .iter()
                .map(|t| st.curve_steps(t).len() * curve_runs)
                .sum::<usize>()
            + usize::from(st.reference.is_some())
            + usize::from(st.bench.is_some());
        let pre = (archs * st.pretrain_seeds().len()) as u64 * st.pretrain.steps;
        let fine: u64 = st.tasks.iter().map(|t| runs as u64 * st.steps(t)).sum();
        Progress {
            n: 0,
            cells,
            started: std::time::Instant::now(),
            pace: Default::default(),
            left: [pre, fine],
        }
    }

    /// A cell that is finished (`ran`: now, or else in an earlier invocation).
    pub fn cell(&mut self, what: &str, ran: bool) {
        self.n += 1;
        println!(
            "[cell {}/{}] {what}{}",
            self.n,
            self.cells,
            if ran { "" } else { " (done before)" }
        );
    }

    /// The estimate of the training left, from the measured seconds per step of each kind
    /// (fine-tuning steps are priced like pre-training ones until one has run).
    fn eta(&self) -> Option<f64> {
        let rate = |k: usize| {
            let p = &self.pace[k];
            (p.steps > 0).then(|| p.secs / p.steps as f64)
        };
        let pre = rate(PRETRAIN);
        let fine = rate(FINETUNE).or(pre)?;
        Some(pre.unwrap_or(fine) * self.left[PRETRAIN] as f64 + fine * self.left[FINETUNE] as f64)
    }

    /// A cell that is not run (its training diverged).
    pub fn skip(&mut self, what: &str) {
        self.n += 1;
        println!("[cell {}/{}] {what} (skipped)", self.n, self.cells);
    }

    /// Runs (or resumes) a training run until `steps`; `args` are the command and its
    /// options. The trainer shows its own progress; this prints the cell's start and end.
    /// A run whose loss stopped being finite (now or before) is not an error: its record.
    pub fn train(
        &mut self,
        kind: usize,
        what: &str,
        run: &Path,
        steps: u64,
        mut args: Vec<String>,
    ) -> anyhow::Result<Option<Diverged>> {
        let done = latest_step(run).unwrap_or(0).min(steps);
        if done >= steps {
            self.left[kind] = self.left[kind].saturating_sub(steps);
            self.cell(what, false);
            return Ok(None);
        }
        if let Some(d) = Diverged::read(run)? {
            self.left[kind] = self.left[kind].saturating_sub(steps);
            self.cell(&diverged(what, &d), false);
            return Ok(Some(d));
        }
        if done > 0 {
            args.push("--resume".into());
        }
        args.extend([
            "--out".into(),
            run.display().to_string(),
            "--steps".into(),
            steps.to_string(),
        ]);
        println!(
            "[cell {}/{}] {what}: steps {}..={steps} ...",
            self.n + 1,
            self.cells,
            done + 1
        );
        let t0 = std::time::Instant::now();
        let trained = run_torch_live(&args);
        self.left[kind] = self.left[kind].saturating_sub(steps);
        if let Err(e) = trained {
            let d = match Diverged::read(run) {
                Ok(Some(d)) => d,
                Ok(None) => return Err(e),
                Err(r) => return Err(e.context(r)),
            };
            self.cell(&diverged(what, &d), true);
            return Ok(Some(d));
        }
        self.pace[kind].secs += t0.elapsed().as_secs_f64();
        self.pace[kind].steps += steps - done;
        let eta = self
            .eta()
            .map(|e| format!(", about {} of training left", human_duration(e)))
            .unwrap_or_default();
        self.cell(
            &format!(
                "{what} ({} elapsed in this study run{eta})",
                human_duration(self.started.elapsed().as_secs_f64())
            ),
            true,
        );
        Ok(None)
    }
}

fn diverged(what: &str, d: &Diverged) -> String {
    format!("{what}: diverged at step {} ({})", d.step, d.describe())
}
