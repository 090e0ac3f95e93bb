//! The fuzzing targets, one module each.

mod filter;
mod image;
mod json;
mod manifest;
mod multipart;
mod query;

use crate::Target;

/// Every target, in the order `fuzz` runs them.
pub fn all() -> [&'static Target; 6] {
    [&image::TARGET, &query::TARGET, &json::TARGET, &multipart::TARGET, &filter::TARGET, &manifest::TARGET]
}

/// The target named `name`.
pub fn by_name(name: &str) -> Option<&'static Target> {
    all().into_iter().find(|t| t.name == name)
}

/// The tail bytes of an input that choose its structured parameters (read with
/// `arbitrary`), and the rest.
fn split_params(input: &[u8], n: usize) -> (&[u8], arbitrary::Unstructured<'_>) {
    let at = input.len().saturating_sub(n);
    (&input[..at], arbitrary::Unstructured::new(&input[at..]))
}

/// Text seeds as bytes.
fn texts(seeds: &[&str]) -> Vec<Vec<u8>> {
    seeds.iter().map(|s| s.as_bytes().to_vec()).collect()
}

/// The filter language's query-string operators (the `filter` and `query` targets').
const FILTER_OPERATORS: &[&[u8]] = &[b":", b">", b">=", b"<", b"<=", b"?", b"!", b"|", b",", b"."];

/// The filter language's JSON field names (the `filter` and `json` targets').
const FILTER_FIELDS: &[&[u8]] =
    &[b"\"must\"", b"\"should\"", b"\"must_not\"", b"\"key\"", b"\"match\"", b"\"any\"", b"\"range\""];
