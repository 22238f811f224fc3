//! Lists as ordered sets: inserting a value that is there already moves it.

use crate::json::deep_eq;
use crate::op::Position;
use serde_json::Value;

pub fn index_of(list: &[Value], value: &Value) -> Option<usize> {
    list.iter().position(|v| deep_eq(v, value))
}

/// Removes every copy of `value` (plain SQL may have written duplicates) and returns the
/// index of the first.
pub fn remove(list: &mut Vec<Value>, value: &Value) -> Option<usize> {
    let first = index_of(list, value)?;
    list.retain(|v| !deep_eq(v, value));
    Some(first)
}

/// Inserts `value` at `position`, moving it if present. A missing anchor falls back to
/// prepend (`before`) or append (`after`). Returns the index it was at before, if any.
pub fn insert(list: &mut Vec<Value>, value: Value, position: &Position) -> Option<usize> {
    let old = remove(list, &value);
    let at = match position {
        Position::Append => list.len(),
        Position::Prepend => 0,
        Position::Before(anchor) => index_of(list, anchor).unwrap_or(0),
        Position::After(anchor) => index_of(list, anchor).map_or(list.len(), |i| i + 1),
    };
    list.insert(at, value);
    old
}

/// The position that puts a value back at `index` of `list` (the list it was in).
pub fn position_of(list: &[Value], index: usize) -> Position {
    match index.checked_sub(1).and_then(|i| list.get(i)) {
        Some(previous) => Position::After(previous.clone()),
        None => Position::Prepend,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list(v: Value) -> Vec<Value> {
        v.as_array().unwrap().clone()
    }

    #[test]
    fn positions() {
        let mut l = list(json!(["a", "b"]));
        insert(&mut l, json!("c"), &Position::Before(json!("b")));
        insert(&mut l, json!("d"), &Position::After(json!("a")));
        insert(&mut l, json!("e"), &Position::Prepend);
        insert(&mut l, json!("f"), &Position::Before(json!("zz")));
        insert(&mut l, json!("g"), &Position::After(json!("zz")));
        assert_eq!(l, list(json!(["f", "e", "a", "d", "c", "b", "g"])));
    }

    #[test]
    fn inserting_present_value_moves_it() {
        let mut l = list(json!([{"x": 1}, "b", "c"]));
        let old = insert(&mut l, json!({"x": 1.0}), &Position::Append);
        assert_eq!(old, Some(0));
        assert_eq!(l, list(json!(["b", "c", {"x": 1.0}])));
    }

    #[test]
    fn remove_takes_duplicates() {
        let mut l = list(json!(["a", "b", "a"]));
        assert_eq!(remove(&mut l, &json!("a")), Some(0));
        assert_eq!(l, list(json!(["b"])));
        assert_eq!(remove(&mut l, &json!("zz")), None);
    }

    #[test]
    fn position_of_restores() {
        let l = list(json!(["a", "b", "c"]));
        assert_eq!(position_of(&l, 0), Position::Prepend);
        assert_eq!(position_of(&l, 2), Position::After(json!("b")));
    }
}
