// torch-sys sets no rpath: add libtorch's lib folder so the tests run with nothing
// exported by hand (LIBTORCH comes from .cargo/config.toml: deps/libtorch).
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Some(lt) = std::env::var_os("LIBTORCH") {
        let lib = std::path::Path::new(&lt).join("lib");
        let lib = lib.canonicalize().unwrap_or(lib);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
}
