//! Filters, in both forms (query-string text and JSON), and their evaluation over
//! metadata. A single term negated with `!` matches exactly where the term does not.

use serde_json::{json, Value};
use server::filter;

fn documents() -> &'static [Value] {
    static DOCS: std::sync::OnceLock<Vec<Value>> = std::sync::OnceLock::new();
    DOCS.get_or_init(|| {
        vec![
            json!({"label": "shoe", "year": 2021, "tags": ["a", "b"], "size": "3", "nested": {"x": {"y": true}}, "n": null}),
            json!({}),
            json!({"label": ["shoe", "boot"], "year": "2020", "size": 3.5, "tags": []}),
            json!({"a.b": 1, "a": {"b": 2}, "label": 1e300, "year": -0.0}),
            json!({"label": {"deep": [[1, 2], {"k": "v"}]}, "year": true, "size": "NaN"}),
        ]
    })
}

/// The `filter` target.
pub const TARGET: crate::Target = crate::Target {
    name: "filter",
    about: "filters, query-string and JSON forms, evaluated over metadata",
    seeds,
    dictionary,
    run,
};

fn seeds() -> Vec<Vec<u8>> {
    super::texts(&[
        "label:shoe",
        "label:shoe|boot,year>2020,size<=3.5,tags?",
        "!label:shoe",
        "nested.x.y:true",
        "year>=2020,year<2022,!n?",
        r#"{"must": [{"key": "label", "match": "shoe"}, {"key": "year", "range": {"gt": 2020, "lte": 2021}}]}"#,
        r#"{"should": [{"key": "tags", "match": {"any": ["a", 3, false]}}, {"must_not": [{"key": "a.b", "exists": true}]}]}"#,
    ])
}

fn dictionary() -> Vec<&'static [u8]> {
    let brackets: &[&[u8]] = &[b"..", b"{", b"}", b"[", b"]"];
    let rest: &[&[u8]] =
        &[b"\"gte\"", b"\"lt\"", b"\"exists\"", b"label", b"year", b"tags", b"nested.x.y", b"1e308", b"-inf"];
    [super::FILTER_OPERATORS, brackets, super::FILTER_FIELDS, rest].concat()
}

fn run(input: &[u8]) -> bool {
    let text = String::from_utf8_lossy(input);
    let mut accepted = false;
    if let Ok(f) = filter::Filter::parse(&text) {
        accepted = true;
        for d in documents() {
            let hit = f.matches(d);
            let t = text.trim();
            let single = !t.starts_with('{') && !t.contains(',') && !t.starts_with('!');
            if single && !t.is_empty() {
                if let Ok(negated) = filter::Filter::parse(&format!("!{text}")) {
                    assert_eq!(negated.matches(d), !hit, "`!{text}` is not the negation of `{text}` on {d}");
                }
            }
        }
    }
    if let Ok(v) = serde_json::from_slice::<Value>(input) {
        if let Ok(f) = filter::Filter::from_value(&v) {
            accepted = true;
            for d in documents() {
                let _ = f.matches(d);
            }
        }
    }
    accepted
}
