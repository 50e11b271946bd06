//! Helpers shared by the end-to-end tests: paths to the repository and ../shared/data,
//! per-test temporary paths, and running the `conveyor` binary.

#![allow(dead_code)]

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

/// A fresh temporary path for this test binary and process (removed, not created).
pub fn tmp_path(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "conveyor-{}-{name}-{}",
        env!("CARGO_CRATE_NAME"),
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

/// Runs `conveyor ARGS`.
pub fn conveyor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .args(args)
        .output()
        .expect("run conveyor")
}

/// Runs `conveyor ARGS`, which must succeed; its standard output.
pub fn ok(args: &[&str]) -> String {
    let o = conveyor(args);
    assert!(
        o.status.success(),
        "conveyor {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
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
