//! Deep JSON equality, the one equality rowsync uses (list dedupe, anchors, removal, guards).

use serde_json::Value;

/// Equal as JSON values: numbers by value (`1` equals `1.0`, as in jsonb), objects by
/// content regardless of key order, arrays element by element.
pub fn deep_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                return x == y;
            }
            if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                return x == y;
            }
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y,
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| deep_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| deep_eq(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_compare_by_value() {
        assert!(deep_eq(&json!(1), &json!(1.0)));
        assert!(!deep_eq(&json!(1), &json!(1.5)));
        assert!(!deep_eq(&json!(1), &json!("1")));
    }

    #[test]
    fn objects_ignore_key_order_and_recurse() {
        let a: Value = serde_json::from_str(r#"{"a":1,"b":[1,{"c":2}]}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"b":[1.0,{"c":2}],"a":1}"#).unwrap();
        assert!(deep_eq(&a, &b));
        assert!(!deep_eq(&a, &json!({"a": 1})));
        assert!(!deep_eq(&json!([1, 2]), &json!([2, 1])));
    }
}
