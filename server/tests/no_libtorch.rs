//! The server never links libtorch: it needs only ONNX Runtime and the exported model.
//! (Built in one cargo invocation with the trainer, feature unification would compile
//! `models` with `tch` into it; scripts/test.sh and the Dockerfile build it on its own.)

#[test]
fn server_binary_does_not_link_libtorch() {
    let bin = std::fs::read(env!("CARGO_BIN_EXE_server")).expect("the server binary");
    for lib in [&b"libtorch_cpu.so"[..], b"libc10.so"] {
        assert!(
            !bin.windows(lib.len()).any(|w| w == lib),
            "the server binary references {}: build it alone (`cargo build -p server`), not together with the trainer",
            String::from_utf8_lossy(lib)
        );
    }
}
