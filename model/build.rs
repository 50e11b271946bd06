//! Lets this crate's test binaries find libtorch at run time: torch-sys reports where it
//! found libtorch, and an rpath to that folder is added, so LD_LIBRARY_PATH is not needed.
//! libtorch_cuda is linked even if no symbol of it is used, so CUDA is seen on GPU machines.
//!
//! Also compiles conveyor's C++ bridges against libtorch's headers:
//! - `src/cuda/shim.cpp` (peak GPU memory, the deterministic-algorithms switch, dropping a
//!   gradient) and `src/optim/foreach.cpp` (the multi-tensor optimiser steps); they need no
//!   CUDA headers and build against a CPU-only libtorch too.
//! - `src/dist/c10d.cpp` (TCPStore, Gloo process groups); the wheel lacks Gloo's headers, so
//!   `src/dist/gloo_decls` declares the few Gloo names ProcessGroupGloo.hpp mentions.
//! - `src/dist/nccl.cpp` (NCCL process groups) when the wheel's CUDA and NCCL headers are
//!   there (`nvidia/cu13`, `nvidia/nccl` beside `torch/`) and it compiles; otherwise
//!   `src/dist/nccl_missing.cpp`, whose NCCL constructor reports what is missing.
//! - `src/cuda/graph.cpp` (CUDA graphs) likewise with the CUDA headers, else
//!   `src/cuda/graph_missing.cpp`.

use std::path::{Path, PathBuf};

fn main() {
    for f in [
        "src/cuda/shim.cpp",
        "src/optim/foreach.cpp",
        "src/dist/c10d.cpp",
        "src/dist/nccl.cpp",
        "src/dist/nccl_missing.cpp",
        "src/cuda/graph.cpp",
        "src/cuda/graph_missing.cpp",
        "src/bridge.h",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    let lib = PathBuf::from(lib);
    let cuda_lib = lib.join("libtorch_cuda.so").exists();
    println!("cargo:rustc-env=CONVEYOR_LIBTORCH_CUDA={cuda_lib}");
    if cuda_lib {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    let torch = lib.parent().expect("libtorch lib folder has a parent");
    let include = torch.join("include");
    let base = || {
        let mut b = cc::Build::new();
        b.cpp(true)
            .flag("-std=c++17")
            .flag_if_supported("-w")
            .include(&include)
            .include(include.join("torch/csrc/api/include"));
        b
    };
    base()
        .file("src/cuda/shim.cpp")
        .file("src/optim/foreach.cpp")
        .compile("conveyor_torch_shim");
    base()
        .include("src/dist/gloo_decls")
        .file("src/dist/c10d.cpp")
        .compile("conveyor_c10d");
    for (lib, file, missing, nccl) in [
        (
            "conveyor_nccl",
            "src/dist/nccl.cpp",
            "src/dist/nccl_missing.cpp",
            true,
        ),
        (
            "conveyor_graph",
            "src/cuda/graph.cpp",
            "src/cuda/graph_missing.cpp",
            false,
        ),
    ] {
        let built = cuda_lib && build_with_cuda(&base, torch, lib, file, nccl);
        if !built {
            base().file(missing).compile(lib);
        }
        // `conveyor env` says which was built: a device run checks it before spending time.
        let name = lib.trim_start_matches("conveyor_").to_uppercase();
        let what = if built { "built" } else { "stand-in" };
        println!("cargo:rustc-env=CONVEYOR_{name}_BRIDGE={what}");
    }
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}

/// Compiles a bridge that needs the wheel's CUDA headers (and NCCL's with `nccl`) into
/// `lib`, if they are there and it compiles.
fn build_with_cuda(
    base: &dyn Fn() -> cc::Build,
    torch: &Path,
    lib: &str,
    file: &str,
    nccl: bool,
) -> bool {
    let nvidia = torch.parent().map(|p| p.join("nvidia"));
    let Some(nvidia) = nvidia else { return false };
    let cuda = nvidia.join("cu13/include");
    let nccl_include = nvidia.join("nccl/include");
    let present = ["cuda_runtime_api.h", "crt/host_config.h", "cccl/nv/target"]
        .iter()
        .all(|h| cuda.join(h).exists())
        && (!nccl || nccl_include.join("nccl.h").exists());
    if !present {
        println!("cargo:warning=no CUDA headers beside libtorch for {file}: it is left out");
        return false;
    }
    let mut b = base();
    b.include(&cuda).include(cuda.join("cccl")).file(file);
    if nccl {
        b.include(&nccl_include);
    }
    match b.try_compile(lib) {
        Ok(()) => {
            println!("cargo:rustc-link-lib=dylib=torch_cuda");
            println!("cargo:rustc-link-lib=dylib=c10_cuda");
            true
        }
        Err(e) => {
            println!("cargo:warning={file} did not compile ({e}); it is left out");
            false
        }
    }
}
