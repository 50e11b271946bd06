//! Outputs at a URL: jobs write into a local stage folder exactly as they would into a local
//! output folder (temporary names, journals, resume), and [`upload`] copies the finished
//! files to the URL, `manifest.json` last, so a reader that finds the manifest finds every
//! shard it lists. Uploads skip objects already there with the same size (a rerun after an
//! interrupted upload sends only what is missing) unless the manifest there gives the file
//! another checksum than the new one (or none); files and folders whose names start with
//! `.` (work folders, journals) stay local. [`download`] is the reverse, used by
//! `manifest merge` on a URL and by jobs that read a dataset (token shards) from a URL.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};

use super::cache::Fetched;
use super::owned::{conveyor_output, is_part_file, listed, listed_remote};
use super::{list::objects_under, runtime, Location};
use crate::error::Error;

/// Files at or above this size are sent as multipart uploads of this part size: 16 MiB, or
/// `CONVEYOR_UPLOAD_PART_BYTES` (S3 needs at least 5 MiB but the tests' server takes less).
fn part_size() -> usize {
    std::env::var("CONVEYOR_UPLOAD_PART_BYTES")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(16 << 20)
}

/// What an upload or download did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transfer {
    pub files: usize,
    pub bytes: u64,
    /// Files that were already there: the same size (uploads), the same version (downloads).
    pub skipped: usize,
    /// Remote objects removed because the local folder no longer has them.
    pub deleted: usize,
}

/// The files of a local output folder, relative paths with `/`, sorted, manifest last.
fn local_files(dir: &Path) -> Result<Vec<(String, u64)>, Error> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, u64)>) -> Result<(), Error> {
        let entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| Error::io(dir, e))?;
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name.ends_with(".tmp") {
                continue;
            }
            let path = e.path();
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if path.is_dir() {
                walk(&path, &rel, out)?;
            } else {
                let len = e.metadata().map_err(|err| Error::io(&path, err))?.len();
                out.push((rel, len));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out)?;
    out.sort_by_key(|(rel, _)| (rel == "manifest.json", rel.clone()));
    Ok(out)
}

/// The objects under `loc`, by path relative to it, with their sizes.
pub fn remote_files(loc: &Location) -> Result<BTreeMap<String, u64>, Error> {
    let base = loc.key.as_ref().len();
    Ok(objects_under(loc)?
        .into_iter()
        .map(|m| {
            let rel = m.location.as_ref()[base..]
                .trim_start_matches('/')
                .to_string();
            (rel, m.size)
        })
        .collect())
}

/// Copies `dir`'s output files to `url` (see the module documentation). With `mirror`,
/// conveyor's objects under `url` that `dir` does not have are deleted afterwards (a merge
/// renamed them, or `--overwrite` replaced them).
pub fn upload(dir: &Path, url: &str, mirror: bool) -> Result<Transfer, Error> {
    let loc = Location::parse(url)?;
    let there = remote_files(&loc)?;
    let mine = local_files(dir)?;
    // Read before the upload replaces the manifest: what the old dataset was (an unreadable
    // one says nothing of its files: every file is sent again).
    let (old, unreadable) = match there.contains_key("manifest.json") {
        true => listed_remote(&loc).map_or((Default::default(), true), |m| (m, false)),
        false => (Default::default(), false),
    };
    let manifest = dir.join("manifest.json");
    let new = std::fs::read(&manifest)
        .ok()
        .and_then(|text| serde_json::from_slice(&text).ok())
        .map_or_else(Default::default, |v| listed(&v, dir));
    // An object of the same size is this file unless the dataset there now gives it another
    // checksum (or none to compare): `--overwrite` makes files of the same names, some of the
    // same sizes.
    let send = |rel: &String, len: &u64| {
        let same = match old.get(rel).map(|e| &e.sha256) {
            None => !unreadable,
            Some(sum) => sum.is_some() && new.get(rel).map(|e| &e.sha256) == Some(sum),
        };
        rel == "manifest.json" || there.get(rel) != Some(len) || !same
    };
    // Once one of the old dataset's files is replaced it is no longer that dataset: its
    // manifest goes first, so that a reader (or a kill half-way) never pairs the two.
    if mine
        .iter()
        .any(|(rel, len)| rel != "manifest.json" && old.contains_key(rel) && send(rel, len))
    {
        let obj = loc.join("manifest.json");
        runtime()
            .block_on(obj.store.delete(&obj.key))
            .map_err(|e| obj.error("cannot delete", e))?;
    }
    let mut t = Transfer::default();
    for (rel, len) in &mine {
        if !send(rel, len) {
            t.skipped += 1;
            continue;
        }
        put_file(&dir.join(rel), &loc.join(rel))?;
        t.files += 1;
        t.bytes += len;
    }
    if mirror {
        let mine: std::collections::HashSet<&str> = mine.iter().map(|(m, _)| m.as_str()).collect();
        for (rel, size) in &there {
            if conveyor_output(rel, *size, &old) && !mine.contains(rel.as_str()) {
                let obj = loc.join(rel);
                runtime()
                    .block_on(obj.store.delete(&obj.key))
                    .map_err(|e| obj.error("cannot delete", e))?;
                t.deleted += 1;
            }
        }
    }
    Ok(t)
}

fn put_file(path: &Path, obj: &Location) -> Result<(), Error> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let part = part_size();
    if len < part as u64 {
        let mut buf = Vec::with_capacity(len as usize);
        file.read_to_end(&mut buf).map_err(|e| Error::io(path, e))?;
        runtime()
            .block_on(obj.store.put(&obj.key, PutPayload::from(buf)))
            .map_err(|e| obj.error("cannot upload", e))?;
        return Ok(());
    }
    runtime()
        .block_on(async {
            let upload = obj.store.put_multipart(&obj.key).await?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, part);
            let mut buf = vec![0u8; part];
            loop {
                let n = file
                    .read(&mut buf)
                    .map_err(|e| object_store::Error::Generic {
                        store: "local file",
                        source: Box::new(e),
                    })?;
                if n == 0 {
                    break;
                }
                writer.wait_for_capacity(4).await?;
                writer.write(&buf[..n]);
            }
            writer.finish().await
        })
        .map_err(|e| obj.error("cannot upload", e))?;
    Ok(())
}

/// Copies every object under `url` into `dir`, skipping the copies already there of the
/// very version the store lists ([`Fetched`]); returns what it did.
pub fn download(url: &str, dir: &Path) -> Result<Transfer, Error> {
    let _lock = lock_stage(dir)?;
    download_locked(url, dir, Objects::All)
}

/// [`download`] of a conveyor output at `url` (a dataset, or a split job's parts to merge):
/// only its manifest, the files that manifest lists and the workers' part files are
/// fetched; anything else under the prefix is the user's, neither fetched nor read.
pub fn download_output(url: &str, dir: &Path) -> Result<Transfer, Error> {
    let _lock = lock_stage(dir)?;
    download_locked(url, dir, Objects::Output)
}

/// Which objects under a URL a download fetches.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Objects {
    All,
    /// A conveyor output's own files ([`download_output`]).
    Output,
}

/// Waits until no other process fetches into `dir` (the ranks of one training run read one
/// dataset into one cache folder).
fn lock_stage(dir: &Path) -> Result<crate::run_lock::RunLock, Error> {
    let lock = crate::run_lock::beside(dir, "fetch");
    if let Some(parent) = lock.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    crate::run_lock::RunLock::wait(&lock)
}

/// The objects of the dataset at `loc`: those listed under it, or on a plain web server
/// (which lists nothing) its `manifest.json` and the files that manifest names.
fn dataset_objects(loc: &Location, which: Objects) -> Result<Vec<object_store::ObjectMeta>, Error> {
    let listing = objects_under(loc).map(|all| match which {
        Objects::All => all,
        Objects::Output => {
            let base = loc.key.as_ref().len();
            let rel = |m: &object_store::ObjectMeta| {
                m.location.as_ref()[base..]
                    .trim_start_matches('/')
                    .to_string()
            };
            let manifest = all.iter().any(|m| rel(m) == "manifest.json");
            let listed = match manifest {
                true => listed_remote(loc).unwrap_or_default(),
                false => BTreeMap::new(),
            };
            all.into_iter()
                .filter(|m| {
                    let r = rel(m);
                    r == "manifest.json" || is_part_file(&r) || listed.contains_key(&r)
                })
                .collect()
        }
    });
    // (A plain server answers a listing with an error, or with nothing: 404 reads as empty.)
    if listing.as_ref().is_ok_and(|v| !v.is_empty()) || !loc.root.starts_with("http") {
        return listing;
    }
    let head = |l: &Location| {
        runtime()
            .block_on(l.store.head(&l.key))
            .map_err(|e| l.error("cannot read", e))
    };
    let manifest = loc.join("manifest.json");
    let Ok(meta) = head(&manifest) else {
        return listing;
    };
    let mut text = Vec::new();
    super::read::RemoteReader::open(&manifest.url)?
        .read_to_end(&mut text)
        .map_err(|e| Error::Remote {
            url: manifest.url.clone(),
            message: e.to_string(),
        })?;
    let v: serde_json::Value = serde_json::from_slice(&text).map_err(|e| Error::Remote {
        url: manifest.url.clone(),
        message: format!("is not a readable manifest ({e}); is this a conveyor dataset?"),
    })?;
    let mut found = vec![meta];
    for name in listed(&v, Path::new(&loc.url)).keys() {
        found.push(head(&loc.join(name))?);
    }
    Ok(found)
}

/// [`download`] with the stage locked by the caller.
fn download_locked(url: &str, dir: &Path, which: Objects) -> Result<Transfer, Error> {
    let loc = Location::parse(url)?;
    let base = loc.key.as_ref().len();
    let mut fetched = Fetched::open(dir);
    let mut t = Transfer::default();
    let result = (|| {
        for m in dataset_objects(&loc, which)? {
            let rel = m.location.as_ref()[base..].trim_start_matches('/');
            let path = stage_path(dir, rel, url)?;
            if fetched.is_current(rel, &path, &m) {
                t.skipped += 1;
                continue;
            }
            fetch(&loc.join(rel).url, &path)?;
            fetched.fetched(rel, &m);
            t.files += 1;
            t.bytes += m.size;
            // Saved as it goes, now and then: a download killed half-way keeps most of what
            // it has fetched.
            if t.files % 64 == 0 {
                fetched.save()?;
            }
        }
        Ok(())
    })();
    // What was fetched is recorded even when a later object failed.
    let saved = fetched.save();
    result.and(saved).map(|()| t)
}

/// Where the object `rel` (under `url`) is copied in `dir`: object names are the bucket
/// writer's, so each part must be a plain name.
fn stage_path(dir: &Path, rel: &str, url: &str) -> Result<PathBuf, Error> {
    let mut path = dir.to_path_buf();
    for part in rel.split('/') {
        path = crate::contain::join(&path, part, Path::new(url))?;
    }
    Ok(path)
}

/// Downloads one object to `path` (through a temporary name, so `path` is whole or absent).
fn fetch(url: &str, path: &Path) -> Result<(), Error> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    // A killed fetch of this object left its temporary (the caller holds the stage's lock,
    // so no other process is writing one now).
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
        let name = name.to_string_lossy();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if crate::manifest::is_temporary_of(&e.file_name().to_string_lossy(), &name) {
                std::fs::remove_file(e.path()).map_err(|err| Error::io(&e.path(), err))?;
            }
        }
    }
    let mut reader = super::read::RemoteReader::open(url)?;
    let (tmp, mut out) = crate::manifest::create_temporary(path).map_err(|e| Error::io(path, e))?;
    let copied = std::io::copy(&mut reader, &mut out).map_err(|e| Error::Remote {
        url: url.to_string(),
        message: format!("download failed: {e}"),
    });
    let placed = copied.and_then(|_| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if placed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    placed
}

/// A dataset folder (token or example shards and their manifest) given by path or URL, as
/// a local folder: a URL is downloaded into its stage folder first (kept as a cache; copies
/// of the version the store lists are not fetched again), since shards are read by
/// random access. Returns the folder and, for a URL, what was transferred.
pub fn local_dataset(input: &Path) -> Result<(PathBuf, Option<Transfer>), Error> {
    let Some(url) = input.to_str().filter(|s| super::is_url(s)) else {
        return Ok((input.to_path_buf(), None));
    };
    let url = url.trim_end_matches('/');
    let dir = stage_dir(&format!("{url}#input"));
    // Locked while fetching only: the ranks of a run check the copies side by side (hashing
    // a big dataset one rank after another could outlast their start-up timeout).
    let t = download_output(url, &dir)?;
    if !dir.join("manifest.json").exists() {
        return Err(Error::Remote {
            url: url.to_string(),
            message: "holds no manifest.json: name a conveyor dataset (the --out of ingest, corrupt or task prepare)".into(),
        });
    }
    // Copies damaged in the stage folder are fetched once more; a shard that still differs
    // from its manifest is damaged at the URL.
    let damaged = damaged_copies(&dir)?;
    if !damaged.is_empty() {
        let lock = lock_stage(&dir)?;
        let mut fetched = Fetched::open(&dir);
        for (file, _) in &damaged {
            fetched.forget(file);
        }
        fetched.save()?;
        download_locked(url, &dir, Objects::Output)?;
        drop(lock);
        if let Some((file, e)) = damaged_copies(&dir)?.into_iter().next() {
            return Err(Error::Remote {
                url: format!("{url}/{file}"),
                message: format!("does not match its dataset's manifest, fetched twice ({e}); the dataset at the URL is damaged: write it again"),
            });
        }
    }
    Ok((dir, Some(t)))
}

/// Every downloaded shard whose size or sha256 differs from the dataset's manifest, with
/// why, so a damaged object or copy is named before anything reads it.
fn damaged_copies(dir: &Path) -> Result<Vec<(String, Error)>, Error> {
    let listed: Vec<(String, String, u64)> = match crate::manifest::Manifest::read(dir) {
        Ok(m) => m
            .shards
            .into_iter()
            .map(|s| (s.file, s.sha256, s.bytes))
            .collect(),
        Err(_) => crate::examples::ExamplesManifest::read(dir)?
            .shards
            .into_iter()
            .map(|s| (s.file, s.sha256, s.bytes))
            .collect(),
    };
    let mut damaged = Vec::new();
    for (file, sha256, bytes) in listed {
        let path = crate::contain::join(dir, &file, &dir.join("manifest.json"))?;
        if let Err(e) = crate::shard::check_file(&path, &sha256, bytes) {
            damaged.push((file, e));
        }
    }
    Ok(damaged)
}

/// An input file or folder given by path or URL, as a local path: the object a URL names is
/// downloaded (as a file of the same name), or, when it names a prefix, every object under
/// it (as a folder). For inputs read whole rather than streamed (task files). Cached like
/// [`local_dataset`].
pub fn local_input(input: &Path) -> Result<PathBuf, Error> {
    let Some(url) = input.to_str().filter(|s| super::is_url(s)) else {
        return Ok(input.to_path_buf());
    };
    let loc = Location::parse(url)?;
    let dir = stage_dir(&format!("{}#input", loc.url));
    let name = loc.key.filename().unwrap_or("input").to_string();
    match loc.head()? {
        Some(meta) => {
            let path = dir.join(&name);
            let _lock = lock_stage(&dir)?;
            let mut fetched = Fetched::open(&dir);
            if !fetched.is_current(&name, &path, &meta) {
                fetch(&loc.url, &path)?;
                fetched.fetched(&name, &meta);
                fetched.save()?;
            }
            Ok(path)
        }
        None => {
            let folder = dir.join(&name);
            let t = download(&loc.url, &folder)?;
            if t.files + t.skipped == 0 {
                return Err(Error::MissingInput(url.to_string()));
            }
            Ok(folder)
        }
    }
}

/// Removes a stage folder once its work is uploaded, with the record of what was fetched
/// into it.
/// (Its fetch lock file, beside it, stays: a lock file is never removed, or two processes
/// could lock two different files.)
pub fn remove_stage(dir: &Path) -> Result<(), Error> {
    std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    Fetched::open(dir).remove()
}

/// The local stage folder for outputs bound for `url`: `CONVEYOR_STAGE` if set, else the
/// user's cache folder; one subfolder per URL, so a rerun finds its earlier work.
pub fn stage_dir(url: &str) -> PathBuf {
    use sha2::Digest;
    let base = std::env::var_os("CONVEYOR_STAGE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|c| PathBuf::from(c).join("conveyor/stage"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/conveyor/stage"))
        })
        .unwrap_or_else(|| std::env::temp_dir().join("conveyor-stage"));
    let digest = crate::manifest::hex(&sha2::Sha256::digest(url.trim_end_matches('/').as_bytes()));
    // The URL's last part makes the name readable; the digest makes it unique, so the part
    // is cut to stay far inside a file name's 255 bytes.
    let tail: String = url
        .rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or("out")
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    base.join(format!("{tail}-{}", &digest[..12]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_files_skip_work_folders_and_put_the_manifest_last() {
        let dir = std::env::temp_dir().join(format!("conveyor-sync-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join(".conveyor-ingest")).unwrap();
        std::fs::create_dir_all(dir.join("parts")).unwrap();
        for f in [
            "manifest.json",
            "train-00000-of-00001.parquet",
            "parts/w.json",
            ".conveyor-ingest/j",
            "x.tmp",
        ] {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        let names: Vec<String> = local_files(&dir)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            names,
            [
                "parts/w.json",
                "train-00000-of-00001.parquet",
                "manifest.json"
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stage_folders_differ_by_url() {
        let a = stage_dir("s3://b/tokens/");
        assert_eq!(a, stage_dir("s3://b/tokens"));
        assert_ne!(a, stage_dir("s3://b/tokens2"));
        assert!(a
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("tokens-"));
        // A long object name still makes a short folder name, and two such stay apart.
        let long = format!("s3://b/{}", "L".repeat(300));
        let a = stage_dir(&format!("{long}.tsv"));
        assert!(a.file_name().unwrap().len() < 100, "{a:?}");
        assert_ne!(a, stage_dir(&format!("{long}.csv")));
    }
}
