//! The mutator: each input is a seed changed by one to eight random edits.

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Numbers and texts that often sit on a boundary.
const INTERESTING: &[&[u8]] = &[
    b"0",
    b"-1",
    b"1",
    b"255",
    b"256",
    b"65535",
    b"65536",
    b"2147483647",
    b"4294967296",
    b"9223372036854775807",
    b"18446744073709551616",
    b"1e309",
    b"-1e309",
    b"1e-400",
    b"0.0",
    b"-0",
    b"NaN",
    b"null",
    b"true",
    b"\"\"",
    b"[]",
    b"{}",
    b"\xff\xfe",
    b"\xc3\x28",
    b"\x00",
];
const INTERESTING_BYTES: &[u8] = &[0, 1, 0x7f, 0x80, 0xff, 0xfe, b'0', b'9', b'"', b'\\', b'{', b'[', b',', b':'];

/// Longest input the mutator makes.
pub const MAX_LEN: usize = 64 * 1024;

/// Makes inputs from seeds.
pub struct Mutator {
    seeds: Vec<Vec<u8>>,
    dictionary: Vec<&'static [u8]>,
    rng: ChaCha8Rng,
}

impl Mutator {
    pub fn new(seeds: Vec<Vec<u8>>, dictionary: Vec<&'static [u8]>, rng: ChaCha8Rng) -> Self {
        assert!(!seeds.is_empty(), "a target needs at least one seed");
        Self { seeds, dictionary, rng }
    }

    /// Writes the next input into `out`.
    pub fn next_into(&mut self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(self.seeds.choose(&mut self.rng).expect("seeds"));
        let edits = 1 << self.rng.gen_range(0..4);
        for _ in 0..self.rng.gen_range(1..=edits) {
            self.edit(out);
        }
        out.truncate(MAX_LEN);
    }

    fn token(&mut self) -> &'static [u8] {
        if !self.dictionary.is_empty() && self.rng.gen_bool(0.6) {
            self.dictionary.choose(&mut self.rng).copied().unwrap_or(b"")
        } else {
            INTERESTING.choose(&mut self.rng).copied().unwrap_or(b"")
        }
    }

    fn edit(&mut self, b: &mut Vec<u8>) {
        let len = b.len();
        let pos = |rng: &mut ChaCha8Rng| if len == 0 { 0 } else { rng.gen_range(0..=len) };
        match self.rng.gen_range(0..11) {
            // Flip a bit.
            0 if len > 0 => {
                let i = self.rng.gen_range(0..len);
                b[i] ^= 1 << self.rng.gen_range(0..8);
            }
            // An interesting or random byte.
            1 if len > 0 => {
                let i = self.rng.gen_range(0..len);
                b[i] = if self.rng.gen_bool(0.5) {
                    *INTERESTING_BYTES.choose(&mut self.rng).unwrap_or(&0)
                } else {
                    self.rng.gen()
                };
            }
            // Insert a token.
            2 | 3 => {
                let at = pos(&mut self.rng);
                let t = self.token();
                b.splice(at..at, t.iter().copied());
            }
            // Overwrite with a token.
            4 if len > 0 => {
                let at = self.rng.gen_range(0..len);
                let t = self.token();
                let end = (at + t.len()).min(len);
                b.splice(at..end, t.iter().copied());
            }
            // Delete a range.
            5 if len > 0 => {
                let at = self.rng.gen_range(0..len);
                let n = self.rng.gen_range(1..=(len - at).min(64));
                b.drain(at..at + n);
            }
            // Repeat a range (deep nesting, long lists).
            6 if len > 0 => {
                let at = self.rng.gen_range(0..len);
                let n = self.rng.gen_range(1..=(len - at).min(16));
                let times = 1 << self.rng.gen_range(0..8);
                let piece: Vec<u8> = b[at..at + n].to_vec();
                let insert: Vec<u8> = piece.iter().copied().cycle().take(n * times).collect();
                b.splice(at..at, insert);
            }
            // Random bytes.
            7 => {
                let at = pos(&mut self.rng);
                let n = self.rng.gen_range(1..=16);
                let bytes: Vec<u8> = (0..n).map(|_| self.rng.gen()).collect();
                b.splice(at..at, bytes);
            }
            // Splice the tail of another seed.
            8 => {
                let other = self.seeds.choose(&mut self.rng).expect("seeds").clone();
                let at = pos(&mut self.rng);
                let from = if other.is_empty() { 0 } else { self.rng.gen_range(0..other.len()) };
                b.truncate(at);
                b.extend_from_slice(&other[from..]);
            }
            // Truncate.
            9 if len > 0 => {
                let at = self.rng.gen_range(0..len);
                b.truncate(at);
            }
            // Add or subtract a little from a byte (lengths, counts in binary headers).
            _ if len > 0 => {
                let i = self.rng.gen_range(0..len);
                let d: i8 = self.rng.gen_range(-16..=16);
                b[i] = b[i].wrapping_add(d as u8);
            }
            _ => b.push(self.rng.gen()),
        }
    }
}
