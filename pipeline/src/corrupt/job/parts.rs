//! A corruption job split among workers (by token shard): a worker's part and the merge of
//! the parts into the dataset one process writes.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{examples_manifest, work_shard, CorruptConfig, Plan};
use crate::contain;
use crate::error::Error;
use crate::examples::{ExampleShardRecord, ExamplesManifest};
use crate::job::workers::{part_dir, part_file, Worker};
use crate::job::{moves, outdir};
use crate::manifest::write_atomic;
use crate::shard::shard_name;

/// The `format` of `part.json` written by a corrupt worker.
pub const CORRUPT_PART_FORMAT: &str = "conveyor-corrupt-part";

/// A worker's part: its example shards (named `shard-KKKKK.parquet` after their token shard
/// in the part folder) and a manifest of them alone.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct CorruptPart {
    pub format: String,
    pub job: String,
    pub worker: Worker,
    /// Token shards in the whole job.
    pub total: usize,
    /// The token shards (indices) this worker did, in the order of `manifest.shards`.
    pub shards: Vec<usize>,
    pub manifest: ExamplesManifest,
}

/// One worker's end: its shards move to its part folder (named after their token shard)
/// and `part.json` is written; returns the part's manifest.
pub(super) fn finalize_part(
    cfg: &CorruptConfig,
    plan: &Plan,
    work: &Path,
    w: Worker,
    mine: &[usize],
    mut records: Vec<ExampleShardRecord>,
) -> Result<ExamplesManifest, Error> {
    let dir = part_dir(&cfg.out, w);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    for (&k, r) in mine.iter().zip(records.iter_mut()) {
        let name = format!("shard-{k:05}.parquet");
        outdir::rename_once(
            &work_shard(work, k),
            &dir.join(&name),
            outdir::FINISHED_SHARD_MISSING,
        )?;
        r.file = name;
    }
    let part = CorruptPart {
        format: CORRUPT_PART_FORMAT.into(),
        job: plan.job.clone(),
        worker: w,
        total: plan.source.shards.len(),
        shards: mine.to_vec(),
        manifest: examples_manifest(cfg, plan, records),
    };
    let json = serde_json::to_string_pretty(&part).expect("part serialises") + "\n";
    write_atomic(&dir.join("part.json"), json.as_bytes())?;
    std::fs::remove_dir_all(work).map_err(|e| Error::io(work, e))?;
    Ok(part.manifest)
}

impl crate::job::workers::Part for CorruptPart {
    const KIND: &'static str = "corrupt";

    fn check_names(&self, source: &Path) -> Result<(), Error> {
        self.manifest.check_names(source)
    }
}

pub(super) fn read_part(path: &Path) -> Result<CorruptPart, Error> {
    crate::job::workers::read_part(path)
}

/// Joins the workers' parts (already checked to be one job with every worker present) into
/// the dataset one process writes: returns the shard count and tokens.
pub fn merge_parts(out: &Path, files: &[PathBuf]) -> Result<(usize, u64), Error> {
    let parts = files
        .iter()
        .map(|f| read_part(f))
        .collect::<Result<Vec<_>, _>>()?;
    let claims: Vec<_> = parts
        .iter()
        .map(|p| (p.worker, p.total, p.shards.len()))
        .collect();
    let total = crate::job::workers::claimed_count(out, "token shards", &claims)?;
    let mut slots: Vec<Option<(Worker, ExampleShardRecord)>> = vec![None; total];
    for p in &parts {
        for (&k, r) in p.shards.iter().zip(&p.manifest.shards) {
            let refuse = |message: String| Error::OutputDir {
                path: out.to_path_buf(),
                message,
            };
            if k >= total || !p.worker.owns(k) {
                return Err(refuse(format!(
                    "{} lists token shard {k}, which is not one of its shards",
                    p.worker.tag()
                )));
            }
            if let Some((other, _)) = &slots[k] {
                return Err(refuse(format!(
                    "token shard {k} was done twice (by workers {} and {})",
                    other.index, p.worker.index
                )));
            }
            slots[k] = Some((p.worker, r.clone()));
        }
    }
    if let Some(k) = slots.iter().position(Option::is_none) {
        return Err(Error::OutputDir {
            path: out.to_path_buf(),
            message: format!(
                "token shard {k} was done by no worker; rerun worker {} of {}",
                k % parts[0].worker.count,
                parts[0].worker.count
            ),
        });
    }
    let base = &parts[0].manifest;
    let name = |k: usize| shard_name(&base.settings.split, k, total);
    let moves = slots
        .iter()
        .enumerate()
        .map(|(k, slot)| {
            let (w, r) = slot.as_ref().expect("checked above");
            Ok(moves::Move {
                from: contain::join(&part_dir(out, *w), &r.file, &part_file(out, *w))?,
                to: out.join(name(k)),
                sha256: &r.sha256,
                bytes: r.bytes,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    moves::check(moves)?.run()?;
    let records: Vec<_> = slots
        .into_iter()
        .enumerate()
        .map(|(k, slot)| {
            let (_, r) = slot.expect("checked above");
            ExampleShardRecord { file: name(k), ..r }
        })
        .collect();
    let m = ExamplesManifest {
        examples: records.iter().map(|r| r.examples).sum(),
        rows: records.iter().map(|r| r.rows).sum(),
        tokens: records.iter().map(|r| r.tokens).sum(),
        source_tokens: records.iter().map(|r| r.source_tokens).sum(),
        shards: records,
        ..base.clone()
    };
    m.write(out)?;
    crate::job::workers::remove_parts(out)?;
    Ok((total, m.tokens))
}
