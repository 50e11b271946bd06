//! Lets the `conveyor-torch` binary find libtorch at run time without LD_LIBRARY_PATH:
//! torch-sys reports where it found libtorch and an rpath to that folder is written into the
//! binary. libtorch_cuda is linked even if no symbol of it is used, so CUDA is seen on GPU
//! machines. The `conveyor` binary does not link libtorch at all. Test binaries get the rpath
//! too (one reads checkpoints with tch).

fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        let arg = |a: &str| println!("cargo:rustc-link-arg-bin=conveyor-torch={a}");
        arg(&format!("-Wl,-rpath,{lib}"));
        // tests/distributed.rs reads checkpoints with tch.
        println!("cargo:rustc-link-arg-tests=-Wl,-rpath,{lib}");
        if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
            arg("-Wl,--no-as-needed");
            arg("-ltorch_cuda");
            arg("-Wl,--as-needed");
        }
    }
}
