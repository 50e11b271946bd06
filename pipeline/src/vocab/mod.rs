//! `conveyor vocab train`: trains a standard SentencePiece model in-process with the
//! SentencePiece trainer (the C++ sources vendored by `sentencepiece-sys`, reached through a
//! small bridge, `shim.cpp`). Documents come through the same sources as the ingest (every
//! input format), one sentence per non-blank line, so no temporary text file is written.
//!
//! The model is written atomically as `PREFIX.model` with a `PREFIX.vocab` listing (piece,
//! tab, score per line), like `spm_train`. With the same inputs, settings and seed the model
//! is byte-identical from run to run and from machine to machine: the trainer always splits
//! its EM sums into [`TRAINER_THREADS`] parts (its sums depend on that split, not on cores).

mod ffi;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Error;
use crate::source::{self, ProblemKind, Raw, SourceOptions};
use crate::tokenize::spm::SpmModel;

/// Which ids the special pieces get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpecialLayout {
    /// T5's: `<pad>` 0, `</s>` 1, `<unk>` 2, no `<s>`.
    T5,
    /// SentencePiece's defaults: `<unk>` 0, `<s>` 1, `</s>` 2, no `<pad>`.
    Spm,
}

/// The model family to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    Unigram,
    Bpe,
}

/// A vocabulary training job.
#[derive(Debug, Clone)]
pub struct VocabTrainConfig {
    /// Files, directories or glob patterns, as for the ingest.
    pub inputs: Vec<String>,
    pub source: SourceOptions,
    /// Output path without extension: `PREFIX.model` and `PREFIX.vocab` are written.
    pub prefix: PathBuf,
    pub vocab_size: u32,
    pub model: ModelKind,
    pub layout: SpecialLayout,
    pub character_coverage: f64,
    /// Sentences the trainer samples (uniformly, with `seed`) from everything read.
    pub max_sentences: u64,
    /// Stop reading after this many documents (in input order).
    pub max_documents: Option<u64>,
    pub seed: u32,
    /// Further trainer flags, `name=value`, passed as they are (`split_digits=true`, ...).
    pub extra: Vec<String>,
    /// Let the trainer print its progress.
    pub verbose: bool,
    pub overwrite: bool,
}

impl VocabTrainConfig {
    pub fn new(inputs: Vec<String>, prefix: PathBuf, vocab_size: u32) -> Self {
        Self {
            inputs,
            source: SourceOptions {
                text_field: "text".into(),
                txt_mode: crate::source::TxtMode::File,
                max_document_bytes: crate::source::MAX_DOCUMENT_BYTES,
            },
            prefix,
            vocab_size,
            model: ModelKind::Unigram,
            layout: SpecialLayout::T5,
            character_coverage: 0.9995,
            max_sentences: 10_000_000,
            max_documents: None,
            seed: 0,
            extra: Vec::new(),
            verbose: false,
            overwrite: false,
        }
    }

    /// The trainer's flag string.
    pub fn trainer_args(&self) -> String {
        let model = match self.model {
            ModelKind::Unigram => "unigram",
            ModelKind::Bpe => "bpe",
        };
        let (pad, eos, unk, bos) = match self.layout {
            SpecialLayout::T5 => (0, 1, 2, -1),
            SpecialLayout::Spm => (-1, 2, 0, 1),
        };
        let mut args = vec![
            format!("--model_type={model}"),
            format!("--vocab_size={}", self.vocab_size),
            format!("--character_coverage={}", self.character_coverage),
            format!("--input_sentence_size={}", self.max_sentences),
            "--shuffle_input_sentence=true".to_string(),
            format!("--num_threads={TRAINER_THREADS}"),
            format!("--pad_id={pad}"),
            format!("--eos_id={eos}"),
            format!("--unk_id={unk}"),
            format!("--bos_id={bos}"),
        ];
        args.extend(
            self.extra
                .iter()
                .map(|e| format!("--{}", e.trim_start_matches('-'))),
        );
        args.join(" ")
    }
}

/// What a finished training reports.
#[derive(Debug, Clone, Serialize)]
pub struct VocabSummary {
    pub model: PathBuf,
    pub vocab: PathBuf,
    pub pieces: usize,
    pub sha256: String,
    pub documents: u64,
    pub sentences: u64,
    pub text_bytes: u64,
    /// Records that were not documents (bad JSON, missing field, empty), by kind.
    pub skipped: std::collections::BTreeMap<ProblemKind, u64>,
    pub trainer_args: String,
    pub seconds: f64,
}

/// The threads SentencePiece's trainer runs, always: each sums the EM statistics of every
/// n-th sentence and the sums are added in thread order, so the model depends on this number
/// (float addition is not associative) and must not follow the machine's cores. 16 is
/// SentencePiece's own default, so the model is also `spm_train`'s with its default flags.
pub const TRAINER_THREADS: u32 = 16;

/// The largest vocabulary `train` asks SentencePiece for.
pub const MAX_VOCAB_SIZE: u32 = 1 << 24;

/// Trains the model and writes `PREFIX.model` and `PREFIX.vocab`.
pub fn train(cfg: &VocabTrainConfig) -> Result<VocabSummary, Error> {
    let started = std::time::Instant::now();
    // SentencePiece's trainer loops forever on sizes near 2^31 (it grows the size by a tenth
    // in 32-bit integers); no real vocabulary comes near 2^24.
    if !(8..=MAX_VOCAB_SIZE).contains(&cfg.vocab_size) {
        return Err(Error::Config(format!(
            "--vocab-size {} must be between 8 and {MAX_VOCAB_SIZE}",
            cfg.vocab_size
        )));
    }
    if !(0.0..=1.0).contains(&cfg.character_coverage) || cfg.character_coverage < 0.5 {
        return Err(Error::Config(
            "--character-coverage must be between 0.5 and 1".into(),
        ));
    }
    if let Some(o) = cfg.extra.iter().find(|o| {
        let name = o.trim_start_matches('-').split('=').next().unwrap_or("");
        name.trim() == "num_threads"
    }) {
        return Err(Error::Config(format!(
            "--option {o}: the trainer always runs {TRAINER_THREADS} threads, whatever the machine, because its model depends on that number; leave num_threads out"
        )));
    }
    // A folder as the prefix wrote hidden files into it (DIR/.model, DIR/.vocab).
    let shown = cfg.prefix.display().to_string();
    if shown.ends_with(std::path::MAIN_SEPARATOR) || cfg.prefix.is_dir() {
        return Err(Error::Config(format!(
            "--out {shown} is a folder; --out is a prefix of the files written, PREFIX.model and PREFIX.vocab: give e.g. {}",
            cfg.prefix.join("spm").display()
        )));
    }
    let model_path = with_ext(&cfg.prefix, "model");
    let vocab_path = with_ext(&cfg.prefix, "vocab");
    for p in [&model_path, &vocab_path] {
        if p.exists() && !cfg.overwrite {
            return Err(Error::OutputDir {
                path: p.clone(),
                message: "already exists; it is not trained again (the model does not record the inputs it was trained on): use it as it is, or pass --overwrite to train it again".into(),
            });
        }
    }
    let paths = source::expand_inputs(&cfg.inputs)?;
    let mut corpus = Sentences::new(paths, cfg.source.clone(), cfg.max_documents);
    let args = cfg.trainer_args();
    let proto = ffi::train(&args, cfg.seed, cfg.verbose, &mut corpus);
    if let Some(e) = corpus.failure.take() {
        return Err(e);
    }
    // Before the trainer's own error, which says only that it has no sentences.
    if corpus.documents == 0 {
        let skipped: Vec<String> = corpus
            .skipped
            .iter()
            .map(|(k, n)| format!("{n} {}", k.name()))
            .collect();
        return Err(Error::Trainer(match skipped.is_empty() {
            true => "the inputs hold no documents".into(),
            false => format!(
                "the inputs hold no documents: every record was skipped ({}); check --text-field and the input format",
                skipped.join(", ")
            ),
        }));
    }
    let proto = proto.map_err(Error::Trainer)?;
    // Check that what came out loads, with conveyor's own encoder for unigram models.
    let pieces = crate::tokenize::spm::proto::parse_model(&proto)
        .map_err(|e| Error::Vocab {
            path: model_path.clone(),
            reason: e.0,
        })?
        .pieces;
    if cfg.model == ModelKind::Unigram {
        SpmModel::from_bytes(&proto, &model_path)?;
    }
    let mut listing = String::new();
    for p in &pieces {
        listing.push_str(&format!("{}\t{}\n", p.piece, p.score));
    }
    // The folder only now: a training that fails leaves nothing behind.
    if let Some(dir) = model_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    crate::manifest::write_atomic(&model_path, &proto)?;
    crate::manifest::write_atomic(&vocab_path, listing.as_bytes())?;
    Ok(VocabSummary {
        model: model_path,
        vocab: vocab_path,
        pieces: pieces.len(),
        sha256: crate::manifest::hex(&<sha2::Sha256 as sha2::Digest>::digest(&proto)),
        documents: corpus.documents,
        sentences: corpus.sentences,
        text_bytes: corpus.text_bytes,
        skipped: corpus.skipped,
        trainer_args: args,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn with_ext(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// The training sentences: every non-blank line of every document, in input order.
pub(crate) struct Sentences {
    paths: Vec<PathBuf>,
    opts: SourceOptions,
    max_documents: Option<u64>,
    next_path: usize,
    current: Option<(PathBuf, Box<dyn source::Source>)>,
    batch: std::vec::IntoIter<Raw>,
    /// Lines of the document being handed out, last first.
    lines: Vec<String>,
    /// The sentence handed out last (the trainer copies it before asking for the next).
    pub(crate) value: String,
    pub(crate) failure: Option<Error>,
    documents: u64,
    sentences: u64,
    text_bytes: u64,
    skipped: std::collections::BTreeMap<ProblemKind, u64>,
}

impl Sentences {
    fn new(paths: Vec<PathBuf>, opts: SourceOptions, max_documents: Option<u64>) -> Self {
        Self {
            paths,
            opts,
            max_documents,
            next_path: 0,
            current: None,
            batch: Vec::new().into_iter(),
            lines: Vec::new(),
            value: String::new(),
            failure: None,
            documents: 0,
            sentences: 0,
            text_bytes: 0,
            skipped: Default::default(),
        }
    }

    /// Moves to the next sentence; Ok(false) at the end.
    pub(crate) fn advance(&mut self) -> Result<bool, Error> {
        loop {
            if let Some(line) = self.lines.pop() {
                self.value = line;
                self.sentences += 1;
                return Ok(true);
            }
            if self.max_documents.is_some_and(|m| self.documents >= m) {
                return Ok(false);
            }
            match self.next_record()? {
                None => return Ok(false),
                Some(raw) => {
                    match source::parse(raw, &self.opts.text_field, self.opts.max_document_bytes) {
                        Ok(doc) => {
                            let lines: Vec<String> = doc
                                .text
                                .lines()
                                .map(str::trim)
                                .filter(|l| !l.is_empty())
                                .map(str::to_string)
                                .rev()
                                .collect();
                            if lines.is_empty() {
                                *self.skipped.entry(ProblemKind::Empty).or_default() += 1;
                                continue;
                            }
                            self.documents += 1;
                            self.text_bytes += doc.text.len() as u64;
                            self.lines = lines;
                        }
                        Err((kind, _)) => *self.skipped.entry(kind).or_default() += 1,
                    }
                }
            }
        }
    }

    /// The next raw record of the inputs, opening files as needed.
    fn next_record(&mut self) -> Result<Option<Raw>, Error> {
        loop {
            if let Some(r) = self.batch.next() {
                return Ok(Some(r));
            }
            if let Some((path, src)) = self.current.as_mut() {
                let mut out = Vec::new();
                let more = src
                    .read_batch(&mut out, 1 << 20)
                    .map_err(|e| Error::Unreadable {
                        path: path.clone(),
                        message: e.message,
                    })?;
                if !more {
                    self.current = None;
                }
                self.batch = out.into_iter();
                continue;
            }
            let Some(path) = self.paths.get(self.next_path).cloned() else {
                return Ok(None);
            };
            self.next_path += 1;
            let src = source::open(&path, &self.opts)?;
            self.current = Some((path, src));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trainer_args_carry_the_layout_and_extras() {
        let mut c = VocabTrainConfig::new(vec![], "x".into(), 1000);
        c.extra = vec!["split_digits=true".into()];
        let a = c.trainer_args();
        assert!(a.contains("--pad_id=0 --eos_id=1 --unk_id=2 --bos_id=-1"));
        assert!(a.contains("--vocab_size=1000"));
        assert!(a.ends_with("--split_digits=true"));
        c.layout = SpecialLayout::Spm;
        assert!(c
            .trainer_args()
            .contains("--pad_id=-1 --eos_id=2 --unk_id=0 --bos_id=1"));
    }

    #[test]
    fn prefix_gets_extensions() {
        assert_eq!(
            with_ext(Path::new("out/v.1"), "model"),
            PathBuf::from("out/v.1.model")
        );
    }
}
