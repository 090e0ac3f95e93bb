//! Content hashes, computed one way everywhere: SHA-256 in lowercase hex.

use sha2::{Digest, Sha256};

/// SHA-256 of `bytes`, as 64 lowercase hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// SHA-256 of everything `reader` yields, as 64 lowercase hex digits.
pub fn sha256_hex_reader(reader: &mut impl std::io::Read) -> std::io::Result<String> {
    let mut h = Sha256::new();
    std::io::copy(reader, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(sha256_hex_reader(&mut &b"abc"[..]).unwrap(), sha256_hex(b"abc"));
    }
}
