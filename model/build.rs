//! Lets this crate's test binaries find libtorch at run time: torch-sys reports where it
//! found libtorch, and an rpath to that folder is added, so LD_LIBRARY_PATH is not needed.
//! libtorch_cuda is linked even if no symbol of it is used, so CUDA is seen on GPU machines.

fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
            println!("cargo:rustc-link-arg=-ltorch_cuda");
            println!("cargo:rustc-link-arg=-Wl,--as-needed");
        }
    }
}
