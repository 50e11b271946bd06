//! A clean split among workers: each worker's part (its inputs' filtered pages, before line
//! dedup) and the merge that deduplicates them in input order — in one pass, or sharded by
//! line hash (`manifest merge --dedup-shard`) — into exactly what one process writes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::pages::{after_dedup, line_key, read_pages, Dedup, PageWriter};
use super::{finish_manifest, output_name, CleanFile, CleanManifest, CLEAN_PART_FORMAT};
use crate::error::Error;
use crate::job::workers::{part_dir, part_file, Worker, PARTS_DIR};

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

/// A worker part's counts as a manifest (for its summary).
pub(super) fn part_manifest(p: &CleanPart) -> CleanManifest {
    let mut m = p.manifest.clone();
    m.files = p.files.iter().map(|(_, f)| f.clone()).collect();
    for f in &m.files {
        m.totals.add(&f.counts);
    }
    m.text_bytes_in = p.text_bytes_in;
    m
}

impl crate::job::workers::Part for CleanPart {
    const KIND: &'static str = "clean";

    fn check_names(&self, source: &Path) -> Result<(), Error> {
        self.files
            .iter()
            .try_for_each(|(_, f)| crate::contain::check_name(&f.output, source))
    }
}

pub(super) fn read_part(path: &Path) -> Result<CleanPart, Error> {
    crate::job::workers::read_part(path)
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
    let min_sentences = parts[0].manifest.rules.min_sentences;
    let mut done = Vec::with_capacity(n);
    for (i, (w, mut f)) in slots.into_iter().enumerate() {
        let filtered = crate::contain::join(&part_dir(out, w), &f.output, &part_file(out, w))?;
        let name = output_name(i, n);
        let tmp = out.join(format!("{name}.tmp"));
        let mut writer = PageWriter::create(&tmp)?;
        let drops = sharded.as_ref().map(|d| d[i].as_slice());
        let mut drop_at = 0usize;
        read_pages(&filtered, |page, doc| {
            let lines: Vec<String> = doc.text.split('\n').map(str::to_string).collect();
            let kept = match (&mut dedup, drops) {
                (Some(d), _) => d.keep(lines, min_sentences, &mut f.counts),
                (None, Some(drops)) => apply_drops(
                    lines,
                    page,
                    (drops, &mut drop_at),
                    min_sentences,
                    &mut f.counts,
                ),
                (None, None) => Some(lines),
            };
            if let Some(lines) = kept {
                f.counts.pages_out += 1;
                f.counts.lines_out += lines.len() as u64;
                writer.page(&lines.join("\n"), &doc)?;
            }
            Ok(())
        })?;
        (f.text_bytes_out, f.bytes) = writer.finish().map(|(t, b)| (t, Some(b)))?;
        std::fs::rename(&tmp, out.join(&name)).map_err(|e| Error::io(&tmp, e))?;
        f.output = name;
        done.push(f);
    }
    let text_in = parts.iter().map(|p| p.text_bytes_in).sum();
    let mut base = parts[0].manifest.clone();
    base.job = parts[0].job.clone();
    let m = finish_manifest(base, done, text_in, out)?;
    crate::job::workers::remove_parts(out)?;
    Ok((n, m.totals.pages_out))
}

/// A page's lines less those its drop list names (`drops` sorted by (page, line); `at` is
/// where the previous page left off), counting them; None (counted) when none is left.
fn apply_drops(
    lines: Vec<String>,
    page: usize,
    (drops, at): (&[(u64, u32)], &mut usize),
    min_sentences: usize,
    counts: &mut super::RuleCounts,
) -> Option<Vec<String>> {
    let before = lines.len();
    let mut kept = Vec::with_capacity(before);
    for (k, l) in lines.into_iter().enumerate() {
        let here = (page as u64, k as u32);
        while *at < drops.len() && drops[*at] < here {
            *at += 1;
        }
        if *at >= drops.len() || drops[*at] != here {
            kept.push(l);
        }
    }
    after_dedup(kept, before, min_sentences, counts)
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
    let claims: Vec<_> = parts
        .iter()
        .map(|p| (p.worker, p.inputs, p.files.len()))
        .collect();
    let n = crate::job::workers::claimed_count(out, "inputs", &claims)?;
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
    let found = crate::job::workers::read_part_files(out)?;
    if found.is_empty() || found.iter().any(|(_, h)| h.format != CLEAN_PART_FORMAT) {
        return Err(Error::OutputDir {
            path: out.to_path_buf(),
            message: "holds no clean worker parts to deduplicate".into(),
        });
    }
    let headers: Vec<_> = found.iter().map(|(_, h)| h.clone()).collect();
    crate::job::workers::check_parts(out, &headers)?;
    let files: Vec<PathBuf> = found.into_iter().map(|(p, _)| p).collect();
    let (parts, slots) = ordered_parts(out, &files)?;
    let mut seen: HashSet<[u8; 16]> = HashSet::new();
    let mut drops: Vec<u8> = Vec::new();
    let mut count = 0u64;
    for (i, (w, f)) in slots.iter().enumerate() {
        let filtered = crate::contain::join(&part_dir(out, *w), &f.output, &part_file(out, *w))?;
        read_pages(&filtered, |page, doc| {
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
            Ok(())
        })?;
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
        // The header counts the records: a truncated or padded list would drop the wrong
        // lines, silently.
        let records = &bytes[nl + 1..];
        if header["drops"].as_u64() != Some(records.len() as u64 / 16) || records.len() % 16 != 0 {
            return Err(bad(&format!(
                "holds {} bytes of records, not the {} records of 16 bytes its header counts: it is damaged; run `conveyor manifest merge OUT --dedup-shard {} --dedup-shards {}` again",
                records.len(),
                header["drops"],
                shard.index,
                shard.count
            )));
        }
        found.push((shard, records.to_vec()));
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
