//! The filter language ([`crate::filter`]) as Milvus boolean expressions.
//!
//! Its matching rules are not Milvus's: a condition on an array holds when it holds for any
//! element, and text equals the number or boolean it spells. So each item also stores
//! [`terms`] of its metadata, where those rules become plain membership tests, for every
//! key path (the dotted [`crate::filter::Key`] form):
//! - `k`: the paths present (a value other than null or `[]`);
//! - `s`, `x`, `b`: the string, number and boolean elements at a path;
//! - `n`: the numbers, and the texts that parse as numbers; `t`: the booleans, and the
//!   texts `true` / `false`;
//! - `lo`, `hi`: the least and greatest of `n`.
//!
//! Matches and existence translate exactly. A range translates to `hi > lower bound and
//! lo < upper bound`, exact for one number and a superset for several (some element above
//! the bound and some below is not one element in range). [`translate`] says whether its
//! expression is exact; where it is not, the gallery checks each candidate's metadata with
//! [`Filter::matches`] as well, so results always equal the embedded backends'.

use serde_json::{Map, Value};

use crate::filter::{as_number, Condition, Filter, Key, Range};

/// The JSON field holding [`terms`].
pub const TERMS: &str = "terms";
/// An expression true of every item (ids are never empty).
pub const ALL: &str = r#"id != """#;
/// An expression true of no item.
const NONE: &str = r#"id == """#;

/// A filter as a Milvus expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    /// `None`: every item passes.
    pub expr: Option<String>,
    /// The expression passes exactly the items the filter passes; otherwise it passes a
    /// superset of them.
    pub exact: bool,
}

impl Translated {
    fn all(exact: bool) -> Self {
        Self { expr: None, exact }
    }

    fn some(expr: String, exact: bool) -> Self {
        Self { expr: Some(expr), exact }
    }
}

/// `filter` as an expression over [`TERMS`].
pub fn translate(filter: &Filter) -> Translated {
    let mut parts = Vec::new();
    let mut exact = true;
    for c in &filter.must {
        let t = condition(c);
        exact &= t.exact;
        parts.extend(t.expr);
    }
    if !filter.should.is_empty() {
        let alternatives: Vec<Translated> = filter.should.iter().map(condition).collect();
        exact &= alternatives.iter().all(|t| t.exact);
        // One alternative passing everything makes the whole disjunction do so.
        if alternatives.iter().all(|t| t.expr.is_some()) {
            let ors: Vec<String> = alternatives.into_iter().filter_map(|t| t.expr).collect();
            parts.push(format!("({})", ors.join(" or ")));
        }
    }
    for c in &filter.must_not {
        let t = condition(c);
        match (t.exact, t.expr) {
            // `not` of a superset would drop items that pass: leave it to the metadata check.
            (false, _) => exact = false,
            (true, Some(e)) => parts.push(format!("not ({e})")),
            (true, None) => parts.push(NONE.to_string()),
        }
    }
    match parts.len() {
        0 => Translated::all(exact),
        1 => Translated::some(parts.remove(0), exact),
        _ => Translated::some(format!("({})", parts.join(" and ")), exact),
    }
}

/// Whether Milvus addresses `key` in a JSON path as written: its parser takes path
/// segments verbatim between `["` and `"]` (no unescaping), so a key with quotes,
/// backslashes, brackets or control characters would name another path.
fn addressable(key: &Key) -> bool {
    key.parts().iter().all(|p| !p.chars().any(|c| matches!(c, '"' | '\\' | '[' | ']') || c.is_control()))
}

fn condition(c: &Condition) -> Translated {
    let key = match c {
        Condition::Match { key, .. } | Condition::Range { key, .. } | Condition::Exists { key, .. } => Some(key),
        Condition::Nested(_) => None,
    };
    if key.is_some_and(|k| !addressable(k)) {
        // Every item passes the expression; the metadata check decides.
        return Translated::all(false);
    }
    match c {
        Condition::Match { key, any } => {
            let ors: Vec<String> = any.iter().flat_map(|w| wanted(key, w)).collect();
            if ors.is_empty() {
                Translated::some(NONE.to_string(), true)
            } else {
                Translated::some(format!("({})", ors.join(" or ")), true)
            }
        }
        Condition::Range { key, range } => self::range(key, range),
        Condition::Exists { key, exists } => {
            let present = format!("json_contains({TERMS}[\"k\"], {})", quote(&path(key)));
            Translated::some(if *exists { present } else { format!("not {present}") }, true)
        }
        Condition::Nested(f) => translate(f),
    }
}

/// The tests for one wanted scalar, after `crate::filter`'s `scalar_eq`.
fn wanted(key: &Key, w: &Value) -> Vec<String> {
    let at = |list: &str| format!("{TERMS}[\"{list}\"][{}]", quote(&path(key)));
    let contains = |list: &str, literal: String| format!("json_contains({}, {literal})", at(list));
    match w {
        Value::String(s) => {
            let mut out = vec![contains("s", quote(s))];
            if let Some(n) = s.trim().parse::<f64>().ok().filter(|n| n.is_finite()) {
                out.push(contains("x", number(n)));
            }
            if s == "true" || s == "false" {
                out.push(contains("b", s.clone()));
            }
            out
        }
        Value::Number(n) => n.as_f64().map(|n| contains("n", number(n))).into_iter().collect(),
        Value::Bool(b) => vec![contains("t", b.to_string())],
        // Nothing equals null, an array or an object.
        _ => Vec::new(),
    }
}

fn range(key: &Key, r: &Range) -> Translated {
    let at = |list: &str| format!("{TERMS}[\"{list}\"][{}]", quote(&path(key)));
    let mut parts = Vec::new();
    if let Some(b) = r.gt {
        parts.push(format!("{} > {}", at("hi"), number(b)));
    }
    if let Some(b) = r.gte {
        parts.push(format!("{} >= {}", at("hi"), number(b)));
    }
    if let Some(b) = r.lt {
        parts.push(format!("{} < {}", at("lo"), number(b)));
    }
    if let Some(b) = r.lte {
        parts.push(format!("{} <= {}", at("lo"), number(b)));
    }
    if parts.is_empty() {
        // No bound: any number passes.
        parts.push(format!("json_contains({TERMS}[\"k\"], {})", quote(&path(key))));
        parts.push(format!("{} <= {}", at("lo"), at("hi")));
    }
    let exact = r.gt.iter().chain(&r.gte).count() == 0 || r.lt.iter().chain(&r.lte).count() == 0;
    // A one-sided range is exact: some element above the bound iff the greatest is.
    Translated::some(format!("({})", parts.join(" and ")), exact)
}

fn path(key: &Key) -> String {
    key.parts().join(".")
}

/// A float literal (Milvus compares `2020` and `2020.0` stored in JSON as different).
fn number(x: f64) -> String {
    let text = format!("{x:?}");
    if text.contains(['.', 'e', 'E']) {
        text
    } else {
        format!("{text}.0")
    }
}

/// `field in ["a", "b", ...]`: rows whose `field` is one of `values`.
pub fn one_of<'a>(field: &str, values: impl IntoIterator<Item = &'a str>) -> String {
    let list: Vec<String> = values.into_iter().map(quote).collect();
    format!("{field} in [{}]", list.join(", "))
}

/// A Milvus string literal.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The [`TERMS`] of an item's metadata (see the module documentation).
pub fn terms(metadata: &Value) -> Value {
    let mut t = Terms::default();
    if let Value::Object(fields) = metadata {
        t.walk("", fields);
    }
    let mut out = Map::new();
    out.insert("k".into(), Value::Array(t.present.into_iter().map(Value::String).collect()));
    for (name, lists) in [("s", t.s), ("x", t.x), ("b", t.b), ("n", t.n), ("t", t.t)] {
        out.insert(name.into(), Value::Object(lists.into_iter().map(|(k, v)| (k, Value::Array(v))).collect()));
    }
    for (name, bounds) in [("lo", t.lo), ("hi", t.hi)] {
        out.insert(name.into(), Value::Object(bounds.into_iter().map(|(k, v)| (k, float(v))).collect()));
    }
    Value::Object(out)
}

#[derive(Default)]
struct Terms {
    present: Vec<String>,
    s: Vec<(String, Vec<Value>)>,
    x: Vec<(String, Vec<Value>)>,
    b: Vec<(String, Vec<Value>)>,
    n: Vec<(String, Vec<Value>)>,
    t: Vec<(String, Vec<Value>)>,
    lo: Vec<(String, f64)>,
    hi: Vec<(String, f64)>,
}

impl Terms {
    fn walk(&mut self, prefix: &str, fields: &Map<String, Value>) {
        for (name, value) in fields {
            // A filter key `a.b` means the nested `a` then `b`: a field named `a.b` is
            // out of every filter's reach, and listing it would collide with the nested one.
            if name.contains('.') {
                continue;
            }
            let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
            if !value.is_null() && value != &Value::Array(Vec::new()) {
                self.present.push(path.clone());
            }
            if let Value::Object(inner) = value {
                self.walk(&path, inner);
                continue;
            }
            let elements = match value {
                Value::Array(items) => items.as_slice(),
                other => std::slice::from_ref(other),
            };
            let (mut s, mut x, mut b, mut n, mut t) = (vec![], vec![], vec![], vec![], vec![]);
            for e in elements {
                match e {
                    Value::String(text) => {
                        s.push(e.clone());
                        if text == "true" || text == "false" {
                            t.push(Value::Bool(text == "true"));
                        }
                    }
                    Value::Number(v) => {
                        if let Some(v) = v.as_f64() {
                            x.push(float(v));
                        }
                    }
                    Value::Bool(v) => {
                        b.push(e.clone());
                        t.push(Value::Bool(*v));
                    }
                    _ => {}
                }
                if let Some(v) = as_number(e) {
                    n.push(float(v));
                }
            }
            let numbers: Vec<f64> = n.iter().filter_map(Value::as_f64).collect();
            if let (Some(lo), Some(hi)) =
                (numbers.iter().copied().reduce(f64::min), numbers.iter().copied().reduce(f64::max))
            {
                self.lo.push((path.clone(), lo));
                self.hi.push((path.clone(), hi));
            }
            for (list, values) in
                [(&mut self.s, s), (&mut self.x, x), (&mut self.b, b), (&mut self.n, n), (&mut self.t, t)]
            {
                if !values.is_empty() {
                    list.push((path.clone(), values));
                }
            }
        }
    }
}

/// A number stored as a JSON float, as [`number`] writes literals.
fn float(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn terms_list_each_path_by_kind() {
        let t = terms(
            &json!({"label": "shoe", "year": "2020", "tags": ["a", 3, true], "src": {"root": "/x"}, "gone": null, "none": []}),
        );
        assert_eq!(t["k"], json!(["label", "src", "src.root", "tags", "year"]));
        assert_eq!(t["s"]["tags"], json!(["a"]));
        assert_eq!(t["x"]["tags"], json!([3.0]));
        assert_eq!(t["n"]["year"], json!([2020.0]));
        assert_eq!(t["t"]["tags"], json!([true]));
        assert_eq!(t["lo"]["tags"], json!(3.0));
        assert_eq!(t["s"]["src.root"], json!("/x").as_str().map(|s| json!([s])).unwrap());
    }

    #[test]
    fn filters_become_expressions() {
        let f = Filter::parse("label:shoe,year>2020,!color:red").unwrap();
        let t = translate(&f);
        assert!(t.exact);
        assert_eq!(
            t.expr.unwrap(),
            r#"((json_contains(terms["s"]["label"], "shoe")) and (terms["hi"]["year"] > 2020.0) and not ((json_contains(terms["s"]["color"], "red"))))"#
        );
        let two_sided = translate(&Filter::parse("year>=2000,year<2010").unwrap());
        assert!(two_sided.exact, "two one-sided conditions are each exact");
        let range = Filter::from_json(&json!({"must": [{"key": "year", "range": {"gte": 2000, "lt": 2010}}]})).unwrap();
        assert!(!translate(&range).exact, "a two-sided range over an array is a superset");
        let negated =
            Filter::from_json(&json!({"must_not": [{"key": "year", "range": {"gte": 2000, "lt": 2010}}]})).unwrap();
        assert_eq!(
            translate(&negated),
            Translated::all(false),
            "the negation of a superset is left to the metadata check"
        );
        assert_eq!(quote("a\"b\\c\nd"), r#""a\"b\\c\nd""#);
        let odd = Filter::from_json(&json!({"key": "a\"b", "match": "x"})).unwrap();
        assert_eq!(translate(&odd), Translated::all(false), "keys Milvus cannot address go to the metadata check");
        let dotted = terms(&json!({"a.b": "x", "a": {"b": "y"}}));
        assert_eq!(dotted["s"]["a.b"], json!(["y"]), "a dotted field name is out of reach, not a collision");
        assert_eq!(number(2020.0), "2020.0");
        assert_eq!(number(1e300), "1e300");
    }
}
