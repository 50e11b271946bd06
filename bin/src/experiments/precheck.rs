//! What a study file names is checked before any cell runs or anything is written: every
//! task resolves (built in, or its task file), and every architecture's model builds at the
//! study's preset with its config overrides, asked of `conveyor-torch` (which knows the
//! models; this binary does not link them). A misspelt preset or a bad override was found
//! only after the ingest, or an unknown task after the pre-training.

use std::path::Path;

use anyhow::Context;
use conveyor_pipeline::tokenize::{load, TokenizerKind, EXTRA_IDS};

use super::study::Cmd;
use super::study_file::Study;
use crate::torch_handoff::run_torch;

/// Refuses the study `st` (read from `file`) if one of its tasks or models cannot be built.
pub fn check(st: &Study, file: &Path) -> anyhow::Result<()> {
    files_exist(st, file)?;
    for t in &st.tasks {
        conveyor_tasks::resolve(&t.name, t.task_file.as_deref())
            .with_context(|| format!("{}: task {:?}", file.display(), t.name))?;
    }
    // device = "cuda" without a GPU failed at the first pre-training, after the ingest.
    if st.device == "cuda" {
        let env = run_torch(&["env"])?;
        anyhow::ensure!(
            !env.contains("cuda devices: 0"),
            "{}: device = \"cuda\", and libtorch sees no CUDA device here ({}); nothing was run",
            file.display(),
            env.lines().nth(1).unwrap_or_default().trim()
        );
    }
    let vocab_size = model_vocab_size(st)?;
    let p = &st.pretrain;
    let mut models: Vec<(&str, &str, Option<&Path>, &str)> = p
        .archs
        .iter()
        .map(|a| {
            (
                a.as_str(),
                p.preset.as_str(),
                p.config.as_deref(),
                "[pretrain]",
            )
        })
        .collect();
    if let Some(b) = &st.bench {
        models.push(("transformer", b.preset.as_str(), None, "[bench]"));
    }
    for (arch, preset, config, section) in models {
        let cmd = Cmd::new(&["model", "summary", "--json"])
            .arg("--arch", arch)
            .arg("--preset", preset)
            .arg("--vocab-size", vocab_size)
            .opt_path("--config", config);
        run_torch(&cmd.0).with_context(|| {
            format!(
                "{}: {section} arch {arch:?} with preset {preset:?} does not make a model; nothing was run",
                file.display()
            )
        })?;
    }
    Ok(())
}

/// Refuses a study naming a local file that is not there (a dev file was found missing only
/// after the pre-training, when the study file could no longer be corrected in place).
pub(super) fn files_exist(st: &Study, file: &Path) -> anyhow::Result<()> {
    let local = |f: &std::path::PathBuf| !f.to_str().is_some_and(conveyor_pipeline::remote::is_url);
    let named = st.corpus.vocab.iter().chain(&st.pretrain.config);
    let tasks = st.tasks.iter().flat_map(|t| {
        let files = t.train.iter().chain(&t.dev).chain(&t.task_file);
        files.map(move |f| (Some(&t.name), f))
    });
    // Corpus inputs may be globs or URLs (the ingest expands them); a plain path is looked
    // for here (a missing one failed the ingest after the vocabulary was trained).
    for i in &st.corpus.inputs {
        let plain = !i.contains(['*', '?', '[']) && !conveyor_pipeline::remote::is_url(i);
        anyhow::ensure!(
            !plain || Path::new(i).exists(),
            "{}: [corpus] input {i} is not there (paths are read from the folder the study runs in); nothing was run",
            file.display()
        );
    }
    for (task, f) in named.map(|f| (None, f)).chain(tasks) {
        if local(f) && !f.exists() {
            let task = task.map(|t| format!(" task {t}:")).unwrap_or_default();
            anyhow::bail!(
                "{}:{task} {} is not there (paths are read from the folder the study runs in); nothing was run",
                file.display(),
                f.display()
            );
        }
    }
    Ok(())
}

/// The vocabulary size the study's models will have: the given SentencePiece model's, or
/// the one to be trained.
fn model_vocab_size(st: &Study) -> anyhow::Result<usize> {
    let pieces = match (&st.corpus.vocab, st.corpus.vocab_size) {
        (Some(v), _) => load(v, TokenizerKind::Native)?.vocab().len(),
        (None, Some(n)) => n as usize,
        (None, None) => anyhow::bail!("[corpus] needs vocab or vocab_size"),
    };
    Ok(pieces + EXTRA_IDS)
}
