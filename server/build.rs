// The server links no libtorch, but its integration tests build their test models with
// the `models` crate (a dev-dependency), and in one workspace invocation cargo builds
// that crate once, with the trainer's `tch` feature: those test binaries then load
// libtorch. torch-sys sets no rpath, so add libtorch's lib folder for them (tests only:
// the `server` binary gets nothing). LIBTORCH comes from .cargo/config.toml.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Some(lt) = std::env::var_os("LIBTORCH") {
        let lib = std::path::Path::new(&lt).join("lib");
        let lib = lib.canonicalize().unwrap_or(lib);
        println!("cargo:rustc-link-arg-tests=-Wl,-rpath,{}", lib.display());
    }
}
