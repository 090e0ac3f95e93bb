//! The server never links libtorch: it needs only ONNX Runtime and the exported model.
//! It depends on `contract` and not on `models` (a dev-dependency for test models only),
//! so building it in one cargo invocation with the trainer cannot pull libtorch in.

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
