//! Output folders (and dataset inputs) named by URL: the jobs run on a local stage folder
//! (`conveyor_pipeline::remote::sync`), and this module moves the files across before and
//! after. Paths pass through untouched.

use std::path::{Path, PathBuf};

use conveyor_pipeline::job::workers::Worker;
use conveyor_pipeline::remote::{self, sync};

/// Where a job writes: the folder the library sees, and the URL it is bound for.
pub struct Out {
    pub dir: PathBuf,
    url: Option<String>,
    quiet: bool,
}

/// `out` as a URL, if it is one.
pub fn url_of(out: &Path) -> Option<String> {
    out.to_str()
        .filter(|s| remote::is_url(s))
        .map(|s| s.trim_end_matches('/').to_string())
}

impl Out {
    /// Prepares the output `out` of a job (of one worker, if `worker`). A URL that already
    /// holds a finished dataset is refused unless `overwrite`.
    pub fn new(
        out: &Path,
        worker: Option<Worker>,
        overwrite: bool,
        quiet: bool,
    ) -> anyhow::Result<Out> {
        let Some(url) = url_of(out) else {
            return Ok(Out {
                dir: out.to_path_buf(),
                url: None,
                quiet,
            });
        };
        let manifest = remote::Location::parse(&url)?.join("manifest.json");
        if !overwrite && manifest.head()?.is_some() {
            anyhow::bail!(
                "{url} already holds a finished dataset (manifest.json); pass --overwrite to replace it, or choose another --out"
            );
        }
        // One stage per worker: workers on one machine must not share (or remove) a stage.
        let key = match worker {
            Some(w) => format!("{url}#worker-{}-of-{}", w.index, w.count),
            None => url.clone(),
        };
        let dir = sync::stage_dir(&key);
        if !quiet {
            eprintln!("staging the output for {url} in {}", dir.display());
        }
        Ok(Out {
            dir,
            url: Some(url),
            quiet,
        })
    }

    /// The name to show for the output: the URL, or the folder.
    pub fn shown(&self) -> PathBuf {
        self.url.as_ref().map_or(self.dir.clone(), PathBuf::from)
    }

    /// After the job succeeded: uploads the stage (manifest last) and removes it. `mirror`
    /// also deletes what the URL held that the stage does not (an `--overwrite`, a merge).
    pub fn finish(self, mirror: bool) -> anyhow::Result<()> {
        let Some(url) = &self.url else {
            return Ok(());
        };
        let t = sync::upload(&self.dir, url, mirror)?;
        if !self.quiet {
            eprintln!(
                "uploaded {} files ({:.1} MB) to {url}{}{}",
                t.files,
                t.bytes as f64 / 1e6,
                if t.skipped > 0 {
                    format!("; {} were already there", t.skipped)
                } else {
                    String::new()
                },
                if t.deleted > 0 {
                    format!("; removed {} stale objects", t.deleted)
                } else {
                    String::new()
                }
            );
        }
        sync::remove_stage(&self.dir)
            .map_err(|e| anyhow::anyhow!("cannot remove the stage: {e}"))?;
        Ok(())
    }
}

/// A dataset folder given by path or URL, as a local folder (a URL is downloaded into a
/// cache first: `sync::local_dataset`).
pub fn dataset(input: &Path, quiet: bool) -> anyhow::Result<PathBuf> {
    let (dir, transfer) = sync::local_dataset(input)?;
    if let (Some(t), false) = (transfer, quiet) {
        eprintln!(
            "read {} into {} ({} files, {:.1} MB downloaded, {} already there)",
            input.display(),
            dir.display(),
            t.files,
            t.bytes as f64 / 1e6,
            t.skipped
        );
    }
    Ok(dir)
}

/// `manifest merge` on a URL: brings the workers' uploads into a stage, merges there, and
/// uploads the result; with `mirror` the objects the merge renamed away are removed (not for
/// a dedup shard, whose siblings may be uploading their own drop lists at the same time).
pub fn merge_at<T>(
    out: &Path,
    quiet: bool,
    mirror: bool,
    merge: impl FnOnce(&Path) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let Some(url) = url_of(out) else {
        return merge(out);
    };
    let dir = sync::stage_dir(&format!("{url}#merge"));
    sync::download_output(&url, &dir)?;
    let result = merge(&dir)?;
    Out {
        dir,
        url: Some(url),
        quiet,
    }
    .finish(mirror)?;
    Ok(result)
}
