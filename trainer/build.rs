// torch-sys sets no rpath: add libtorch's lib folder so the binary and tests run with
// nothing exported by hand (LIBTORCH comes from .cargo/config.toml: deps/libtorch).
// Also records the git commit for the manifest's provenance.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Some(lt) = std::env::var_os("LIBTORCH") {
        let lib = std::path::Path::new(&lt).join("lib");
        let lib = lib.canonicalize().unwrap_or(lib);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
        // With `--features cuda`, keep libtorch_cuda linked although no symbol of it is
        // referenced directly: it registers the CUDA backend when loaded.
        if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
            println!("cargo:rustc-link-arg=-L{}", lib.display());
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
            println!("cargo:rustc-link-arg=-ltorch_cuda");
            println!("cargo:rustc-link-arg=-Wl,--as-needed");
        }
    }
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_CUDA");
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(c) = commit {
        println!("cargo:rustc-env=STML_GIT_COMMIT={c}");
    }
    println!("cargo:rerun-if-changed=../.git/HEAD");
}
