//! `conveyor clean`: C4's cleaning of raw crawl text (WARC/WET files or JSON lines) into
//! C4-format JSON lines (`text`, `timestamp`, `url`, gzip), with a manifest counting what
//! every rule removed. Stages per page, in order: the line and page rules ([`rules`]), the
//! English filter ([`lang`]), the bad-words list (a file the user gives, one word or phrase
//! per line), then line deduplication across the whole corpus: a line (lower-cased, trimmed)
//! is kept at its first occurrence in input order and dropped everywhere after; a page left
//! with no lines is dropped.
//!
//! Pages are filtered in parallel and deduplicated in input order, so the output does not
//! depend on the thread count. Each finished input's output waits in the work folder with a
//! small record beside it, so a killed run resumes after the last finished input (rebuilding
//! the dedup set from the outputs already written) and ends with the same bytes.
//!
//! Split among workers (`--num-workers`, [`Worker`]), it runs in two passes: each worker
//! applies the page filters (the costly part: language ID) to its inputs and leaves the
//! filtered pages in its part; `conveyor manifest merge` then deduplicates lines across all
//! of them in input order and writes exactly what one process writes ([`merge_parts`]).
//! The dedup pass is one process holding the set of distinct lines (16 bytes each).

pub mod badwords;
pub mod lang;
mod pages;
pub mod rules;
mod split;

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::job::workers::{part_dir, Worker, WorkerState};
use crate::progress::Progress;
use crate::record::ProblemKind;
use crate::source::{self, Document, SourceOptions, TxtMode};
use badwords::BadWords;
use pages::{Dedup, PageWriter};
pub use rules::{LineDrop, PageDrop, RuleCounts, Rules};
pub use split::{dedup_shard, merge_parts, CleanPart};
use split::{part_manifest, read_part};

/// The manifest's format name.
pub const CLEAN_FORMAT: &str = "conveyor-clean";
/// The format of a clean worker's `part.json`.
pub const CLEAN_PART_FORMAT: &str = "conveyor-clean-part";

#[derive(Debug, Clone)]
pub struct CleanConfig {
    pub inputs: Vec<String>,
    pub out: PathBuf,
    pub rules: Rules,
    /// Words and phrases that drop a page (one per line, `#` comments); None: no list.
    pub badwords: Option<PathBuf>,
    /// Keep pages identified as English with at least this confidence; None: no filter.
    pub min_english: Option<f64>,
    /// Deduplicate lines across the corpus.
    pub dedup: bool,
    pub text_field: String,
    pub threads: Option<usize>,
    pub overwrite: bool,
    /// This process's share of a split job (the filter pass); None = the whole job.
    pub worker: Option<Worker>,
}

impl CleanConfig {
    pub fn new(inputs: Vec<String>, out: PathBuf) -> Self {
        Self {
            inputs,
            out,
            rules: Rules::default(),
            badwords: None,
            min_english: Some(lang::C4_MIN_ENGLISH),
            dedup: true,
            text_field: "text".into(),
            threads: None,
            overwrite: false,
            worker: None,
        }
    }
}

/// One output file and where it came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CleanFile {
    pub input: String,
    pub output: String,
    pub counts: RuleCounts,
    /// Records that could not be read as documents (bad JSON, bad UTF-8, no text).
    pub unreadable: u64,
    /// The first of them (up to 10): "FILE: record N: why" (a JSON line's record is its line).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    pub error: Option<String>,
    /// Bytes of text read (documents) and written.
    pub text_bytes_in: u64,
    pub text_bytes_out: u64,
    /// The output file's size: a finished output is checked against it (absent in
    /// manifests written before the field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// `manifest.json` of a clean output folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CleanManifest {
    pub format: String,
    pub created_by: String,
    pub job: String,
    pub rules: Rules,
    pub badwords: Option<String>,
    pub badwords_sha256: Option<String>,
    pub min_english: Option<f64>,
    pub dedup: bool,
    pub files: Vec<CleanFile>,
    pub totals: RuleCounts,
    pub text_bytes_in: u64,
    pub text_bytes_out: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CleanSummary {
    pub out: PathBuf,
    pub files: usize,
    pub totals: RuleCounts,
    pub text_bytes_in: u64,
    pub text_bytes_out: u64,
    pub already_complete: bool,
    pub seconds: f64,
    /// Inputs that could not be read to their end (corrupt or truncated): what was read
    /// before the fault is cleaned and kept; the command exits 1.
    pub failed_inputs: Vec<FailedInput>,
    /// Records of every input that were not documents, and the first of them named.
    pub unreadable: u64,
    pub problems: Vec<String>,
}

/// An input whose reading failed, and why (file and position).
#[derive(Debug, Clone, Serialize)]
pub struct FailedInput {
    pub input: String,
    pub error: String,
}

fn summary(m: &CleanManifest, out: &Path, done: bool, secs: f64) -> CleanSummary {
    CleanSummary {
        failed_inputs: m
            .files
            .iter()
            .filter_map(|f| {
                f.error.as_ref().map(|e| FailedInput {
                    input: f.input.clone(),
                    error: e.clone(),
                })
            })
            .collect(),
        out: out.to_path_buf(),
        files: m.files.len(),
        unreadable: m.files.iter().map(|f| f.unreadable).sum(),
        problems: m
            .files
            .iter()
            .flat_map(|f| f.problems.clone())
            .take(10)
            .collect(),
        totals: m.totals.clone(),
        text_bytes_in: m.text_bytes_in,
        text_bytes_out: m.text_bytes_out,
        already_complete: done,
        seconds: secs,
    }
}

/// The output file name of input `i` of `n`.
pub fn output_name(i: usize, n: usize) -> String {
    format!("c4-clean.{i:05}-of-{n:05}.json.gz")
}

/// Runs the job (or reports it as already complete).
pub fn clean(cfg: &CleanConfig, progress: &dyn Progress) -> Result<CleanSummary, Error> {
    // A failed run leaves no --out it made itself (and that is still empty).
    crate::job::outdir::removed_if_failed_empty(&cfg.out, cfg.worker.is_some(), || {
        clean_into(cfg, progress)
    })
}

fn clean_into(cfg: &CleanConfig, progress: &dyn Progress) -> Result<CleanSummary, Error> {
    let started = std::time::Instant::now();
    let paths = source::expand_inputs(&cfg.inputs)?;
    let badwords = cfg.badwords.as_deref().map(BadWords::read).transpose()?;
    let mut identity = serde_json::json!({
        "rules": cfg.rules, "badwords": badwords.as_ref().map(|b| b.sha256.clone()),
        "min_english": cfg.min_english, "dedup": cfg.dedup, "text_field": cfg.text_field,
    });
    // Closer to C4's code since revision 2 (lines cut as splitlines() cuts them, its
    // bad-words pattern, pages the dedup leaves with too few sentences dropped): a folder
    // cleaned before is another job.
    identity["revision"] = 2.into();
    let mut files = Vec::new();
    let mut lens = Vec::new();
    for p in &paths {
        let len = crate::remote::input_len(p)?;
        files.push(serde_json::json!([p.display().to_string(), len]));
        lens.push(len);
    }
    identity["inputs"] = files.into();
    let job =
        crate::manifest::hex(&Sha256::digest(identity.to_string().as_bytes()))[..16].to_string();
    let read_job = |d: &Path| read_manifest(d).map(|m| m.job);
    let given = cfg.inputs.iter().map(PathBuf::from);
    let inputs: Vec<PathBuf> = given.chain(paths.iter().cloned()).collect();
    crate::job::outdir::check_not_input(&cfg.out, &inputs)?;
    let (state, work_name, _lock) =
        crate::job::workers::start_job(&cfg.out, KIND, &job, cfg.worker, cfg.overwrite, read_job)?;
    match (state, cfg.worker) {
        (WorkerState::Merged, _) => {
            return Ok(summary(&read_manifest(&cfg.out)?, &cfg.out, true, 0.0))
        }
        (WorkerState::PartDone, Some(w)) => {
            let p = read_part(&part_dir(&cfg.out, w).join("part.json"))?;
            return Ok(summary(&part_manifest(&p), &cfg.out, true, 0.0));
        }
        _ => {}
    }
    let work = crate::job::outdir::work_dir(&cfg.out, &work_name);
    crate::job::outdir::claim(&work, &job)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads.unwrap_or(0))
        .build()
        .map_err(|e| Error::Config(format!("cannot start worker threads: {e}")))?;
    let mine: Vec<usize> = (0..paths.len())
        .filter(|&i| cfg.worker.is_none_or(|w| w.owns(i)))
        .collect();
    let total_bytes: u64 = mine.iter().map(|&i| lens[i]).sum();
    progress.start(total_bytes);
    let opts = SourceOptions {
        text_field: cfg.text_field.clone(),
        txt_mode: TxtMode::File,
        max_document_bytes: source::MAX_DOCUMENT_BYTES,
    };
    // One process dedups as it goes; a worker leaves that to the merge.
    let mut dedup = (cfg.dedup && cfg.worker.is_none()).then(Dedup::default);
    let mut records = Vec::new();
    let mut resumed = 0usize;
    for &i in &mine {
        let path = &paths[i];
        let name = match cfg.worker {
            None => output_name(i, paths.len()),
            Some(_) => format!("filtered-{i:05}.json.gz"),
        };
        // Finished by an earlier, killed run: its output is in the work folder (or, after a
        // kill during the final moves, already in place).
        if let Some(done) = load_record(&work, &name) {
            let file = [work.join(&name), cfg.out.join(&name)]
                .into_iter()
                .find(|p| p.exists());
            if let Some(file) = file {
                if let Some(d) = &mut dedup {
                    d.add_output(&file)?;
                    let dropped = dropped_path(&work, &name);
                    if dropped.exists() {
                        d.add_keys(&std::fs::read(&dropped).map_err(|e| Error::io(&dropped, e))?);
                    }
                }
                progress.advance(lens[i], 0, 0);
                records.push((i, done));
                resumed += 1;
                continue;
            }
        }
        let tmp = work.join(format!("{name}.tmp"));
        let mut writer = PageWriter::create(&tmp)?;
        let mut counts = RuleCounts::default();
        let mut unreadable = 0u64;
        let mut problems = Vec::new();
        let mut record = 0u64;
        let mut text_bytes_in = 0u64;
        let mut src = source::open(path, &opts)?;
        let mut last_bytes = 0;
        let mut error = None;
        loop {
            let mut raw = Vec::new();
            let more = match src.read_batch(&mut raw, 4 << 20) {
                Ok(m) => m,
                // A remote input out of reach stops the job; a rerun redoes this input.
                Err(e) if e.unreachable => {
                    return Err(Error::Remote {
                        url: path.display().to_string(),
                        message: e.message,
                    })
                }
                Err(e) => {
                    error = Some(e.message);
                    false
                }
            };
            let docs: Vec<Document> = raw
                .into_iter()
                .filter_map(|r| {
                    record += 1;
                    match source::parse(r, &cfg.text_field, opts.max_document_bytes) {
                        Ok(d) => Some(d),
                        // A blank line: nothing to clean and nothing wrong.
                        Err((ProblemKind::Empty, _)) => None,
                        Err((_, why)) => {
                            unreadable += 1;
                            if problems.len() < 10 {
                                problems.push(format!(
                                    "{}: record {record}: {}",
                                    path.display(),
                                    crate::printable::one_line(&why)
                                ));
                            }
                            None
                        }
                    }
                })
                .collect();
            let filtered: Vec<(Result<Vec<String>, PageDrop>, RuleCounts)> = pool.install(|| {
                docs.par_iter()
                    .map(|d| {
                        let mut c = RuleCounts::default();
                        let r = page_filters(&d.text, cfg, badwords.as_ref(), &mut c);
                        (r, c)
                    })
                    .collect()
            });
            for (doc, (result, c)) in docs.iter().zip(filtered) {
                counts.add(&c);
                text_bytes_in += doc.text.len() as u64;
                let Ok(lines) = result else { continue };
                let lines = match &mut dedup {
                    Some(d) => match d.keep(lines, cfg.rules.min_sentences, &mut counts) {
                        Some(l) => l,
                        None => continue,
                    },
                    None => lines,
                };
                if cfg.worker.is_none() {
                    counts.pages_out += 1;
                    counts.lines_out += lines.len() as u64;
                }
                writer.page(&lines.join("\n"), doc)?;
            }
            let b = src.bytes_read();
            progress.advance(b.saturating_sub(last_bytes), counts.pages_out, 0);
            last_bytes = b;
            if !more {
                break;
            }
        }
        let (text_bytes_out, bytes) = writer.finish()?;
        std::fs::rename(&tmp, work.join(&name)).map_err(|e| Error::io(&tmp, e))?;
        // Lines first seen on pages the dedup then dropped are in no output: kept beside it
        // (before its record) so that a resumed run treats them as seen too.
        if let Some(d) = &mut dedup {
            let keys = d.take_dropped();
            if !keys.is_empty() {
                crate::manifest::write_atomic(&dropped_path(&work, &name), &keys.concat())?;
            }
        }
        let record = CleanFile {
            input: path.display().to_string(),
            output: name,
            counts,
            unreadable,
            problems,
            error,
            text_bytes_in,
            text_bytes_out,
            bytes: Some(bytes),
        };
        let json = serde_json::to_string(&record).expect("record serialises");
        crate::manifest::write_atomic(&record_path(&work, &record.output), json.as_bytes())?;
        records.push((i, record));
    }
    if resumed > 0 {
        progress.note(&format!("resumed: {resumed} input(s) were already done"));
    }
    progress.finish();
    // No record at all was a document (a wrong --text-field): nothing is kept, so that the
    // corrected command is this job's rerun, not "another job" over an empty output. A
    // worker's share is left to the merge, where other workers' may hold documents.
    let pages: u64 = records.iter().map(|(_, f)| f.counts.pages_in).sum();
    let unreadable: u64 = records.iter().map(|(_, f)| f.unreadable).sum();
    if cfg.worker.is_none() && pages == 0 && unreadable > 0 {
        let first = records
            .iter()
            .find_map(|(_, f)| f.problems.first().cloned())
            .unwrap_or_default();
        std::fs::remove_dir_all(&work).map_err(|e| Error::io(&work, e))?;
        return Err(Error::Config(format!(
            "none of the {unreadable} records read was a document (first: {first}); check --text-field and the input format (a record over the size limit is not one either); nothing was written"
        )));
    }
    let text_in: u64 = records.iter().map(|(_, f)| f.text_bytes_in).sum();
    // The outputs leave the work folder only now, all together.
    let dest = match cfg.worker {
        None => cfg.out.clone(),
        Some(w) => part_dir(&cfg.out, w),
    };
    std::fs::create_dir_all(&dest).map_err(|e| Error::io(&dest, e))?;
    for (_, f) in &records {
        crate::job::outdir::rename_once(
            &work.join(&f.output),
            &dest.join(&f.output),
            "a finished output is missing; rerun with --overwrite to start again",
        )?;
    }
    let base = CleanManifest {
        format: CLEAN_FORMAT.into(),
        created_by: format!("conveyor {}", env!("CARGO_PKG_VERSION")),
        job: job.clone(),
        rules: cfg.rules.clone(),
        badwords: cfg.badwords.as_ref().map(|p| p.display().to_string()),
        badwords_sha256: badwords.map(|b| b.sha256),
        min_english: cfg.min_english,
        dedup: cfg.dedup,
        files: Vec::new(),
        totals: RuleCounts::default(),
        text_bytes_in: 0,
        text_bytes_out: 0,
    };
    if let Some(w) = cfg.worker {
        let dir = dest;
        let part = CleanPart {
            format: CLEAN_PART_FORMAT.into(),
            job,
            worker: w,
            inputs: paths.len(),
            files: records,
            text_bytes_in: text_in,
            manifest: base,
        };
        let json = serde_json::to_string_pretty(&part).expect("part serialises") + "\n";
        crate::manifest::write_atomic(&dir.join("part.json"), json.as_bytes())?;
        std::fs::remove_dir_all(&work).map_err(|e| Error::io(&work, e))?;
        return Ok(summary(
            &part_manifest(&part),
            &cfg.out,
            false,
            started.elapsed().as_secs_f64(),
        ));
    }
    let m = finish_manifest(
        base,
        records.into_iter().map(|(_, f)| f).collect(),
        text_in,
        &cfg.out,
    )?;
    std::fs::remove_dir_all(&work).map_err(|e| Error::io(&work, e))?;
    Ok(summary(
        &m,
        &cfg.out,
        false,
        started.elapsed().as_secs_f64(),
    ))
}

/// Totals, output bytes and `manifest.json` for the finished `files`.
pub(super) fn finish_manifest(
    mut m: CleanManifest,
    files: Vec<CleanFile>,
    text_in: u64,
    out: &Path,
) -> Result<CleanManifest, Error> {
    let mut totals = RuleCounts::default();
    for f in &files {
        totals.add(&f.counts);
    }
    m.text_bytes_out = files.iter().map(|f| f.text_bytes_out).sum();
    m.files = files;
    m.totals = totals;
    m.text_bytes_in = text_in;
    let json = serde_json::to_string_pretty(&m).expect("manifest serialises") + "\n";
    crate::manifest::write_atomic(&out.join("manifest.json"), json.as_bytes())?;
    Ok(m)
}

fn record_path(work: &Path, name: &str) -> PathBuf {
    work.join(format!("{name}.record.json"))
}

/// Beside a finished output in the work folder: the lines first seen on pages dropped after
/// the dedup (16-byte keys).
fn dropped_path(work: &Path, name: &str) -> PathBuf {
    work.join(format!("{name}.dropped-lines"))
}

/// The record of an input an earlier run finished, if any (one that names another output
/// file than the one asked for is not this input's record and is ignored).
fn load_record(work: &Path, name: &str) -> Option<CleanFile> {
    let text = std::fs::read_to_string(record_path(work, name)).ok()?;
    let record: CleanFile = serde_json::from_str(&text).ok()?;
    (record.output == name).then_some(record)
}

const WORK_DIR: &str = ".conveyor-clean";
/// Cleaning as a job kind: its work folder and the manifest it writes.
const KIND: crate::job::JobKind = crate::job::JobKind {
    work: WORK_DIR,
    format: CLEAN_FORMAT,
};

/// The rules, the English filter and the bad words, for one page.
fn page_filters(
    text: &str,
    cfg: &CleanConfig,
    badwords: Option<&BadWords>,
    counts: &mut RuleCounts,
) -> Result<Vec<String>, PageDrop> {
    let lines = rules::clean_page(text, &cfg.rules, counts)?;
    let mut drop = |why| {
        *counts.pages_dropped.entry(why).or_default() += 1;
        Err(why)
    };
    let joined = lines.join("\n");
    if let Some(min) = cfg.min_english {
        if !lang::is_english(&joined, min) {
            return drop(PageDrop::NotEnglish);
        }
    }
    if badwords.is_some_and(|b| b.matches(&joined)) {
        return drop(PageDrop::BadWords);
    }
    Ok(lines)
}

/// Reads a clean output folder's manifest.
pub fn read_manifest(dir: &Path) -> Result<CleanManifest, Error> {
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let m: CleanManifest = serde_json::from_str(&text).map_err(|e| Error::Manifest {
        path: path.clone(),
        message: format!("not a conveyor clean manifest: {e}"),
    })?;
    if m.format != CLEAN_FORMAT {
        return Err(Error::Manifest {
            path,
            message: format!("format {} is not {CLEAN_FORMAT}", m.format),
        });
    }
    for f in &m.files {
        crate::contain::check_name(&f.output, &path)?;
    }
    Ok(m)
}

#[cfg(test)]
mod dedup_tests;
