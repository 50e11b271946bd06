//! The sandbox every hostile case runs in, and the helpers that build and check the cases.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use crate::common::{c4_tokens, conveyor, shared, tmp_dir};

/// A temporary tree: `work/` where the commands run, `victim/` with files nothing may touch.
pub(crate) struct Sandbox {
    pub(crate) root: PathBuf,
    pub(crate) work: PathBuf,
    pub(crate) victim: PathBuf,
    pub(crate) before: BTreeMap<PathBuf, u64>,
}

impl Sandbox {
    pub(crate) fn new(name: &str) -> Sandbox {
        let root = tmp_dir(name);
        let (work, victim) = (root.join("work"), root.join("victim"));
        std::fs::create_dir_all(&work).unwrap();
        std::fs::create_dir_all(&victim).unwrap();
        std::fs::write(victim.join("precious.txt"), "do not touch\n").unwrap();
        // A real shard, so that a reader led here would find something it can read.
        let shard = first_shard(c4_tokens());
        std::fs::copy(&shard, victim.join("x.parquet")).unwrap();
        let mut s = Sandbox {
            before: BTreeMap::new(),
            root,
            work,
            victim,
        };
        s.before = s.outside();
        s
    }

    /// Every file under the sandbox but `work/`, with a hash of its bytes.
    pub(crate) fn outside(&self) -> BTreeMap<PathBuf, u64> {
        let mut out = BTreeMap::new();
        hash_tree(&self.root, &self.work, &mut out);
        out
    }

    pub(crate) fn assert_outside_unchanged(&self) {
        assert_eq!(self.outside(), self.before, "files outside work/ changed");
    }

    /// A copy of the C4 token dataset in `work/NAME`.
    pub(crate) fn tokens(&self, name: &str) -> PathBuf {
        let d = self.work.join(name);
        copy_dir(c4_tokens(), &d);
        d
    }
}

pub(crate) fn hash_tree(dir: &Path, skip: &Path, out: &mut BTreeMap<PathBuf, u64>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p == skip {
            continue;
        }
        if p.is_dir() {
            hash_tree(&p, skip, out);
        } else {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::fs::read(&p).unwrap().hash(&mut h);
            out.insert(p, h.finish());
        }
    }
}

/// A tree's files and their bytes (to prove a folder was left as it was).
/// Every file under `dir` by its hash, but run locks: a refused run holds its folder's lock
/// for a moment and writes its pid into it (the lock file is conveyor's, not the run's).
pub(crate) fn snapshot(dir: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    hash_tree(dir, Path::new("/nonexistent"), &mut out);
    out.retain(|p, _| {
        !p.file_name()
            .is_some_and(|n| conveyor_pipeline::run_lock::is_run_lock(&n.to_string_lossy()))
    });
    out
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

pub(crate) fn first_shard(dir: &Path) -> PathBuf {
    let m = read_json(&dir.join("manifest.json"));
    dir.join(m["shards"][0]["file"].as_str().unwrap())
}

pub(crate) fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

pub(crate) fn edit_json(p: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v = read_json(p);
    f(&mut v);
    std::fs::write(p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// Runs `conveyor ARGS`, which must fail with a message holding every one of `needles`
/// (and no panic); returns the message.
pub(crate) fn fails(args: &[&str], needles: &[&str]) -> String {
    let o = conveyor(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "conveyor {args:?} succeeded\n{err}");
    for n in needles {
        assert!(err.contains(n), "conveyor {args:?}: no {n:?} in\n{err}");
    }
    assert!(
        !err.contains("panicked"),
        "conveyor {args:?} panicked\n{err}"
    );
    err
}

pub(crate) fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub(crate) fn vocab() -> String {
    shared("spiece/t5-spiece.model")
        .to_str()
        .unwrap()
        .to_string()
}

/// `conveyor ingest INPUT --vocab T5 --out OUT EXTRA...`.
pub(crate) fn ingest_args(input: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        "ingest".to_string(),
        s(input).into(),
        "--vocab".into(),
        vocab(),
    ];
    v.extend(["--out".to_string(), s(out).into()]);
    v.extend(extra.iter().map(|e| e.to_string()));
    v
}

/// Borrowed arguments, for `ok` and `fails`.
pub(crate) fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A tiny one-step training run's arguments on `data` into `out`.
pub(crate) fn train_args<'a>(data: &'a str, out: &'a str, steps: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        data,
        "--out",
        out,
        "--arch",
        "lightconv",
        "--preset",
        "tiny",
        "--steps",
        steps,
        "--batch-size",
        "4",
        "--inputs-length",
        "64",
        "--checkpoint-every",
        steps,
        "--device",
        "cpu",
        "-q",
    ]
}

/// Inverts `n` bytes in the middle of a file.
pub(crate) fn flip(p: &Path, n: usize) {
    let mut b = std::fs::read(p).unwrap();
    let mid = b.len() / 2;
    for x in &mut b[mid..mid + n] {
        *x = !*x;
    }
    std::fs::write(p, b).unwrap();
}
