// torch-sys sets no rpath: add libtorch's lib folder so the binary and tests run with
// nothing exported by hand (LIBTORCH comes from .cargo/config.toml: deps/libtorch).
// Also records the git commit for the manifest's provenance.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Some(lt) = std::env::var_os("LIBTORCH") {
        let lib = std::path::Path::new(&lt).join("lib");
        let lib = lib.canonicalize().unwrap_or(lib);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }

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
