//! Lets the conveyor binary find libtorch at run time without LD_LIBRARY_PATH: torch-sys
//! reports where it found libtorch and an rpath to that folder is written into the binary.
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
