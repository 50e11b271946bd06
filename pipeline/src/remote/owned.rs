//! Which objects under an output URL are conveyor's: the manifest, the files it lists (by
//! conveyor's names and the sizes it gives them) and the workers' part files by their exact
//! names. Only those are deleted by a mirroring upload or fetched by a dataset download;
//! anything else under the prefix is the user's.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use super::Location;
use crate::error::Error;

/// What a manifest says of a file it lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) sha256: Option<String>,
    pub(super) bytes: Option<u64>,
}

/// What a mirroring upload may delete under an output URL: the manifest, the output files
/// the URL's manifest listed before the upload under conveyor's names and sizes (an edited
/// manifest naming a user's object does not make it conveyor's), and workers' part files by
/// their names; other objects are the user's and are never deleted (the rules `--overwrite`
/// keeps in a local folder).
pub(super) fn conveyor_output(rel: &str, size: u64, listed: &BTreeMap<String, Entry>) -> bool {
    let listed_here = listed.get(rel).is_some_and(|e| {
        crate::job::outdir::is_output_file(rel) && e.bytes.is_none_or(|b| b == size)
    });
    rel == "manifest.json" || is_part_file(rel) || listed_here
}

/// A file of a split job's `parts/` folder, by the names its workers give them:
/// `parts/worker-IIIII-of-NNNNN/` holding `part.json`, `shard-IIIII.parquet` or an output
/// file, and `parts/dedup-worker-IIIII-of-NNNNN.bin`.
pub(super) fn is_part_file(rel: &str) -> bool {
    use crate::job::outdir::{is_output_file, is_worker_tag};
    let Some(rest) = rel.strip_prefix("parts/") else {
        return false;
    };
    match rest.split_once('/') {
        None => rest
            .strip_prefix("dedup-")
            .and_then(|n| n.strip_suffix(".bin"))
            .is_some_and(is_worker_tag),
        Some((tag, name)) => {
            let shard = name
                .strip_prefix("shard-")
                .and_then(|n| n.strip_suffix(".parquet"))
                .is_some_and(|n| n.len() >= 5 && n.bytes().all(|b| b.is_ascii_digit()));
            is_worker_tag(tag) && (name == "part.json" || shard || is_output_file(name))
        }
    }
}

/// The files the manifest at `loc` lists, with what it says of each; None when it cannot be
/// read.
pub(super) fn listed_remote(loc: &Location) -> Option<BTreeMap<String, Entry>> {
    let mut text = Vec::new();
    let read = super::read::RemoteReader::open(&loc.join("manifest.json").url).and_then(|mut r| {
        r.read_to_end(&mut text).map_err(|e| Error::Remote {
            url: loc.url.clone(),
            message: e.to_string(),
        })
    });
    read.ok()?;
    let v = serde_json::from_slice::<serde_json::Value>(&text).ok()?;
    Some(listed(&v, Path::new(&loc.url)))
}

/// The files a manifest lists (token and example shards, or a clean job's outputs) with
/// their sha256 and size where it gives them; names that would leave `base` are left out.
pub(super) fn listed(v: &serde_json::Value, base: &Path) -> BTreeMap<String, Entry> {
    let (list, key) = crate::job::outdir::listed_entries(v);
    list.iter()
        .filter_map(|e| {
            let entry = Entry {
                sha256: e["sha256"].as_str().map(str::to_string),
                bytes: e["bytes"].as_u64(),
            };
            Some((e[key].as_str()?, entry))
        })
        .filter(|(name, _)| crate::contain::check_name(name, base).is_ok())
        .map(|(name, entry)| (name.to_string(), entry))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_outputs_are_mirrored_away() {
        let entry = |bytes| Entry {
            sha256: None,
            bytes,
        };
        let listed: BTreeMap<String, Entry> = [
            ("train-00003-of-00010.parquet".to_string(), entry(Some(100))),
            ("train-00005-of-00010.parquet".to_string(), entry(None)),
            // An edited manifest naming a user's object.
            ("README-mine.txt".to_string(), entry(None)),
        ]
        .into();
        let ours = |rel: &str| conveyor_output(rel, 100, &listed);
        assert!(ours("manifest.json"));
        assert!(ours("train-00003-of-00010.parquet"));
        assert!(ours("train-00005-of-00010.parquet"));
        assert!(ours("parts/worker-00000-of-00002/part.json"));
        assert!(ours("parts/worker-00000-of-00002/shard-00003.parquet"));
        assert!(ours(
            "parts/worker-00000-of-00002/c4-clean.00000-of-00002.json.gz"
        ));
        assert!(ours("parts/dedup-worker-00001-of-00002.bin"));
        // Listed, but another size than the manifest gives it: not the file it listed.
        assert!(!conveyor_output(
            "train-00003-of-00010.parquet",
            99,
            &listed
        ));
        // Looks like conveyor's, but the old manifest did not list it.
        assert!(!ours("train-00004-of-00010.parquet"));
        assert!(!ours("c4-clean.00000-of-00002.json.gz"));
        assert!(!ours("README.md"));
        assert!(!ours("README-mine.txt"));
        assert!(!ours("parts/notes.txt"));
        assert!(!ours("parts/worker-notes.txt"));
        assert!(!ours("parts/worker-00000-of-00002-backup/important.bin"));
        assert!(!ours("parts/worker-00000-of-00002/important.bin"));
        assert!(!ours("parts/worker-00000-of-00002/sub/part.json"));
        assert!(!ours("raw/c4-train.00000-of-01024.json.gz"));
    }
}
