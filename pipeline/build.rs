//! Compiles conveyor's bridge to the SentencePiece trainer (`src/vocab/shim.cpp`) against the
//! SentencePiece sources that the `sentencepiece-sys` crate vendors, and links the trainer
//! library that crate's CMake build produces (`libsentencepiece_train.a`, found on the link
//! search path that crate declares).
//!
//! The headers are looked up in the Cargo registry copy of `sentencepiece-sys` (the version
//! is pinned in the workspace manifest); set `CONVEYOR_SPM_SOURCE` to the `source/src`
//! folder of SentencePiece 0.2.1 to use another copy (vendored builds).

use std::path::PathBuf;

const SPM_SYS: &str = "sentencepiece-sys-0.14.0";

fn headers() -> PathBuf {
    if let Some(dir) = std::env::var_os("CONVEYOR_SPM_SOURCE") {
        return PathBuf::from(dir);
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .expect("neither CARGO_HOME nor HOME is set");
    let registry = cargo_home.join("registry").join("src");
    let found = std::fs::read_dir(&registry)
        .into_iter()
        .flatten()
        .flatten()
        .map(|index| index.path().join(SPM_SYS).join("source").join("src"))
        .find(|p| p.join("sentencepiece_trainer.h").exists());
    found.unwrap_or_else(|| {
        panic!(
            "cannot find the SentencePiece sources of {SPM_SYS} under {}; set CONVEYOR_SPM_SOURCE to its source/src folder",
            registry.display()
        )
    })
}

fn main() {
    println!("cargo:rerun-if-changed=src/vocab/shim.cpp");
    println!("cargo:rerun-if-env-changed=CONVEYOR_SPM_SOURCE");
    cc::Build::new()
        .cpp(true)
        .flag("-std=c++17")
        .include(headers())
        .file("src/vocab/shim.cpp")
        .compile("conveyor_spm_train_shim");
    // After the shim on the link line: it needs the trainer, which needs libsentencepiece
    // (linked by sentencepiece-sys, later on the line).
    println!("cargo:rustc-link-lib=static:-bundle=sentencepiece_train");
}
