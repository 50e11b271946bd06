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
pub mod rules;

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::progress::Progress;
use crate::source::{self, Document, SourceOptions, TxtMode};
use crate::workers::{part_dir, Worker, WorkerState, PARTS_DIR};
use badwords::BadWords;
pub use rules::{LineDrop, PageDrop, RuleCounts, Rules};

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

/// A worker's part: its inputs' filtered pages (before line dedup), one file per input, and
/// everything the merged manifest needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CleanPart {
    pub format: String,
    pub job: String,
    pub worker: Worker,
    /// Inputs in the whole job.
    pub inputs: usize,
    /// This worker's inputs, with their filter-pass counts; `output` names the file of
    /// filtered pages in the part folder.
    pub files: Vec<(usize, CleanFile)>,
    pub text_bytes_in: u64,
    /// The merged manifest, less files, totals and output bytes.
    pub manifest: CleanManifest,
}

/// One output file and where it came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CleanFile {
    pub input: String,
    pub output: String,
    pub counts: RuleCounts,
    /// Records that could not be read as documents (bad JSON, bad UTF-8, no text).
    pub unreadable: u64,
    pub error: Option<String>,
    /// Bytes of text read (documents) and written.
    pub text_bytes_in: u64,
    pub text_bytes_out: u64,
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
}

fn summary(m: &CleanManifest, out: &Path, done: bool, secs: f64) -> CleanSummary {
    CleanSummary {
        out: out.to_path_buf(),
        files: m.files.len(),
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
    let started = std::time::Instant::now();
    let paths = source::expand_inputs(&cfg.inputs)?;
    let badwords = cfg.badwords.as_deref().map(BadWords::read).transpose()?;
    let mut identity = serde_json::json!({
        "rules": cfg.rules, "badwords": badwords.as_ref().map(|b| b.sha256.clone()),
        "min_english": cfg.min_english, "dedup": cfg.dedup, "text_field": cfg.text_field,
    });
    let mut files = Vec::new();
    for p in &paths {
        let len = std::fs::metadata(p).map_err(|e| Error::io(p, e))?.len();
        files.push(serde_json::json!([p.display().to_string(), len]));
    }
    identity["inputs"] = files.into();
    let job = crate::spm::hex(&Sha256::digest(identity.to_string().as_bytes()))[..16].to_string();
    let read_job = |d: &Path| read_manifest(d).map(|m| m.job);
    let (state, work_name) = crate::workers::start_job(
        &cfg.out,
        WORK_DIR,
        &job,
        cfg.worker,
        cfg.overwrite,
        read_job,
    )?;
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
    let work = crate::outdir::work_dir(&cfg.out, &work_name);
    crate::outdir::claim(&work, &job)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads.unwrap_or(0))
        .build()
        .map_err(|e| Error::Config(format!("cannot start worker threads: {e}")))?;
    let mine: Vec<usize> = (0..paths.len())
        .filter(|&i| cfg.worker.is_none_or(|w| w.owns(i)))
        .collect();
    let total_bytes: u64 = mine
        .iter()
        .map(|&i| std::fs::metadata(&paths[i]).map(|m| m.len()).unwrap_or(0))
        .sum();
    progress.start(total_bytes);
    let opts = SourceOptions {
        text_field: cfg.text_field.clone(),
        txt_mode: TxtMode::File,
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
                }
                progress.advance(std::fs::metadata(path).map(|m| m.len()).unwrap_or(0), 0, 0);
                records.push((i, done));
                resumed += 1;
                continue;
            }
        }
        let tmp = work.join(format!("{name}.tmp"));
        let mut writer = PageWriter::create(&tmp)?;
        let mut counts = RuleCounts::default();
        let mut unreadable = 0u64;
        let mut text_bytes_in = 0u64;
        let mut src = source::open(path, &opts)?;
        let mut last_bytes = 0;
        let mut error = None;
        loop {
            let mut raw = Vec::new();
            let more = match src.read_batch(&mut raw, 4 << 20) {
                Ok(m) => m,
                Err(e) => {
                    error = Some(e.message);
                    false
                }
            };
            let docs: Vec<Document> = raw
                .into_iter()
                .filter_map(|r| match source::parse(r, &cfg.text_field) {
                    Ok(d) => Some(d),
                    Err(_) => {
                        unreadable += 1;
                        None
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
                    Some(d) => match d.keep(lines, &mut counts) {
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
        let text_bytes_out = writer.finish()?;
        std::fs::rename(&tmp, work.join(&name)).map_err(|e| Error::io(&tmp, e))?;
        let record = CleanFile {
            input: path.display().to_string(),
            output: name,
            counts,
            unreadable,
            error,
            text_bytes_in,
            text_bytes_out,
        };
        let json = serde_json::to_string(&record).expect("record serialises");
        crate::manifest::write_atomic(&record_path(&work, &record.output), json.as_bytes())?;
        records.push((i, record));
    }
    if resumed > 0 {
        progress.note(&format!("resumed: {resumed} input(s) were already done"));
    }
    progress.finish();
    let text_in: u64 = records.iter().map(|(_, f)| f.text_bytes_in).sum();
    // The outputs leave the work folder only now, all together.
    let dest = match cfg.worker {
        None => cfg.out.clone(),
        Some(w) => part_dir(&cfg.out, w),
    };
    std::fs::create_dir_all(&dest).map_err(|e| Error::io(&dest, e))?;
    for (_, f) in &records {
        let (from, to) = (work.join(&f.output), dest.join(&f.output));
        if from.exists() {
            std::fs::rename(&from, &to).map_err(|e| Error::io(&from, e))?;
        } else if !to.exists() {
            return Err(Error::OutputDir {
                path: from,
                message: "a finished output is missing; rerun with --overwrite to start again"
                    .into(),
            });
        }
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
fn finish_manifest(
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

/// A worker part's counts as a manifest (for its summary).
fn part_manifest(p: &CleanPart) -> CleanManifest {
    let mut m = p.manifest.clone();
    m.files = p.files.iter().map(|(_, f)| f.clone()).collect();
    for f in &m.files {
        m.totals.add(&f.counts);
    }
    m.text_bytes_in = p.text_bytes_in;
    m
}

fn read_part(path: &Path) -> Result<CleanPart, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::OutputDir {
        path: path.to_path_buf(),
        message: format!("not a readable clean part: {e}"),
    })
}

/// The dedup pass over the workers' filtered pages (parts already checked to be one job
/// with every worker present), in input order: the output and manifest one process writes.
/// Returns the number of output files and pages kept.
pub fn merge_parts(out: &Path, files: &[PathBuf]) -> Result<(usize, u64), Error> {
    let (parts, slots) = ordered_parts(out, files)?;
    let n = slots.len();
    // The dedup: sharded by line hash when `manifest merge --dedup-shard` ran for every
    // shard (their drop lists are applied), else one pass holding every distinct line.
    let sharded = if parts[0].manifest.dedup {
        read_drop_lists(out, &parts[0].job, n)?
    } else {
        None
    };
    let mut dedup = (parts[0].manifest.dedup && sharded.is_none()).then(Dedup::default);
    let mut done = Vec::with_capacity(n);
    for (i, (w, mut f)) in slots.into_iter().enumerate() {
        let filtered = part_dir(out, w).join(&f.output);
        let name = output_name(i, n);
        let tmp = out.join(format!("{name}.tmp"));
        let mut writer = PageWriter::create(&tmp)?;
        let reader = std::io::BufReader::new(flate2::read::GzDecoder::new(
            std::fs::File::open(&filtered).map_err(|e| Error::io(&filtered, e))?,
        ));
        let drops = sharded.as_ref().map(|d| &d[i]);
        let mut drop_at = 0usize;
        for (page, line) in std::io::BufRead::lines(reader).enumerate() {
            let line = line.map_err(|e| Error::io(&filtered, e))?;
            let doc = source::parse_json_line(line.as_bytes(), "text").map_err(|(_, m)| {
                Error::OutputDir {
                    path: filtered.clone(),
                    message: m,
                }
            })?;
            let lines: Vec<String> = doc.text.split('\n').map(str::to_string).collect();
            let lines = match (&mut dedup, drops) {
                (Some(d), _) => match d.keep(lines, &mut f.counts) {
                    Some(l) => l,
                    None => continue,
                },
                (None, Some(drops)) => {
                    // This page's dropped lines: the drop list is sorted by (page, line).
                    let mut kept = Vec::with_capacity(lines.len());
                    for (k, l) in lines.into_iter().enumerate() {
                        let here = (page as u64, k as u32);
                        while drop_at < drops.len() && drops[drop_at] < here {
                            drop_at += 1;
                        }
                        if drop_at < drops.len() && drops[drop_at] == here {
                            *f.counts
                                .lines_dropped
                                .entry(LineDrop::Duplicate)
                                .or_default() += 1;
                        } else {
                            kept.push(l);
                        }
                    }
                    if kept.is_empty() {
                        *f.counts
                            .pages_dropped
                            .entry(PageDrop::AllLinesDuplicate)
                            .or_default() += 1;
                        continue;
                    }
                    kept
                }
                (None, None) => lines,
            };
            f.counts.pages_out += 1;
            f.counts.lines_out += lines.len() as u64;
            writer.page(&lines.join("\n"), &doc)?;
        }
        f.text_bytes_out = writer.finish()?;
        std::fs::rename(&tmp, out.join(&name)).map_err(|e| Error::io(&tmp, e))?;
        f.output = name;
        done.push(f);
    }
    let text_in = parts.iter().map(|p| p.text_bytes_in).sum();
    let mut base = parts[0].manifest.clone();
    base.job = parts[0].job.clone();
    let m = finish_manifest(base, done, text_in, out)?;
    let dir = out.join(PARTS_DIR);
    std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    Ok((n, m.totals.pages_out))
}

/// The parts of a split clean (checked: one job, every worker present) and, per input in
/// order, the worker that filtered it and its record.
#[allow(clippy::type_complexity)]
fn ordered_parts(
    out: &Path,
    files: &[PathBuf],
) -> Result<(Vec<CleanPart>, Vec<(Worker, CleanFile)>), Error> {
    let parts = files
        .iter()
        .map(|f| read_part(f))
        .collect::<Result<Vec<_>, _>>()?;
    let n = parts[0].inputs;
    let mut slots: Vec<Option<(Worker, CleanFile)>> = vec![None; n];
    for p in &parts {
        for (i, f) in &p.files {
            let refuse = |message: String| Error::OutputDir {
                path: out.to_path_buf(),
                message,
            };
            if *i >= n || !p.worker.owns(*i) {
                return Err(refuse(format!(
                    "{} lists input {i}, which is not one of its inputs",
                    p.worker.tag()
                )));
            }
            if slots[*i].is_some() {
                return Err(refuse(format!("input {i} was cleaned twice")));
            }
            slots[*i] = Some((p.worker, f.clone()));
        }
    }
    if let Some(i) = slots.iter().position(Option::is_none) {
        return Err(Error::OutputDir {
            path: out.to_path_buf(),
            message: format!(
                "input {i} was cleaned by no worker; rerun worker {} of {}",
                i % parts[0].worker.count,
                parts[0].worker.count
            ),
        });
    }
    let slots = slots
        .into_iter()
        .map(|s| s.expect("checked above"))
        .collect();
    Ok((parts, slots))
}

/// Where dedup shard `shard` of a split clean keeps its drop list.
fn drop_list_path(out: &Path, shard: Worker) -> PathBuf {
    out.join(PARTS_DIR)
        .join(format!("dedup-{}.bin", shard.tag()))
}

/// One shard of the dedup pass of a split clean: the lines whose hash falls in bucket
/// `shard.index` of `shard.count`, across every worker's filtered pages in input order; every
/// occurrence after the first is written to a drop list (input, page, line). Memory: the
/// distinct lines of one bucket. `conveyor manifest merge OUT` then applies all drop lists.
/// Returns the lines to drop.
pub fn dedup_shard(out: &Path, shard: Worker) -> Result<u64, Error> {
    let files: Vec<PathBuf> = crate::workers::read_part_files(out)?
        .into_iter()
        .filter(|(_, h, _)| h.format == CLEAN_PART_FORMAT)
        .map(|(p, _, _)| p)
        .collect();
    if files.is_empty() {
        return Err(Error::OutputDir {
            path: out.to_path_buf(),
            message: "holds no clean worker parts to deduplicate".into(),
        });
    }
    let headers: Vec<_> = crate::workers::read_part_files(out)?
        .into_iter()
        .map(|(_, h, _)| h)
        .collect();
    crate::workers::check_parts(out, &headers)?;
    let (parts, slots) = ordered_parts(out, &files)?;
    let mut seen: HashSet<[u8; 16]> = HashSet::new();
    let mut drops: Vec<u8> = Vec::new();
    let mut count = 0u64;
    for (i, (w, f)) in slots.iter().enumerate() {
        let filtered = part_dir(out, *w).join(&f.output);
        let reader = std::io::BufReader::new(flate2::read::GzDecoder::new(
            std::fs::File::open(&filtered).map_err(|e| Error::io(&filtered, e))?,
        ));
        for (page, line) in std::io::BufRead::lines(reader).enumerate() {
            let line = line.map_err(|e| Error::io(&filtered, e))?;
            let doc = source::parse_json_line(line.as_bytes(), "text").map_err(|(_, m)| {
                Error::OutputDir {
                    path: filtered.clone(),
                    message: m,
                }
            })?;
            for (k, l) in doc.text.split('\n').enumerate() {
                let key = line_key(l);
                let bucket = u16::from_le_bytes([key[0], key[1]]) as usize % shard.count;
                if bucket == shard.index && !seen.insert(key) {
                    drops.extend_from_slice(&(i as u32).to_le_bytes());
                    drops.extend_from_slice(&(page as u64).to_le_bytes());
                    drops.extend_from_slice(&(k as u32).to_le_bytes());
                    count += 1;
                }
            }
        }
    }
    let header = serde_json::json!({"job": parts[0].job, "shard": shard, "drops": count});
    let mut bytes = serde_json::to_vec(&header).expect("header serialises");
    bytes.push(b'\n');
    bytes.extend_from_slice(&drops);
    crate::manifest::write_atomic(&drop_list_path(out, shard), &bytes)?;
    Ok(count)
}

/// The drop lists of a sharded dedup, per input sorted by (page, line), when every shard
/// wrote one for `job`; None when no shard ran. Refuses an incomplete or foreign set.
#[allow(clippy::type_complexity)]
fn read_drop_lists(
    out: &Path,
    job: &str,
    inputs: usize,
) -> Result<Option<Vec<Vec<(u64, u32)>>>, Error> {
    let dir = out.join(PARTS_DIR);
    let mut found: Vec<(Worker, Vec<u8>)> = Vec::new();
    for e in std::fs::read_dir(&dir)
        .map_err(|e| Error::io(&dir, e))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("dedup-") && name.ends_with(".bin")) {
            continue;
        }
        let path = e.path();
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let bad = |m: &str| Error::OutputDir {
            path: path.clone(),
            message: m.to_string(),
        };
        let nl = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| bad("no header line"))?;
        let header: serde_json::Value =
            serde_json::from_slice(&bytes[..nl]).map_err(|_| bad("unreadable header"))?;
        if header["job"] != job {
            return Err(bad("is a dedup shard of another job; remove it"));
        }
        let shard: Worker =
            serde_json::from_value(header["shard"].clone()).map_err(|_| bad("unreadable shard"))?;
        found.push((shard, bytes[nl + 1..].to_vec()));
    }
    if found.is_empty() {
        return Ok(None);
    }
    let count = found[0].0.count;
    let missing: Vec<String> = (0..count)
        .filter(|i| !found.iter().any(|(w, _)| w.index == *i && w.count == count))
        .map(|i| i.to_string())
        .collect();
    if !missing.is_empty() || found.len() != count {
        return Err(Error::OutputDir {
            path: out.to_path_buf(),
            message: format!(
                "dedup shard(s) {} of {count} are missing: run `conveyor manifest merge OUT --dedup-shard I --dedup-shards {count}` for them (or remove every parts/dedup-*.bin to dedup in one pass)",
                missing.join(", ")
            ),
        });
    }
    let mut lists: Vec<Vec<(u64, u32)>> = vec![Vec::new(); inputs];
    for (_, bytes) in found {
        for r in bytes.chunks_exact(16) {
            let input = u32::from_le_bytes(r[0..4].try_into().expect("4 bytes")) as usize;
            let page = u64::from_le_bytes(r[4..12].try_into().expect("8 bytes"));
            let line = u32::from_le_bytes(r[12..16].try_into().expect("4 bytes"));
            if let Some(l) = lists.get_mut(input) {
                l.push((page, line));
            }
        }
    }
    for l in &mut lists {
        l.sort_unstable();
    }
    Ok(Some(lists))
}

fn record_path(work: &Path, name: &str) -> PathBuf {
    work.join(format!("{name}.record.json"))
}

/// The record of an input an earlier run finished, if any.
fn load_record(work: &Path, name: &str) -> Option<CleanFile> {
    let text = std::fs::read_to_string(record_path(work, name)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Line dedup across the corpus: the first occurrence of a line (lower-cased, trimmed) in
/// input order is kept.
#[derive(Default)]
struct Dedup {
    seen: HashSet<[u8; 16]>,
}

impl Dedup {
    /// Marks every line of a finished output file as seen (resuming a killed run).
    fn add_output(&mut self, file: &Path) -> Result<(), Error> {
        let reader = std::io::BufReader::new(flate2::read::GzDecoder::new(
            std::fs::File::open(file).map_err(|e| Error::io(file, e))?,
        ));
        for line in std::io::BufRead::lines(reader) {
            let line = line.map_err(|e| Error::io(file, e))?;
            let doc = source::parse_json_line(line.as_bytes(), "text").map_err(|(_, m)| {
                Error::OutputDir {
                    path: file.to_path_buf(),
                    message: m,
                }
            })?;
            for l in doc.text.split('\n') {
                self.seen.insert(line_key(l));
            }
        }
        Ok(())
    }

    /// The page's lines not seen before, or None (counted) when none is left.
    fn keep(&mut self, lines: Vec<String>, counts: &mut RuleCounts) -> Option<Vec<String>> {
        let before = lines.len();
        let kept: Vec<String> = lines
            .into_iter()
            .filter(|l| self.seen.insert(line_key(l)))
            .collect();
        let dupes = (before - kept.len()) as u64;
        if dupes > 0 {
            *counts.lines_dropped.entry(LineDrop::Duplicate).or_default() += dupes;
        }
        if kept.is_empty() {
            *counts
                .pages_dropped
                .entry(PageDrop::AllLinesDuplicate)
                .or_default() += 1;
            return None;
        }
        Some(kept)
    }
}

/// Writes pages as C4 JSON lines (`text`, `timestamp`, `url`), gzip.
struct PageWriter {
    path: PathBuf,
    gz: flate2::write::GzEncoder<std::io::BufWriter<std::fs::File>>,
    text_bytes: u64,
}

impl PageWriter {
    fn create(path: &Path) -> Result<Self, Error> {
        let f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            gz: flate2::write::GzEncoder::new(
                std::io::BufWriter::new(f),
                flate2::Compression::new(6),
            ),
            text_bytes: 0,
        })
    }

    fn page(&mut self, text: &str, doc: &Document) -> Result<(), Error> {
        let row = serde_json::json!({"text": text, "timestamp": doc.timestamp, "url": doc.url});
        let mut line = serde_json::to_vec(&row).expect("row serialises");
        line.push(b'\n');
        self.text_bytes += text.len() as u64;
        self.gz
            .write_all(&line)
            .map_err(|e| Error::io(&self.path, e))
    }

    /// Finishes the file; returns the bytes of text written.
    fn finish(self) -> Result<u64, Error> {
        self.gz
            .finish()
            .and_then(|mut w| w.flush())
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(self.text_bytes)
    }
}

const WORK_DIR: &str = ".conveyor-clean";

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

/// The dedup key of a line: a digest of it lower-cased and trimmed.
fn line_key(line: &str) -> [u8; 16] {
    let d = Sha256::digest(line.trim().to_lowercase().as_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&d[..16]);
    k
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
    Ok(m)
}
