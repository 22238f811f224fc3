//! Checks that a JSON value fits a column before Postgres is asked to store it, so that a
//! wrong kind gets rowsync's own error (RS004) naming the op and the key.

use crate::catalog::Column;
use serde_json::Value;

/// `Err(what was expected)` when `value` cannot be stored in `column`. Null always fits
/// here; NOT NULL is Postgres's to enforce.
pub fn check(column: &Column, value: &Value) -> Result<(), String> {
    if value.is_null() || column.is_json() {
        return Ok(());
    }
    if column.is_array() {
        let Value::Array(items) = value else {
            return Err(format!("a JSON array for {}", column.type_name));
        };
        let element = column.elem_category.unwrap_or('U');
        return items.iter().try_for_each(|item| {
            check_scalar(element, &column.type_name, item)
                .map_err(|e| format!("array elements as {e}"))
        });
    }
    if column.type_name == "uuid" {
        return match value.as_str() {
            Some(s) if rowsync_core::is_uuid(s) => Ok(()),
            _ => Err("a UUID string".to_string()),
        };
    }
    check_scalar(column.category, &column.type_name, value)
}

fn check_scalar(category: char, type_name: &str, value: &Value) -> Result<(), String> {
    if value.is_null() {
        return Ok(());
    }
    let fits = match category {
        'N' if is_integer_type(type_name) => value.as_i64().is_some(),
        'N' => value.is_number(),
        'B' => value.is_boolean(),
        // strings, dates and times, enums, and other types with a text input form
        _ => value.is_string(),
    };
    if fits {
        Ok(())
    } else {
        Err(match category {
            'N' if is_integer_type(type_name) => "an integer".to_string(),
            'N' => "a number".to_string(),
            'B' => "a boolean".to_string(),
            _ => "a string".to_string(),
        })
    }
}

fn is_integer_type(type_name: &str) -> bool {
    matches!(
        type_name,
        "int2" | "int4" | "int8" | "_int2" | "_int4" | "_int8"
    )
}

/// The canonical text form of `id` as a key of type `pk_type` (lower-case UUIDs,
/// integers without sign or leading zeros), as Postgres prints it; `None` when `id` is
/// not such a key. One row has one id, however a client spells it.
pub fn canonical_id(pk_type: &str, id: &str) -> Option<String> {
    match pk_type {
        "uuid" => rowsync_core::is_uuid(id).then(|| id.to_ascii_lowercase()),
        "bigint" | "integer" | "smallint" => id.parse::<i64>().ok().map(|n| n.to_string()),
        _ => Some(id.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::canonical_id;

    #[test]
    fn ids_have_one_spelling() {
        let upper = "0B5E4F6A-1111-4222-8333-944455556666";
        assert_eq!(
            canonical_id("uuid", upper).as_deref(),
            Some("0b5e4f6a-1111-4222-8333-944455556666")
        );
        assert_eq!(canonical_id("bigint", "+007").as_deref(), Some("7"));
        assert_eq!(canonical_id("text", "Aa").as_deref(), Some("Aa"));
        assert_eq!(canonical_id("uuid", "nope"), None);
        assert_eq!(canonical_id("integer", "1.5"), None);
    }
}
