//! Lets this crate's test binaries find libtorch at run time: torch-sys reports where it
//! found libtorch, and an rpath to that folder is added, so LD_LIBRARY_PATH is not needed.
//! libtorch_cuda is linked even if no symbol of it is used, so CUDA is seen on GPU machines.
//!
//! Also compiles `src/cuda/shim.cpp` (peak GPU memory from libtorch's allocator, the
//! deterministic-algorithms switch) against
//! libtorch's headers; it needs no CUDA headers and builds against a CPU-only libtorch too.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/cuda/shim.cpp");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    let lib = PathBuf::from(lib);
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    let include = lib
        .parent()
        .expect("libtorch lib folder has a parent")
        .join("include");
    cc::Build::new()
        .cpp(true)
        .flag("-std=c++17")
        .flag_if_supported("-w")
        .include(&include)
        .file("src/cuda/shim.cpp")
        .compile("conveyor_torch_shim");
    println!("cargo:rustc-link-lib=dylib=c10");
}
