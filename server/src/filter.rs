//! Filters over item metadata: equality, set membership, numeric range and existence,
//! combined with `must` (and), `should` (or) and `must_not` (not), in the JSON form of
//! vector databases such as Qdrant, plus a compact query-string form for the common case.
//!
//! JSON: `{"must": [{"key": "label", "match": "shoe"}, {"key": "year", "range": {"gt": 2020}}]}`;
//! conditions are `{"key", "match": V}`, `{"key", "match": {"any": [V, ...]}}`,
//! `{"key", "range": {"gt"|"gte"|"lt"|"lte": N}}`, `{"key", "exists": bool}`, or a nested
//! filter. Query string: `label:shoe,year>2020` (comma = and); terms are `key:v`,
//! `key:a|b` (any of), `key>n`, `key>=n`, `key<n`, `key<=n`, `key?` (exists), each
//! negated by a leading `!`.
//!
//! A key is a dotted path into the metadata object (`source.root`). When the value at a
//! key is an array, a condition holds when it holds for any element. Values compare as
//! JSON, except that a string and a number (or boolean) are equal when the string is the
//! other's text (`"2020"` matches `2020`), so query-string values, which are all text,
//! match numbers too.

use serde_json::Value;

use crate::{Error, Result};

/// Deepest nesting of filters accepted.
const MAX_DEPTH: usize = 16;
/// Most conditions in one filter, all levels together.
const MAX_CONDITIONS: usize = 1024;

/// A filter: every `must` condition holds, at least one `should` condition holds (when
/// there are any), and no `must_not` condition holds. The empty filter matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub must: Vec<Condition>,
    pub should: Vec<Condition>,
    pub must_not: Vec<Condition>,
}

/// One condition on the value at a metadata key, or a nested filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The value equals one of these scalars.
    Match {
        key: Key,
        any: Vec<Value>,
    },
    /// The value is a number (or numeric text) within the bounds.
    Range {
        key: Key,
        range: Range,
    },
    /// The key is present with a value other than null or an empty array (`exists`), or not.
    Exists {
        key: Key,
        exists: bool,
    },
    Nested(Filter),
}

/// A dotted metadata path, split at the dots.
#[derive(Debug, Clone, PartialEq)]
pub struct Key(Vec<String>);

/// Numeric bounds; `None` is unbounded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Range {
    pub gt: Option<f64>,
    pub gte: Option<f64>,
    pub lt: Option<f64>,
    pub lte: Option<f64>,
}

impl Key {
    fn parse(text: &str) -> std::result::Result<Self, String> {
        if text.is_empty() || text.split('.').any(str::is_empty) {
            return Err(format!("`{text}` is not a key; keys are field names joined by dots, e.g. `source.root`"));
        }
        Ok(Self(text.split('.').map(str::to_string).collect()))
    }

    /// The field names of the path, outermost first.
    pub fn parts(&self) -> &[String] {
        &self.0
    }

    /// The value at this key in `metadata`, if any.
    fn lookup<'a>(&self, metadata: &'a Value) -> Option<&'a Value> {
        self.0.iter().try_fold(metadata, |v, part| v.get(part.as_str()))
    }
}

impl Range {
    fn contains(&self, x: f64) -> bool {
        self.gt.is_none_or(|b| x > b)
            && self.gte.is_none_or(|b| x >= b)
            && self.lt.is_none_or(|b| x < b)
            && self.lte.is_none_or(|b| x <= b)
    }
}

/// The value itself, or each element when it is an array.
fn elements(v: &Value) -> &[Value] {
    match v {
        Value::Array(items) => items,
        other => std::slice::from_ref(other),
    }
}

/// The number a value stands for: a JSON number, or text that parses as one.
pub(crate) fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
        _ => None,
    }
}

/// Equality of two scalars, with text equal to the number or boolean it spells.
fn scalar_eq(item: &Value, wanted: &Value) -> bool {
    match (item, wanted) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::String(a), Value::String(b)) => a == b,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::String(s), Value::Number(_)) | (Value::Number(_), Value::String(s)) => {
            let n = if matches!(item, Value::Number(_)) { item } else { wanted };
            s.trim().parse::<f64>().ok() == as_number(n)
        }
        (Value::String(s), Value::Bool(b)) | (Value::Bool(b), Value::String(s)) => {
            s == if *b { "true" } else { "false" }
        }
        _ => false,
    }
}

impl Condition {
    /// Whether `metadata` satisfies this condition.
    pub fn matches(&self, metadata: &Value) -> bool {
        match self {
            Condition::Match { key, any } => {
                key.lookup(metadata).is_some_and(|v| elements(v).iter().any(|e| any.iter().any(|w| scalar_eq(e, w))))
            }
            Condition::Range { key, range } => key
                .lookup(metadata)
                .is_some_and(|v| elements(v).iter().filter_map(as_number).any(|x| range.contains(x))),
            Condition::Exists { key, exists } => {
                let present = key.lookup(metadata).is_some_and(|v| !v.is_null() && v != &Value::Array(Vec::new()));
                present == *exists
            }
            Condition::Nested(f) => f.matches(metadata),
        }
    }
}

impl Filter {
    /// Whether `metadata` satisfies the filter.
    pub fn matches(&self, metadata: &Value) -> bool {
        self.must.iter().all(|c| c.matches(metadata))
            && (self.should.is_empty() || self.should.iter().any(|c| c.matches(metadata)))
            && !self.must_not.iter().any(|c| c.matches(metadata))
    }

    /// True for the filter that matches everything.
    pub fn is_empty(&self) -> bool {
        self.must.is_empty() && self.should.is_empty() && self.must_not.is_empty()
    }

    /// Reads a filter in its JSON form.
    pub fn from_json(value: &Value) -> Result<Self> {
        let mut budget = MAX_CONDITIONS;
        parse_filter(value, "filter", 0, &mut budget).map_err(|reason| invalid(&value.to_string(), reason))
    }

    /// Reads a filter given inside a JSON body: an object in the JSON form, or a string in
    /// the query-string form.
    pub fn from_value(value: &Value) -> Result<Self> {
        match value {
            Value::String(text) => Self::parse(text),
            other => Self::from_json(other),
        }
    }

    /// Reads a filter in its query-string form, or in its JSON form when the text starts
    /// with `{`.
    pub fn parse(text: &str) -> Result<Self> {
        let trimmed = text.trim();
        if trimmed.starts_with('{') {
            let value: Value = serde_json::from_str(trimmed)
                .map_err(|e| invalid(text, format!("it starts with `{{` but is not valid JSON: {e}")))?;
            return Self::from_json(&value);
        }
        let mut filter = Filter::default();
        for term in trimmed.split(',').map(str::trim) {
            if term.is_empty() {
                return Err(invalid(text, "it has an empty term; separate terms with single commas".into()));
            }
            let (negated, body) = match term.strip_prefix('!') {
                Some(rest) => (true, rest.trim_start()),
                None => (false, term),
            };
            let condition = parse_term(body).map_err(|reason| invalid(text, format!("term `{term}`: {reason}")))?;
            if negated { &mut filter.must_not } else { &mut filter.must }.push(condition);
            if filter.must.len() + filter.must_not.len() > MAX_CONDITIONS {
                return Err(invalid(text, format!("it has more than {MAX_CONDITIONS} terms")));
            }
        }
        Ok(filter)
    }
}

fn invalid(filter: &str, reason: String) -> Error {
    Error::InvalidFilter { filter: filter.chars().take(200).collect(), reason }
}

/// One query-string term without its `!`.
fn parse_term(term: &str) -> std::result::Result<Condition, String> {
    let end = term
        .find([':', '<', '>', '?'])
        .ok_or_else(|| "expected `key:value`, `key:a|b`, `key>n`, `key>=n`, `key<n`, `key<=n` or `key?`".to_string())?;
    let key = Key::parse(term[..end].trim_end())?;
    let rest = &term[end..];
    let number = |text: &str| -> std::result::Result<f64, String> {
        text.trim().parse::<f64>().ok().filter(|x| x.is_finite()).ok_or_else(|| format!("`{text}` is not a number"))
    };
    let range = |r: Range| Ok(Condition::Range { key: key.clone(), range: r });
    if let Some(v) = rest.strip_prefix(">=") {
        range(Range { gte: Some(number(v)?), ..Range::default() })
    } else if let Some(v) = rest.strip_prefix("<=") {
        range(Range { lte: Some(number(v)?), ..Range::default() })
    } else if let Some(v) = rest.strip_prefix('>') {
        range(Range { gt: Some(number(v)?), ..Range::default() })
    } else if let Some(v) = rest.strip_prefix('<') {
        range(Range { lt: Some(number(v)?), ..Range::default() })
    } else if rest == "?" {
        Ok(Condition::Exists { key, exists: true })
    } else if let Some(v) = rest.strip_prefix(':') {
        if v.is_empty() {
            return Err("no value after `:`; write `key:value`, or `key?` to ask that the key exists".into());
        }
        Ok(Condition::Match { key, any: v.split('|').map(|s| Value::String(s.to_string())).collect() })
    } else {
        Err(format!("`{rest}` after the key is not an operator; use `:`, `>`, `>=`, `<`, `<=` or `?`"))
    }
}

const FILTER_FIELDS: &str = "`must`, `should` and `must_not`";
const CONDITION_FIELDS: &str = "`key` with one of `match`, `range` or `exists`, or a nested filter";

fn parse_filter(v: &Value, at: &str, depth: usize, budget: &mut usize) -> std::result::Result<Filter, String> {
    if depth > MAX_DEPTH {
        return Err(format!("{at}: filters nest at most {MAX_DEPTH} levels deep"));
    }
    let Value::Object(fields) = v else {
        return Err(format!("{at} must be an object with {FILTER_FIELDS}, e.g. {{\"must\": [{{\"key\": \"label\", \"match\": \"shoe\"}}]}}"));
    };
    if fields.contains_key("key") {
        // A bare condition is a filter of one `must`.
        return Ok(Filter { must: vec![parse_condition(v, at, depth, budget)?], ..Filter::default() });
    }
    let mut filter = Filter::default();
    for (name, value) in fields {
        let list = match name.as_str() {
            "must" => &mut filter.must,
            "should" => &mut filter.should,
            "must_not" => &mut filter.must_not,
            other => return Err(format!("{at}: unknown field `{other}`; a filter has {FILTER_FIELDS}")),
        };
        let items = match value {
            Value::Array(items) => items.as_slice(),
            one @ Value::Object(_) => std::slice::from_ref(one),
            _ => return Err(format!("{at}.{name} must be a list of conditions")),
        };
        for (i, item) in items.iter().enumerate() {
            list.push(parse_condition(item, &format!("{at}.{name}[{i}]"), depth, budget)?);
        }
    }
    Ok(filter)
}

fn parse_condition(v: &Value, at: &str, depth: usize, budget: &mut usize) -> std::result::Result<Condition, String> {
    *budget = budget.checked_sub(1).ok_or_else(|| format!("{at}: a filter has at most {MAX_CONDITIONS} conditions"))?;
    let Value::Object(fields) = v else {
        return Err(format!("{at} must be an object: {CONDITION_FIELDS}"));
    };
    let Some(key) = fields.get("key") else {
        return Ok(Condition::Nested(parse_filter(v, at, depth + 1, budget)?));
    };
    let key = key.as_str().ok_or_else(|| format!("{at}.key must be a string"))?;
    let key = Key::parse(key).map_err(|e| format!("{at}.key: {e}"))?;
    let tests: Vec<&String> = fields.keys().filter(|k| k.as_str() != "key").collect();
    let [test] = tests.as_slice() else {
        return Err(format!("{at} must have `key` and exactly one of `match`, `range` or `exists`"));
    };
    let value = &fields[test.as_str()];
    match test.as_str() {
        "match" => Ok(Condition::Match { key, any: parse_match(value, &format!("{at}.match"))? }),
        "range" => Ok(Condition::Range { key, range: parse_range(value, &format!("{at}.range"))? }),
        "exists" => {
            let exists = value.as_bool().ok_or_else(|| format!("{at}.exists must be true or false"))?;
            Ok(Condition::Exists { key, exists })
        }
        other => Err(format!("{at}: unknown field `{other}`; a condition has {CONDITION_FIELDS}")),
    }
}

fn scalar(v: &Value, at: &str) -> std::result::Result<Value, String> {
    match v {
        Value::String(_) | Value::Number(_) | Value::Bool(_) => Ok(v.clone()),
        _ => Err(format!("{at} must be a string, number or boolean")),
    }
}

fn parse_match(v: &Value, at: &str) -> std::result::Result<Vec<Value>, String> {
    match v {
        Value::Object(fields) => match fields.iter().next() {
            Some((name, inner)) if fields.len() == 1 && name == "value" => {
                Ok(vec![scalar(inner, &format!("{at}.value"))?])
            }
            Some((name, Value::Array(items))) if fields.len() == 1 && name == "any" => {
                items.iter().enumerate().map(|(i, x)| scalar(x, &format!("{at}.any[{i}]"))).collect()
            }
            _ => Err(format!("{at} must be a value, {{\"value\": v}} or {{\"any\": [v, ...]}}")),
        },
        other => Ok(vec![scalar(other, at)?]),
    }
}

fn parse_range(v: &Value, at: &str) -> std::result::Result<Range, String> {
    let Value::Object(fields) = v else {
        return Err(format!("{at} must be an object with `gt`, `gte`, `lt` and/or `lte`"));
    };
    if fields.is_empty() {
        return Err(format!("{at} needs at least one of `gt`, `gte`, `lt`, `lte`"));
    }
    let mut range = Range::default();
    for (name, bound) in fields {
        let x = bound.as_f64().ok_or_else(|| format!("{at}.{name} must be a number"))?;
        let slot = match name.as_str() {
            "gt" => &mut range.gt,
            "gte" => &mut range.gte,
            "lt" => &mut range.lt,
            "lte" => &mut range.lte,
            other => return Err(format!("{at}: unknown bound `{other}`; use `gt`, `gte`, `lt`, `lte`")),
        };
        *slot = Some(x);
    }
    Ok(range)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item() -> Value {
        json!({
            "label": "shoe", "year": 2021, "price": "19.5", "tags": ["red", "sale"],
            "source": {"root": "/data"}, "gone": null, "empty": [], "new": true
        })
    }

    fn yes(filter: &str) -> bool {
        Filter::parse(filter).unwrap_or_else(|e| panic!("{filter}: {e}")).matches(&item())
    }

    /// The fuzzer's find: `!` followed by a space (or a tab) negated the key ` label`.
    #[test]
    fn white_space_around_a_negation_or_a_key_is_ignored() {
        let doc = serde_json::json!({"label": "shoe"});
        for text in ["! label:shoe", "!\tlabel:shoe", " ! label :shoe"] {
            let f = Filter::parse(text).unwrap();
            assert!(!f.matches(&doc), "{text}");
        }
        assert!(Filter::parse("\tlabel :shoe").unwrap().matches(&doc));
    }

    #[test]
    fn query_string_terms() {
        assert!(yes("label:shoe"));
        assert!(!yes("label:boot"));
        assert!(yes("label:boot|shoe"));
        assert!(yes("label:shoe,year>2020"));
        assert!(!yes("label:shoe,year>2021"));
        assert!(yes("year>=2021") && yes("year<=2021") && yes("year<2022") && !yes("year<2021"));
        assert!(yes("year:2021"), "text matches the number it spells");
        assert!(yes("price>19") && yes("price:19.5"), "numeric text is a number for ranges");
        assert!(yes("tags:sale") && !yes("tags:blue"), "arrays match any element");
        assert!(yes("source.root:/data"));
        assert!(yes("label?") && !yes("gone?") && !yes("empty?") && !yes("missing?"));
        assert!(yes("!missing?") && yes("!label:boot") && !yes("!label:shoe"));
        assert!(yes("new:true") && !yes("new:false"));
    }

    #[test]
    fn json_form_with_and_or_not() {
        let f = |v: Value| Filter::from_json(&v).unwrap().matches(&item());
        assert!(f(json!({"must": [{"key": "label", "match": "shoe"}]})));
        assert!(f(json!({"key": "year", "range": {"gt": 2020, "lte": 2021}})), "a bare condition");
        assert!(f(json!({"should": [{"key": "label", "match": "boot"}, {"key": "year", "match": 2021}]})));
        assert!(!f(json!({"should": [{"key": "label", "match": "boot"}, {"key": "year", "match": 1999}]})));
        assert!(!f(json!({"must_not": [{"key": "tags", "match": {"any": ["sale", "x"]}}]})));
        assert!(f(
            json!({"must": [{"should": [{"key": "gone", "exists": false}]}, {"key": "label", "match": {"value": "shoe"}}]})
        ));
        assert!(f(json!({})), "the empty filter matches everything");
        assert!(!f(json!({"key": "year", "match": 2021.5})));
        assert!(f(json!({"key": "year", "match": 2021.0})), "numbers compare by value");
    }

    #[test]
    fn bad_filters_say_where_and_how_to_fix() {
        let msg = |text: &str| Filter::parse(text).unwrap_err().to_string();
        assert!(msg("label").contains("expected `key:value`"), "{}", msg("label"));
        assert!(msg("year>soon").contains("`soon` is not a number"));
        assert!(msg("label:shoe,,year>1").contains("empty term"));
        assert!(msg("label:").contains("no value after `:`"));
        assert!(msg("a..b:1").contains("not a key"));
        assert!(msg("{\"must\": [").contains("not valid JSON"));
        let msg = |v: Value| Filter::from_json(&v).unwrap_err().to_string();
        assert!(msg(json!({"mustt": []})).contains("unknown field `mustt`"));
        assert!(msg(json!({"must": [{"key": "a", "mach": 1}]})).contains("filter.must[0]: unknown field `mach`"));
        assert!(msg(json!({"must": [{"key": "a", "match": 1, "exists": true}]})).contains("exactly one of"));
        assert!(msg(json!({"must": [{"key": "a", "match": [1]}]})).contains("filter.must[0].match must be"));
        assert!(msg(json!({"must": [{"key": "a", "range": {"above": 1}}]})).contains("unknown bound `above`"));
        assert!(msg(json!({"must": [{"key": "a", "range": {}}]})).contains("at least one"));
        assert!(msg(json!({"must": [{"key": "a", "exists": "yes"}]})).contains("true or false"));
        assert!(msg(json!([1])).contains("must be an object"));
        let mut deep = json!({"key": "a", "exists": true});
        for _ in 0..40 {
            deep = json!({ "must": [deep] });
        }
        assert!(msg(deep).contains("nest at most"));
    }
}
