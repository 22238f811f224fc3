//! jsonb to `serde_json` and back by Postgres's jsonb API, without the text form in
//! between. pgrx's `JsonB` prints every value with `jsonb_out` and parses it again with
//! `jsonb_in`; on `apply`'s path that round trip cost more than the row's own update
//! (docs/benchmarks.md, issue 14). Numbers keep their exact text either way: Postgres
//! prints and parses numerics, and serde_json keeps the digits (`arbitrary_precision`).

use pgrx::callconv::{ArgAbi, BoxRet};
use pgrx::datum::Datum;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use serde_json::{Map, Number, Value};
use std::ffi::CStr;

/// A jsonb value as `serde_json` sees it.
pub struct Jsonb(pub Value);

impl_sql_translatable!(Jsonb, "jsonb");

impl FromDatum for Jsonb {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _: pg_sys::Oid,
    ) -> Option<Jsonb> {
        if is_null {
            return None;
        }
        // SAFETY: Postgres hands us a jsonb datum; detoasting gives its full varlena.
        unsafe {
            let jsonb = pg_sys::pg_detoast_datum(datum.cast_mut_ptr()) as *mut pg_sys::Jsonb;
            let mut iterator = pg_sys::JsonbIteratorInit(&mut (*jsonb).root);
            Some(Jsonb(read(&mut iterator)))
        }
    }
}

/// Reads one value from the iterator: a scalar, or a whole container. A top-level scalar
/// is stored as a one-element "raw scalar" array. Recursive, as deep as the value: each
/// level checks the stack as Postgres's own recursion does, so a deeply nested value
/// raises "stack depth limit exceeded" instead of overflowing the backend's stack.
unsafe fn read(iterator: &mut *mut pg_sys::JsonbIterator) -> Value {
    // SAFETY: the caller passes values from a live jsonb or its iterator.
    unsafe {
        pg_sys::check_stack_depth();
        let mut value = pg_sys::JsonbValue::default();
        let token = pg_sys::JsonbIteratorNext(iterator, &mut value, false);
        match token {
            pg_sys::JsonbIteratorToken::WJB_BEGIN_ARRAY => {
                let raw_scalar = value.val.array.rawScalar;
                let mut items = Vec::with_capacity(value.val.array.nElems.max(0) as usize);
                loop {
                    let mut item = pg_sys::JsonbValue::default();
                    match pg_sys::JsonbIteratorNext(iterator, &mut item, true) {
                        pg_sys::JsonbIteratorToken::WJB_ELEM => items.push(nested(&item)),
                        _ => break,
                    }
                }
                if raw_scalar {
                    items.pop().unwrap_or(Value::Null)
                } else {
                    Value::Array(items)
                }
            }
            pg_sys::JsonbIteratorToken::WJB_BEGIN_OBJECT => {
                let mut map = Map::new();
                loop {
                    let mut key = pg_sys::JsonbValue::default();
                    if pg_sys::JsonbIteratorNext(iterator, &mut key, true)
                        != pg_sys::JsonbIteratorToken::WJB_KEY
                    {
                        break;
                    }
                    let mut item = pg_sys::JsonbValue::default();
                    pg_sys::JsonbIteratorNext(iterator, &mut item, true);
                    map.insert(string(&key), nested(&item));
                }
                Value::Object(map)
            }
            _ => scalar(&value),
        }
    }
}

/// An element or a value: with `skipNested`, a container arrives as a binary value,
/// read by an iterator of its own.
unsafe fn nested(item: &pg_sys::JsonbValue) -> Value {
    // SAFETY: the caller passes values from a live jsonb or its iterator.
    unsafe {
        if item.type_ == pg_sys::jbvType::jbvBinary {
            let mut inner = pg_sys::JsonbIteratorInit(item.val.binary.data);
            read(&mut inner)
        } else {
            scalar(item)
        }
    }
}

unsafe fn scalar(value: &pg_sys::JsonbValue) -> Value {
    // SAFETY: the caller passes values from a live jsonb or its iterator.
    unsafe {
        match value.type_ {
            pg_sys::jbvType::jbvString => Value::String(string(value)),
            pg_sys::jbvType::jbvBool => Value::Bool(value.val.boolean),
            pg_sys::jbvType::jbvNumeric => {
                let text = pgrx::direct_function_call_as_datum(
                    pg_sys::numeric_out,
                    &[Some(pg_sys::Datum::from(value.val.numeric))],
                )
                .map_or(std::ptr::null_mut(), |d| {
                    d.cast_mut_ptr::<std::ffi::c_char>()
                });
                if text.is_null() {
                    error!("rowsync: numeric_out returned nothing");
                }
                let number = numeric_text(CStr::from_ptr(text));
                pg_sys::pfree(text.cast());
                number
            }
            _ => Value::Null,
        }
    }
}

/// A numeric's digits as `numeric_out` prints them, which is what jsonb_out writes (a
/// jsonb number is always finite).
fn numeric_text(text: &CStr) -> Value {
    let text = text.to_string_lossy();
    match serde_json::from_str::<Number>(&text) {
        Ok(number) => Value::Number(number),
        Err(_) => error!("rowsync: a jsonb number that JSON cannot hold: {text}"),
    }
}

unsafe fn string(value: &pg_sys::JsonbValue) -> String {
    // SAFETY: the caller passes values from a live jsonb or its iterator.
    unsafe {
        let bytes = std::slice::from_raw_parts(
            value.val.string.val as *const u8,
            value.val.string.len as usize,
        );
        match std::str::from_utf8(bytes) {
            Ok(text) => text.to_string(),
            Err(_) => {
                error!("rowsync: a jsonb string that is not UTF-8 (rowsync needs a UTF-8 database)")
            }
        }
    }
}

impl IntoDatum for Jsonb {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(to_datum(&self.0))
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

/// `value` as a jsonb datum, built in the current memory context. A top-level scalar is
/// stored as a one-element "raw scalar" array, as jsonb_in stores it.
pub fn to_datum(value: &Value) -> pg_sys::Datum {
    let mut state: *mut pg_sys::JsonbParseState = std::ptr::null_mut();
    // SAFETY: every JsonbValue pushed points into `value`, alive until the jsonb is
    // built; Postgres copies what it keeps.
    unsafe {
        let root = if value.is_array() || value.is_object() {
            push(&mut state, value, pg_sys::JsonbIteratorToken::WJB_ELEM)
        } else {
            let mut array = pg_sys::JsonbValue {
                type_: pg_sys::jbvType::jbvArray,
                ..Default::default()
            };
            array.val.array.rawScalar = true;
            pg_sys::pushJsonbValue(
                &mut state,
                pg_sys::JsonbIteratorToken::WJB_BEGIN_ARRAY,
                &mut array,
            );
            push(&mut state, value, pg_sys::JsonbIteratorToken::WJB_ELEM);
            pg_sys::pushJsonbValue(
                &mut state,
                pg_sys::JsonbIteratorToken::WJB_END_ARRAY,
                std::ptr::null_mut(),
            )
        };
        pg_sys::Datum::from(pg_sys::JsonbValueToJsonb(root))
    }
}

/// Pushes `value`: a scalar as `token` (an element or an object's value), a container
/// whole. Returns what the push of its last token returns: for the outermost container,
/// the finished value.
unsafe fn push(
    state: &mut *mut pg_sys::JsonbParseState,
    value: &Value,
    token: pg_sys::JsonbIteratorToken::Type,
) -> *mut pg_sys::JsonbValue {
    // SAFETY: `state` is a parse state begun by the caller; each value pushed outlives it.
    unsafe {
        pg_sys::check_stack_depth();
        use pg_sys::JsonbIteratorToken::*;
        match value {
            Value::Array(items) => {
                pg_sys::pushJsonbValue(state, WJB_BEGIN_ARRAY, std::ptr::null_mut());
                for item in items {
                    push(state, item, WJB_ELEM);
                }
                pg_sys::pushJsonbValue(state, WJB_END_ARRAY, std::ptr::null_mut())
            }
            Value::Object(map) => {
                pg_sys::pushJsonbValue(state, WJB_BEGIN_OBJECT, std::ptr::null_mut());
                for (key, item) in map {
                    let mut key = to_string(key);
                    pg_sys::pushJsonbValue(state, WJB_KEY, &mut key);
                    push(state, item, WJB_VALUE);
                }
                pg_sys::pushJsonbValue(state, WJB_END_OBJECT, std::ptr::null_mut())
            }
            scalar => {
                let mut scalar = to_scalar(scalar);
                pg_sys::pushJsonbValue(state, token, &mut scalar)
            }
        }
    }
}

fn to_scalar(value: &Value) -> pg_sys::JsonbValue {
    let mut out = pg_sys::JsonbValue::default();
    match value {
        Value::Null => out.type_ = pg_sys::jbvType::jbvNull,
        Value::Bool(b) => {
            out.type_ = pg_sys::jbvType::jbvBool;
            out.val.boolean = *b;
        }
        Value::Number(n) => {
            out.type_ = pg_sys::jbvType::jbvNumeric;
            out.val.numeric = numeric(n);
        }
        Value::String(s) => return to_string(s),
        Value::Array(_) | Value::Object(_) => unreachable!("containers are pushed whole"),
    }
    out
}

/// Strings as jsonb_in accepts them: jsonb has no NUL character.
fn to_string(s: &str) -> pg_sys::JsonbValue {
    if s.contains('\0') {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_UNTRANSLATABLE_CHARACTER,
            "unsupported Unicode escape sequence",
            function_name!(),
        )
        .set_detail("\\u0000 cannot be converted to text.")
        .report(PgLogLevel::ERROR);
    }
    let mut out = pg_sys::JsonbValue {
        type_: pg_sys::jbvType::jbvString,
        ..Default::default()
    };
    out.val.string.val = s.as_ptr() as *mut std::ffi::c_char;
    out.val.string.len = s.len() as i32;
    out
}

/// An integer directly, anything else by numeric_in, as jsonb_in reads it.
fn numeric(n: &Number) -> pg_sys::Numeric {
    let text = n.to_string();
    // SAFETY: plain conversions; numeric_in raises on text that is not a number, which
    // serde_json's numbers always are.
    unsafe {
        if let Ok(i) = text.parse::<i64>() {
            return pg_sys::int64_to_numeric(i);
        }
        let text = std::ffi::CString::new(text).unwrap_or_default();
        let datum = pgrx::direct_function_call_as_datum(
            pg_sys::numeric_in,
            &[
                Some(pg_sys::Datum::from(text.as_ptr())),
                Some(pg_sys::Datum::from(pg_sys::InvalidOid)),
                Some(pg_sys::Datum::from(-1i32)),
            ],
        );
        datum.map_or(std::ptr::null_mut(), |d| d.cast_mut_ptr())
    }
}

unsafe impl<'fcx> ArgAbi<'fcx> for Jsonb {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        // SAFETY: pgrx calls this with a jsonb argument, as the SQL signature says.
        unsafe { arg.unbox_arg_using_from_datum() }
            .unwrap_or_else(|| panic!("argument {index} must not be null"))
    }
}

unsafe impl BoxRet for Jsonb {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut pgrx::callconv::FcInfo<'fcx>) -> Datum<'fcx> {
        match self.into_datum() {
            // SAFETY: a jsonb datum, as the SQL signature says.
            Some(datum) => unsafe { fcinfo.return_raw_datum(datum) },
            None => fcinfo.return_null(),
        }
    }
}
