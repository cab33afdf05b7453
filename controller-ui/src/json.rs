//! Tolerant readers over the agents' JSON.
//!
//! An agent of another version, a peer that has not answered yet or a line
//! that garbled a byte can all hand us a field that is missing, `null` or of
//! the wrong type. The UI must keep showing the rack whatever arrives, so
//! every reader here answers `None` (or empty) instead of failing, and no
//! reader can panic.

use serde_json::Value;

/// A string field; `None` when missing, `null` or not a string.
pub(crate) fn str_of(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// A number field as f64; `None` when missing, `null`, not a number, or not
/// finite (so no NaN ever reaches a gauge or a format).
pub(crate) fn f64_of(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64).filter(|x| x.is_finite())
}

/// A non-negative whole number; a float such as `412.0` is accepted and
/// floored, a negative one is refused.
pub(crate) fn u64_of(v: &Value, key: &str) -> Option<u64> {
    let field = v.get(key)?;
    if let Some(n) = field.as_u64() {
        return Some(n);
    }
    let x = field.as_f64()?;
    // `as` saturates at u64::MAX, which is what a bogus huge figure deserves.
    (x.is_finite() && x >= 0.0).then(|| x.floor() as u64)
}

pub(crate) fn bool_of(v: &Value, key: &str) -> Option<bool> {
    v.get(key).and_then(Value::as_bool)
}

/// An array field's items; empty when missing or not an array.
pub(crate) fn items<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// An array of strings; items that are not strings are skipped.
pub(crate) fn strings_of(v: &Value, key: &str) -> Vec<String> {
    items(v, key)
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wrong_types_and_nulls_read_as_absent() {
        let v = json!({"a": null, "b": "x", "c": -1, "d": 2.9, "e": [1, "s"], "f": f64::MAX});
        assert_eq!(str_of(&v, "a"), None);
        assert_eq!(str_of(&v, "c"), None);
        assert_eq!(u64_of(&v, "c"), None);
        assert_eq!(u64_of(&v, "d"), Some(2));
        assert_eq!(u64_of(&v, "b"), None);
        assert_eq!(strings_of(&v, "e"), vec!["s".to_owned()]);
        assert!(items(&v, "zz").is_empty());
        assert!(items(&json!("not an object"), "a").is_empty());
        assert_eq!(u64_of(&v, "f"), Some(u64::MAX));
    }
}
