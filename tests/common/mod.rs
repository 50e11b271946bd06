//! Helpers shared by the end-to-end tests: paths to the repository and ../shared/data,
//! per-test temporary paths, and running the `conveyor` binary.

#![allow(dead_code)]

pub mod http;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A path under ../shared/data.
pub fn shared(rel: &str) -> PathBuf {
    root().join("../shared/data").join(rel)
}

/// Removes what earlier runs of this test binary left in the temporary folder (folders named
/// `conveyor-CRATE-...-PID` whose process is gone), once per process, so that repeated test
/// runs on one machine do not fill its disk.
fn sweep_old_runs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prefix = format!("conveyor-{}-", env!("CARGO_CRATE_NAME"));
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(&prefix) else {
                continue;
            };
            let pid = rest.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
            let gone = pid.is_some_and(|p| {
                p != std::process::id() && !Path::new(&format!("/proc/{p}")).exists()
            });
            if gone {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    });
}

/// The module of the running test (libtest names each test's thread `MODULE::TEST`), so that
/// two modules asking for the same temporary name get different paths.
fn test_module() -> String {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("main");
    name.split("::").next().unwrap_or(name).to_string()
}

/// A fresh temporary path for this test module and process (removed, not created).
pub fn tmp_path(name: &str) -> PathBuf {
    sweep_old_runs();
    let d = std::env::temp_dir().join(format!(
        "conveyor-{}-{}-{name}-{}",
        env!("CARGO_CRATE_NAME"),
        test_module(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A fresh, empty temporary folder.
pub fn tmp_dir(name: &str) -> PathBuf {
    let d = tmp_path(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The `conveyor` command as the tests run it. libtorch gets one intra-op thread: the tests
/// run two at a time (one per core here), and two libtorch processes that each start a
/// thread per core slow each other down several times over (their OpenMP threads spin while
/// they wait), which made the suite five times slower. What the tests check does not depend
/// on it.
pub fn conveyor_cmd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_conveyor"));
    c.env("OMP_NUM_THREADS", "1");
    c
}

/// Runs `conveyor ARGS`.
pub fn conveyor(args: &[&str]) -> Output {
    conveyor_cmd().args(args).output().expect("run conveyor")
}

/// The folder holding transformers 5 (`conveyor_model::hf::transformers5_dir`), to put
/// first on PYTHONPATH.
pub fn transformers5_dir() -> PathBuf {
    conveyor_model::hf::transformers5_dir().expect("transformers 5: run scripts/setup.sh")
}

/// Runs `conveyor ARGS`, which must succeed; its standard output.
pub fn ok(args: &[&str]) -> String {
    ok_with(conveyor_cmd(), args)
}

/// [`ok`] with a command set up by the caller (its environment, say).
pub fn ok_with(mut c: Command, args: &[&str]) -> String {
    let o = c.args(args).output().expect("run conveyor");
    assert!(
        o.status.success(),
        "conveyor {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Runs `conveyor ARGS` again and again, killing each run as soon as `ready(attempt)` says
/// it got further than the run before (checked every 5 ms), until a run finishes (which must
/// succeed) or `attempts` runs were made; `after_kill` runs after each kill. Returns how many
/// runs were killed.
pub fn run_with_kills(
    args: &[String],
    attempts: usize,
    ready: impl Fn(usize) -> bool,
    mut after_kill: impl FnMut(),
) -> usize {
    let mut kills = 0;
    for attempt in 0..attempts {
        let mut child = conveyor_cmd()
            .args(args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let finished = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if ready(attempt) {
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        match finished {
            Some(status) => {
                assert!(status.success());
                break;
            }
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                after_kill();
            }
        }
    }
    kills
}

/// The files directly in `dir` with their bytes, by name (to compare two outputs).
pub fn files_in(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// The files directly in `dir` but its manifest (which names the inputs), to compare the
/// outputs of one job read from different places.
pub fn files_but_manifest(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut f = files_in(dir);
    f.retain(|(n, _)| n != "manifest.json");
    f
}

/// Shards (name, bytes) and the manifest's checksums and totals.
pub type Dataset = (Vec<(String, Vec<u8>)>, serde_json::Value);

/// A dataset's shards (name and bytes, in manifest order) and its manifest's per-shard
/// checksums and totals: what two runs of one job from different places must share.
pub fn dataset_summary(dir: &Path) -> Dataset {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let shards = m["shards"].as_array().unwrap();
    let files = shards
        .iter()
        .map(|s| {
            let f = s["file"].as_str().unwrap().to_string();
            let bytes = std::fs::read(dir.join(&f)).unwrap();
            (f, bytes)
        })
        .collect();
    let sums: Vec<_> = shards.iter().map(|s| s["sha256"].clone()).collect();
    let totals = m
        .get("totals")
        .cloned()
        .unwrap_or_else(|| m["tokens"].clone());
    (files, serde_json::json!({"sums": sums, "totals": totals}))
}

/// Ingests the C4 sample (../shared/data) with the T5 vocabulary into `out`, cutting shards
/// at `shard_tokens` tokens.
pub fn ingest_c4_sample(out: &Path, shard_tokens: u64) {
    ok(&[
        "ingest",
        shared("c4/c4-train.00000-of-01024.first600.json.gz")
            .to_str()
            .unwrap(),
        "--vocab",
        shared("spiece/t5-spiece.model").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--shard-tokens",
        &shard_tokens.to_string(),
        "-q",
    ]);
}

/// The C4 sample ingested once per test binary (shards of 50,000 tokens), shared by every
/// module.
pub fn c4_tokens() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!(
            "conveyor-{}-shared-c4-tokens-{}",
            env!("CARGO_CRATE_NAME"),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        ingest_c4_sample(&d, 50000);
        d
    })
}
