//! The study file (`studies/*.toml`): the grid a study runs, read with every name checked and
//! written back by the demo, which generates one.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The most points of a learning curve (evaluations per fine-tuning run).
const MAX_CURVE: u64 = 1000;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Study {
    pub name: String,
    #[serde(default = "one_seed")]
    pub seeds: Vec<u64>,
    /// Where every model trains, evaluates and is benchmarked: auto (a GPU if libtorch sees
    /// one), cpu or cuda.
    #[serde(default = "auto")]
    pub device: String,
    pub corpus: Corpus,
    pub pretrain: Pretrain,
    pub finetune: Finetune,
    #[serde(default)]
    pub tasks: Vec<TaskCell>,
    #[serde(default)]
    pub bench: Option<Bench>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
}

fn auto() -> String {
    "auto".into()
}

fn one_seed() -> Vec<u64> {
    vec![0]
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Corpus {
    /// Corpus files, folders or globs (the ingest's formats).
    pub inputs: Vec<String>,
    /// A SentencePiece model; without one a vocabulary of `vocab_size` is trained.
    pub vocab: Option<PathBuf>,
    pub vocab_size: Option<u32>,
    /// Add every task's training inputs (`conveyor task texts`: the rows its dev split does
    /// not hold) to the pre-training corpus: in-domain text, unlike the paper's C4 alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub task_texts: bool,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Pretrain {
    pub archs: Vec<String>,
    pub preset: String,
    /// Optional model config overrides (JSON or TOML) for every architecture.
    pub config: Option<PathBuf>,
    /// The config file's sha256, filled in when the study is read (its record in the study
    /// folder then holds it: an edited config is another study, not cells "done before").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_sha256: Option<String>,
    /// Seeds to pre-train with (default: the study's). A fine-tuning seed without its own
    /// pre-training starts from the first of these: one pre-trained model per architecture,
    /// as in the paper, with the seed spread then covering fine-tuning only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seeds: Option<Vec<u64>>,
    pub steps: u64,
    pub batch_size: usize,
    pub inputs_length: usize,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Finetune {
    pub steps: u64,
    pub batch_size: usize,
    pub learning_rates: Vec<f64>,
    /// Seeds that search the learning-rate grid (default: all the study's); the other seeds
    /// run only at the learning rate these choose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_seeds: Option<Vec<u64>>,
    /// Evaluations along each run at the chosen rate (at every 1/curve of its steps), for
    /// the accuracy-against-steps figure; default 1 (the final checkpoint only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curve: Option<u64>,
    /// Which checkpoint of a run gives its dev score: the last (default) or, as the paper
    /// reports, the best of those `curve` evaluates (then every run is evaluated there).
    #[serde(default, skip_serializing_if = "Score::is_last")]
    pub score: Score,
}

/// The checkpoint a fine-tuning run is scored at.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Score {
    /// Its last checkpoint's dev score.
    #[default]
    Last,
    /// The best dev score among its checkpoints at every 1/curve of the steps (the paper's
    /// "best validation score"); on a tie the later checkpoint.
    Best,
}

impl Score {
    fn is_last(&self) -> bool {
        *self == Score::Last
    }
}

/// The reference run: transformers' T5 trained on one task's examples with the recipe and
/// the learning rate chosen for conveyor's transformer from scratch, with every seed
/// (scripts/reference_finetune.py, run with $CONVEYOR_PYTHON).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    pub task: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TaskCell {
    pub name: String,
    pub train: Vec<PathBuf>,
    /// Dev files; without them, `dev_fraction` of the train rows is held out (seeded).
    #[serde(default)]
    pub dev: Vec<PathBuf>,
    pub dev_fraction: Option<f64>,
    pub task_file: Option<PathBuf>,
    /// Evaluate at most this many dev examples.
    pub dev_limit: Option<usize>,
    /// Fine-tuning steps for this task (default: `[finetune] steps`).
    pub steps: Option<u64>,
    /// Stop at the first bad row instead of counting it.
    #[serde(default)]
    pub strict: bool,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Bench {
    pub preset: String,
    pub lengths: Vec<usize>,
    pub batch_size: usize,
}

impl TaskCell {
    /// The seeded dev split of a task without dev files (`dev_fraction`, default 10%), one
    /// side of it; None when it has dev files.
    pub fn holdout(&self, keep_held_out: bool) -> Option<conveyor_tasks::prepare::Holdout> {
        self.dev.is_empty().then(|| {
            conveyor_tasks::prepare::Holdout::of(self.dev_fraction.unwrap_or(0.1), keep_held_out)
        })
    }
}

/// Steps, batch sizes, the inputs length and the device: what every run of the study takes.
fn check_settings(st: &Study, file: &Path) -> anyhow::Result<()> {
    let f = file.display();
    anyhow::ensure!(
        ["auto", "cpu", "cuda"].contains(&st.device.as_str()),
        "{f}: device {:?} is none of auto, cpu, cuda",
        st.device
    );
    anyhow::ensure!(
        !st.corpus.inputs.is_empty() || st.corpus.task_texts,
        "{f}: [corpus] inputs is empty (and task_texts is off): there would be nothing to pre-train on"
    );
    let mut counts = vec![
        ("[pretrain] steps".to_string(), st.pretrain.steps),
        (
            "[pretrain] batch_size".to_string(),
            st.pretrain.batch_size as u64,
        ),
        ("[finetune] steps".to_string(), st.finetune.steps),
        (
            "[finetune] batch_size".to_string(),
            st.finetune.batch_size as u64,
        ),
    ];
    for t in &st.tasks {
        counts.extend(t.steps.map(|s| (format!("task {} steps", t.name), s)));
    }
    if let Some((what, _)) = counts.iter().find(|(_, n)| *n == 0) {
        anyhow::bail!("{f}: {what} is 0: give 1 or more");
    }
    // The inputs length must hold a noise span (and no more spans than sentinels), as
    // `train` would find on its first batch.
    let l = st.pretrain.inputs_length;
    let extra = conveyor_pipeline::tokenize::EXTRA_IDS as u32;
    conveyor_pipeline::corrupt::usable_lengths(l, 0.15, 3.0, extra)
        .with_context(|| format!("{f}: [pretrain] inputs_length {l}"))?;
    Ok(())
}

impl Study {
    /// Reads and checks a study file: its name and architectures become folder names, so
    /// they must be plain names, and a task needs dev files or a dev fraction.
    pub fn read(file: &Path) -> anyhow::Result<Study> {
        let text = conveyor_pipeline::regular::read_to_string(
            file,
            conveyor_pipeline::regular::MAX_JSON_BYTES,
        )
        .with_context(|| format!("reading {}", file.display()))?;
        let mut st: Study = toml::from_str(&text).with_context(|| format!("{}", file.display()))?;
        // A missing config is the precheck's to name; one that is there is read as a
        // regular file of bounded size (/dev/zero hung the hashing).
        if let Some(c) = st.pretrain.config.as_deref().filter(|c| c.exists()) {
            let max = conveyor_pipeline::regular::MAX_JSON_BYTES;
            if let Ok(Some(why)) = conveyor_pipeline::regular::refusal(c, max) {
                anyhow::bail!(
                    "{}: [pretrain] config {} {why}",
                    file.display(),
                    c.display()
                );
            }
            st.pretrain.config_sha256 = conveyor_pipeline::shard::file_sha256(c).ok();
        }
        conveyor_pipeline::contain::check_name(&st.name, file)?;
        for arch in &st.pretrain.archs {
            conveyor_pipeline::contain::check_name(arch, file)?;
        }
        let known = |seeds: &[u64], what: &str| {
            anyhow::ensure!(
                !seeds.is_empty() && seeds.iter().all(|s| st.seeds.contains(s)),
                "{}: {what} must be a non-empty subset of seeds {:?}",
                file.display(),
                st.seeds
            );
            Ok(())
        };
        known(st.pretrain_seeds(), "[pretrain] seeds")?;
        known(st.search_seeds(), "[finetune] search_seeds")?;
        if let Some(r) = &st.reference {
            anyhow::ensure!(
                st.tasks.iter().any(|t| t.name == r.task)
                    && st.pretrain.archs.iter().any(|a| a == "transformer"),
                "{}: [reference] needs task {:?} among the tasks and the transformer among the archs",
                file.display(),
                r.task
            );
        }
        // Checked here, before any cell runs (a duplicate or a bad rate failed hours in).
        let mut names: Vec<&str> = st.pretrain.archs.iter().map(String::as_str).collect();
        names.sort();
        let mut tasks: Vec<&str> = st.tasks.iter().map(|t| t.name.as_str()).collect();
        tasks.sort();
        for (what, list) in [("[pretrain] archs", &names), ("tasks", &tasks)] {
            if let Some(w) = list.windows(2).find(|w| w[0] == w[1]) {
                anyhow::bail!("{}: {what} names {:?} twice", file.display(), w[0]);
            }
        }
        // A seed or rate named twice trained its cells twice into one folder, then failed.
        let seed_lists = [
            ("seeds", Some(&st.seeds)),
            ("[pretrain] seeds", st.pretrain.seeds.as_ref()),
            ("[finetune] search_seeds", st.finetune.search_seeds.as_ref()),
        ];
        for (what, list) in seed_lists {
            let mut list = list.cloned().unwrap_or_default();
            list.sort_unstable();
            if let Some(w) = list.windows(2).find(|w| w[0] == w[1]) {
                anyhow::bail!("{}: {what} names seed {} twice", file.display(), w[0]);
            }
        }
        // Settings no run could train with, refused before the ingest and the pre-training
        // (found after them, the study's record then refused the corrected file).
        check_settings(&st, file)?;
        let rates = &st.finetune.learning_rates;
        anyhow::ensure!(
            !rates.is_empty(),
            "{}: [finetune] learning_rates is empty: nothing would be fine-tuned",
            file.display()
        );
        if let Some((i, lr)) = rates
            .iter()
            .enumerate()
            .find(|(i, lr)| rates[..*i].contains(lr))
        {
            anyhow::bail!(
                "{}: [finetune] learning_rates names {lr} twice (at {i})",
                file.display()
            );
        }
        if let Some(lr) = st
            .finetune
            .learning_rates
            .iter()
            .find(|&&lr| !(lr.is_finite() && lr > 0.0 && lr <= 1e30))
        {
            // Rates name run folders (runs/...-lr{rate}-...): 1e300 made a name too long for
            // the file system; 1e30 still fits (a test makes runs diverge with it).
            anyhow::bail!(
                "{}: [finetune] learning rate {lr} is not a rate in (0, 1e30]",
                file.display()
            );
        }
        let curve = st.finetune.curve.unwrap_or(1);
        anyhow::ensure!(
            curve <= MAX_CURVE,
            "{}: [finetune] curve {curve} asks for more than {MAX_CURVE} evaluations per run",
            file.display()
        );
        anyhow::ensure!(
            st.finetune.score == Score::Last || curve >= 2,
            "{}: [finetune] score = \"best\" picks among the checkpoints that curve evaluates: set curve to 2 or more (curve = 4: every quarter of the steps)",
            file.display()
        );
        for t in &st.tasks {
            conveyor_pipeline::contain::check_name(&t.name, file)?;
            anyhow::ensure!(
                curve <= st.steps(t),
                "{}: task {}: [finetune] curve {curve} asks for more evaluations than its {} steps",
                file.display(),
                t.name,
                st.steps(t)
            );
            anyhow::ensure!(
                !t.dev.is_empty() || t.dev_fraction.is_some(),
                "{}: task {}: give dev files or a dev_fraction",
                file.display(),
                t.name
            );
            // Found only after the pre-training otherwise, when the study file can no longer
            // be corrected in place (its record refuses edits to a task it ran). Files: precheck.rs.
            if let Some(f) = t.dev_fraction.filter(|f| !(*f > 0.0 && *f < 1.0)) {
                anyhow::bail!(
                    "{}: task {}: dev_fraction {f} is not a fraction in (0, 1)",
                    file.display(),
                    t.name
                );
            }
            anyhow::ensure!(
                t.dev_limit != Some(0),
                "{}: task {}: dev_limit 0 evaluates nothing",
                file.display(),
                t.name
            );
        }
        Ok(st)
    }

    /// Writes it as TOML to `file`.
    pub fn write(&self, file: &Path) -> anyhow::Result<()> {
        let text = toml::to_string(self).context("serialising the study")?;
        std::fs::write(file, text).with_context(|| format!("writing {}", file.display()))
    }

    /// The seeds pre-trained for each architecture.
    pub fn pretrain_seeds(&self) -> &[u64] {
        self.pretrain.seeds.as_deref().unwrap_or(&self.seeds)
    }

    /// The pre-training a fine-tuning run of `seed` starts from: its own seed's, or else the
    /// first pre-trained seed's.
    pub fn init_seed(&self, seed: u64) -> u64 {
        let pre = self.pretrain_seeds();
        if pre.contains(&seed) {
            seed
        } else {
            pre[0]
        }
    }

    /// The seeds that search the learning-rate grid.
    pub fn search_seeds(&self) -> &[u64] {
        self.finetune.search_seeds.as_deref().unwrap_or(&self.seeds)
    }

    /// The seeds run only at the chosen learning rate.
    pub fn other_seeds(&self) -> Vec<u64> {
        let search = self.search_seeds();
        self.seeds
            .iter()
            .copied()
            .filter(|s| !search.contains(s))
            .collect()
    }

    /// A task's checkpoint interval: every 1/curve of its steps.
    pub fn checkpoint_every(&self, t: &TaskCell) -> u64 {
        (self.steps(t) / self.finetune.curve.unwrap_or(1).max(1)).max(1)
    }

    /// The steps before the last at which runs at the chosen rate are evaluated.
    pub fn curve_steps(&self, t: &TaskCell) -> Vec<u64> {
        let every = self.checkpoint_every(t);
        (every..self.steps(t)).step_by(every as usize).collect()
    }

    /// A task's fine-tuning steps.
    pub fn steps(&self, t: &TaskCell) -> u64 {
        t.steps.unwrap_or(self.finetune.steps)
    }

    /// Fine-tuning runs per (architecture, pre-training) cell: learning rates x search
    /// seeds, plus one run of each other seed.
    pub fn finetune_runs(&self) -> usize {
        self.finetune.learning_rates.len() * self.search_seeds().len() + self.other_seeds().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn study(extra_finetune: &str, extra: &str) -> anyhow::Result<Study> {
        edited(extra_finetune, extra, |t| t)
    }

    /// The study file with `extra_finetune` and `extra` added, then `edit`ed. Its train file
    /// is a real one (names must exist).
    fn edited(
        extra_finetune: &str,
        extra: &str,
        edit: impl Fn(String) -> String,
    ) -> anyhow::Result<Study> {
        // One folder and file per call: the tests run in parallel.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("conveyor-studyfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let train = dir.join("train.tsv");
        std::fs::write(&train, "")?;
        let text = format!(
            "name = \"s\"\nseeds = [0, 1, 2]\n[corpus]\ninputs = [{train:?}]\n\
             [pretrain]\narchs = [\"transformer\"]\npreset = \"tiny\"\nsteps = 8\nbatch_size = 2\ninputs_length = 64\n\
             [finetune]\nsteps = 10\nbatch_size = 2\nlearning_rates = [1e-3, 5e-4]\n{extra_finetune}\n\
             [[tasks]]\nname = \"trec\"\ntrain = [{train:?}]\ndev_fraction = 0.1\nsteps = 7\n{extra}"
        );
        let f = dir.join(format!("{n}.toml"));
        std::fs::write(&f, edit(text))?;
        let st = Study::read(&f);
        let _ = std::fs::remove_file(&f);
        st
    }

    #[test]
    fn search_seeds_and_curves_count_runs_and_steps() {
        let st = study("search_seeds = [0]\ncurve = 3", "").unwrap();
        assert_eq!(st.other_seeds(), vec![1, 2]);
        // 2 rates x seed 0, then seeds 1 and 2 at the chosen rate.
        assert_eq!(st.finetune_runs(), 4);
        let t = &st.tasks[0];
        assert_eq!(st.steps(t), 7);
        assert_eq!(st.checkpoint_every(t), 2);
        assert_eq!(st.curve_steps(t), vec![2, 4, 6]);
        let all = study("", "").unwrap();
        assert_eq!(all.finetune_runs(), 6);
        assert_eq!(all.curve_steps(&all.tasks[0]), Vec::<u64>::new());
    }

    #[test]
    fn fine_tuning_seeds_without_a_pre_training_start_from_the_first() {
        let st = study("", "").unwrap();
        assert_eq!(st.pretrain_seeds(), &[0, 1, 2]);
        assert_eq!(st.init_seed(2), 2);
        let mut st = st;
        st.pretrain.seeds = Some(vec![1]);
        assert_eq!((st.init_seed(1), st.init_seed(2)), (1, 1));
    }

    #[test]
    fn foreign_seeds_and_references_are_refused() {
        let e = study("curve = 8", "").unwrap_err().to_string();
        assert!(
            e.contains("curve 8 asks for more evaluations than its 7 steps"),
            "{e}"
        );
        let e = study("search_seeds = [7]", "").unwrap_err().to_string();
        assert!(e.contains("search_seeds must be a non-empty subset"), "{e}");
        let e = study("", "[reference]\ntask = \"sst2\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("[reference] needs task \"sst2\""), "{e}");
        assert!(study("", "[reference]\ntask = \"trec\"").is_ok());
    }

    #[test]
    fn mistakes_found_after_the_pre_training_are_refused_before_it() {
        let refused = |extra_finetune: &str, extra: &str, edit: fn(String) -> String| {
            edited(extra_finetune, extra, edit).unwrap_err().to_string()
        };
        let same = |t: String| t;
        let e = refused("search_seeds = [0, 0]", "", same);
        assert!(e.contains("search_seeds names seed 0 twice"), "{e}");
        let e = refused("", "", |t| {
            t.replace("seeds = [0, 1, 2]", "seeds = [1, 2, 1]")
        });
        assert!(e.contains("seeds names seed 1 twice"), "{e}");
        let e = refused("", "", |t| t.replace("[1e-3, 5e-4]", "[1e-3, 1e-3]"));
        assert!(e.contains("learning_rates names 0.001 twice"), "{e}");
        let e = refused("", "", |t| t.replace("[1e-3, 5e-4]", "[]"));
        assert!(e.contains("learning_rates is empty"), "{e}");
        let e = refused("", "", |t| {
            t.replace("dev_fraction = 0.1", "dev_fraction = 0.0")
        });
        assert!(e.contains("dev_fraction 0 is not a fraction"), "{e}");
        let e = refused("", "", |t| {
            t.replace("dev_fraction = 0.1", "dev_fraction = nan")
        });
        assert!(e.contains("dev_fraction NaN is not a fraction"), "{e}");
        let e = refused("", "dev_limit = 0", same);
        assert!(e.contains("dev_limit 0 evaluates nothing"), "{e}");
        // No corpus inputs: nothing to pre-train on, unless the tasks' texts are the corpus.
        let no_inputs = |texts: &'static str| {
            move |t: String| {
                let at = t.find("inputs = [").unwrap();
                let end = at + t[at..].find('\n').unwrap();
                format!("{}inputs = []{texts}{}", &t[..at], &t[end..])
            }
        };
        let e = edited("", "", no_inputs("")).unwrap_err().to_string();
        assert!(e.contains("[corpus] inputs is empty"), "{e}");
        assert!(edited("", "", no_inputs("\ntask_texts = true")).is_ok());
        // Files that are not there: the precheck's (a study's record is read from anywhere).
        let st = edited("", "dev = [\"no/such/dev.label\"]", same).unwrap();
        let e = super::super::precheck::files_exist(&st, Path::new("s.toml")).unwrap_err();
        assert!(
            e.to_string()
                .contains("task trec: no/such/dev.label is not there"),
            "{e}"
        );
        let st = edited("", "", |t| {
            t.replace("[pretrain]\n", "[pretrain]\nconfig = \"no/such.json\"\n")
        })
        .unwrap();
        let e = super::super::precheck::files_exist(&st, Path::new("s.toml")).unwrap_err();
        assert!(e.to_string().contains("no/such.json is not there"), "{e}");
    }
}
