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
            decimal(&x.to_string()) == decimal(&y.to_string())
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

/// A number's exact value as (negative, significant digits, exponent), so that `1.50`,
/// `15e-1` and `1.5` compare equal and `…123` never equals `…124`, however long.
fn decimal(text: &str) -> (bool, String, i64) {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().unwrap_or(0)),
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{fraction}");
    let leading = digits.len() - digits.trim_start_matches('0').len();
    let digits = digits
        .trim_start_matches('0')
        .trim_end_matches('0')
        .to_string();
    if digits.is_empty() {
        return (false, String::new(), 0);
    }
    // The value is 0.DIGITS × 10^point.
    let point = whole.len() as i64 - leading as i64 + exponent;
    (negative, digits, point)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn long_numbers_compare_exactly() {
        let big: Value = serde_json::from_str("12345678901234567890123").unwrap();
        let next: Value = serde_json::from_str("12345678901234567890124").unwrap();
        assert!(!deep_eq(&big, &next));
        assert!(deep_eq(&big, &big.clone()));
        let a: Value = serde_json::from_str("1.50").unwrap();
        let b: Value = serde_json::from_str("15e-1").unwrap();
        assert!(deep_eq(&a, &b));
        assert!(deep_eq(
            &json!(0),
            &serde_json::from_str::<Value>("-0.0").unwrap()
        ));
        assert!(!deep_eq(&json!(-1), &json!(1)));
        assert!(deep_eq(
            &serde_json::from_str::<Value>("100").unwrap(),
            &serde_json::from_str::<Value>("1e2").unwrap()
        ));
    }

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
