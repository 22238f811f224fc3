//! In-database tests: the shared vectors against a real table, and the internals that
//! need no second connection. Commit-time behaviour (feed order, NOTIFY) is tested from
//! outside, in tests/.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::jsonb::Jsonb;
    use pgrx::prelude::*;
    use pgrx::JsonB;
    use rowsync_core::vectors::{check, normalise, with_now, Expected, VectorFile};
    use serde_json::{json, Value};

    const VECTOR_FILES: [(&str, &str); 5] = [
        ("parse.json", include_str!("../../tests/vectors/parse.json")),
        ("set.json", include_str!("../../tests/vectors/set.json")),
        ("list.json", include_str!("../../tests/vectors/list.json")),
        ("rows.json", include_str!("../../tests/vectors/rows.json")),
        ("undo.json", include_str!("../../tests/vectors/undo.json")),
    ];

    fn sql_json(sql: &str, args: Vec<pgrx::datum::DatumWithOid>) -> Value {
        Spi::get_one_with_args::<JsonB>(sql, &args)
            .expect("query")
            .map(|j| j.0)
            .unwrap_or(Value::Null)
    }

    fn try_apply(tx: Value) -> Value {
        sql_json("SELECT rowsync._apply($1)", vec![JsonB(tx).into()])
    }

    fn apply(tx: Value) -> Value {
        sql_json("SELECT rowsync.apply($1)", vec![JsonB(tx).into()])
    }

    fn error_code(result: &Value) -> &str {
        result["error"]["sqlstate"].as_str().unwrap_or("none")
    }

    /// jsonb to serde and back without text agrees with Postgres's text conversion: a
    /// value made directly prints as Postgres reads its text, and a jsonb made by
    /// Postgres reads as serde reads Postgres's text.
    #[pg_test]
    fn jsonb_converts_as_its_text_does() {
        let samples = [
            "null",
            "true",
            "0",
            "-0",
            "1.50",
            "12345678901234567890123",
            "1e3",
            "-2.5E-3",
            r#""""#,
            r#""é \" \\ \n ☃ 𝄞""#,
            "[]",
            "{}",
            r#"[1, [2, [3, {}]], {"a": [null]}]"#,
            r#"{"b": 1, "a": {"c": [true, false], "d": "x"}, "": 0, "aa": []}"#,
        ];
        for text in samples {
            let value: Value = serde_json::from_str(text).unwrap();
            let printed =
                Spi::get_one_with_args::<String>("SELECT $1::text", &[Jsonb(value).into()])
                    .unwrap()
                    .unwrap();
            let expected =
                Spi::get_one_with_args::<String>("SELECT $1::jsonb::text", &[text.into()])
                    .unwrap()
                    .unwrap();
            assert_eq!(printed, expected, "{text}");
            let read = Spi::get_one_with_args::<Jsonb>("SELECT $1::jsonb", &[text.into()])
                .unwrap()
                .unwrap()
                .0;
            assert_eq!(
                read,
                serde_json::from_str::<Value>(&expected).unwrap(),
                "{text}"
            );
        }
    }

    /// A value nested deeper than the stack allows is refused with Postgres's own error,
    /// not a crash of the backend: the reading recursion checks the stack at each level.
    #[pg_test(error = "stack depth limit exceeded")]
    fn jsonb_too_deep_is_refused() {
        Spi::run(
            "CREATE FUNCTION deep(n int) RETURNS jsonb LANGUAGE plpgsql AS $$
             DECLARE v jsonb := '[]';
             BEGIN FOR i IN 1..n LOOP v := jsonb_build_array(v); END LOOP; RETURN v; END $$",
        )
        .expect("deep()");
        let _ = Spi::get_one::<Jsonb>("SELECT deep(5000)");
    }

    /// jsonb has no NUL character: a string holding one is refused as jsonb_in refuses it.
    #[pg_test(error = "unsupported Unicode escape sequence")]
    fn jsonb_refuses_a_nul_character() {
        let _ =
            Spi::get_one_with_args::<String>("SELECT $1::text", &[Jsonb(json!("a\u{0}b")).into()]);
    }

    fn vector_table() {
        Spi::run(
            "CREATE SCHEMA vectors;
             CREATE TABLE vectors.tasks (id text PRIMARY KEY, version bigint NOT NULL DEFAULT 1,
                 title text, status text, tags jsonb, meta jsonb, updated_at timestamptz, points bigint);
             SELECT rowsync.enable('vectors.tasks');",
        )
        .expect("vector table");
    }

    /// The SQLSTATE of a vector's error code: rowsync's own from the catalogue, and
    /// Postgres's unique violation for a taken id.
    fn vector_code(code: &str) -> &'static str {
        match rowsync_core::codes::ALL.iter().find(|c| c.wire == code) {
            Some(c) => c.sqlstate,
            None if code == "already_exists" => "23505",
            None => "unknown vector code",
        }
    }

    fn current_rows() -> Value {
        sql_json(
            "SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY id), '[]') FROM vectors.tasks t",
            vec![],
        )
    }

    fn run_case(case: &rowsync_core::vectors::Case) -> Result<(), String> {
        Spi::run("DELETE FROM vectors.tasks").map_err(|e| e.to_string())?;
        for row in case.before["tasks"].as_array().ok_or("before.tasks")? {
            Spi::run_with_args(
                "INSERT INTO vectors.tasks SELECT * FROM jsonb_populate_record(NULL::vectors.tasks, $1)",
                &[JsonB(row.clone()).into()],
            )
            .map_err(|e| e.to_string())?;
            for _ in 1..row["version"].as_i64().unwrap_or(1) {
                Spi::run_with_args(
                    "UPDATE vectors.tasks SET id = id WHERE id = $1",
                    &[row["id"].as_str().unwrap_or_default().into()],
                )
                .map_err(|e| e.to_string())?;
            }
        }
        let before = current_rows();
        let now = sql_json("SELECT to_jsonb(now())", vec![]);
        let result = try_apply(case.tx.clone());
        match &case.expected {
            Expected::Error { code, index, field } => {
                check(
                    "error",
                    &json!([error_code(&result), result["error"]["index"]]),
                    &json!([vector_code(code), index]),
                )?;
                if let Some(field) = field {
                    check("error field", &result["error"]["field"], &json!(field))?;
                }
                check("rows after a refused transaction", &current_rows(), &before)
            }
            Expected::Applied {
                after,
                inverse,
                skipped,
            } => {
                if result.get("error").is_some() {
                    return Err(format!("unexpected error {}", result["error"]));
                }
                let actual = current_rows();
                let expected = after["tasks"].as_array().ok_or("after.tasks")?;
                check(
                    "rows",
                    &Value::Array(normalise(actual.as_array().unwrap(), &case.defaults)),
                    &with_now(&Value::Array(normalise(expected, &case.defaults)), &now),
                )?;
                check(
                    "inverse",
                    &result["inverse"],
                    &with_now(&Value::Array(inverse.clone()), &now),
                )?;
                check(
                    "skipped",
                    &result["skipped"],
                    &Value::Array(skipped.clone()),
                )
            }
        }
    }

    #[pg_test]
    fn shared_vectors() {
        vector_table();
        let mut failures = Vec::new();
        let mut count = 0;
        for (name, text) in VECTOR_FILES {
            let file = VectorFile::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            for case in &file.cases {
                count += 1;
                if let Err(e) = run_case(case) {
                    failures.push(format!("{name} / {}: {e}", case.name));
                }
            }
        }
        assert!(count > 40, "only {count} vector cases");
        assert!(
            failures.is_empty(),
            "{} of {count} failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    fn demo_table() {
        Spi::run(
            "CREATE TABLE public.items (id uuid PRIMARY KEY, board uuid, title text NOT NULL DEFAULT '',
                 done boolean, n integer, tags text[], meta jsonb, due timestamptz);
             SELECT rowsync.enable('public.items', '{board}');",
        )
        .expect("items table");
    }

    const A: &str = "00000000-0000-4000-8000-00000000000a";
    const B: &str = "00000000-0000-4000-8000-00000000000b";
    const BOARD1: &str = "00000000-0000-4000-8000-0000000000b1";
    const BOARD2: &str = "00000000-0000-4000-8000-0000000000b2";

    #[pg_test]
    fn enable_adds_version_and_is_harmless_twice() {
        Spi::run("CREATE TABLE public.plain (id bigint PRIMARY KEY, x text)").unwrap();
        Spi::run("SELECT rowsync.enable('public.plain'); SELECT rowsync.enable('public.plain');")
            .unwrap();
        let triggers = Spi::get_one::<i64>(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.plain'::regclass AND NOT tgisinternal",
        );
        assert_eq!(triggers, Ok(Some(2)));
        Spi::run(
            "INSERT INTO public.plain (id, x) VALUES (7, 'a'); UPDATE public.plain SET x = 'b'",
        )
        .unwrap();
        assert_eq!(
            Spi::get_one::<i64>("SELECT version FROM public.plain"),
            Ok(Some(2))
        );
        let result = apply(
            json!({"ops": [{"type": "set", "table": "plain", "id": 7, "key": "x", "value": "c"}]}),
        );
        assert_eq!(result["rows"][0]["version"], json!(3));
        Spi::run("SELECT rowsync.disable('public.plain')").unwrap();
        Spi::run("UPDATE public.plain SET x = 'd'").unwrap();
        assert_eq!(
            Spi::get_one::<i64>("SELECT version FROM public.plain"),
            Ok(Some(3))
        );
    }

    #[pg_test(error = "public.nokey cannot be synced: it needs a single-column primary key")]
    fn enable_refuses_tables_without_a_key() {
        Spi::run("CREATE TABLE public.nokey (a int)").unwrap();
        Spi::run("SELECT rowsync.enable('public.nokey')").unwrap();
    }

    #[pg_test(error = "public.badver cannot be synced: its version column is text, not bigint")]
    fn enable_refuses_a_version_of_another_type() {
        Spi::run("CREATE TABLE public.badver (id uuid PRIMARY KEY, version text)").unwrap();
        Spi::run("SELECT rowsync.enable('public.badver')").unwrap();
    }

    #[pg_test]
    fn apply_returns_rows_inverse_and_cursor_and_logs_scopes() {
        demo_table();
        let created = apply(
            json!({"id": "11111111-1111-4111-8111-111111111111", "ops": [
                {"type": "create", "table": "items", "id": A, "value": {"title": "t", "board": BOARD1, "tags": ["x"]}},
                {"type": "set-now", "table": "items", "id": A, "key": "due"}
            ]}),
        );
        assert_eq!(created["rows"][0]["version"], json!(1));
        assert_eq!(created["rows"][0]["row"]["tags"], json!(["x"]));
        assert!(created["rows"][0]["row"]["due"].is_string());
        assert!(created["cursor"].as_i64().is_some());
        let moved = apply(json!({"ops": [
            {"type": "set", "table": "items", "id": A, "key": "board", "value": BOARD2, "version": 1}
        ]}));
        assert_eq!(moved["rows"][0]["version"], json!(2));
        let log = sql_json(
            "SELECT jsonb_agg(jsonb_build_array(kind, version, old_scopes, new_scopes, tx_id) ORDER BY cursor)
             FROM rowsync.changes WHERE tbl = 'items'",
            vec![],
        );
        assert_eq!(
            log,
            json!([
                ["insert", 1, null, {"board": BOARD1}, "11111111-1111-4111-8111-111111111111"],
                ["update", 2, {"board": BOARD1}, {"board": BOARD2}, null]
            ])
        );
        assert_eq!(
            created["cursor"].as_i64().unwrap() + 1,
            moved["cursor"].as_i64().unwrap()
        );
    }

    #[pg_test]
    fn retried_transaction_id_returns_the_first_result() {
        demo_table();
        let tx = json!({"id": "22222222-2222-4222-8222-222222222222", "ops": [
            {"type": "create", "table": "items", "id": B, "value": {"n": 1}}
        ]});
        let first = apply(tx.clone());
        let second = apply(tx);
        assert_eq!(first, second);
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM rowsync.changes WHERE tbl = 'items'"),
            Ok(Some(1))
        );
    }

    #[pg_test]
    fn each_refusal_has_its_sqlstate() {
        demo_table();
        apply(
            json!({"ops": [{"type": "create", "table": "items", "id": A, "value": {"n": 1, "tags": ["a"]}}]}),
        );
        let cases = [
            (json!({"ops": {}}), "RS001"),
            (
                json!({"ops": [{"type": "set", "table": "items", "id": "not-a-uuid", "key": "n", "value": 1}]}),
                "RS001",
            ),
            (
                json!({"ops": [{"type": "set", "table": "items", "id": A, "key": "id", "value": B}]}),
                "RS001",
            ),
            (
                json!({"ops": [{"type": "set", "table": "nope", "id": A, "key": "n", "value": 1}]}),
                "RS002",
            ),
            (
                json!({"ops": [{"type": "set", "table": "items; DROP TABLE items", "id": A, "key": "n", "value": 1}]}),
                "RS002",
            ),
            (
                json!({"ops": [{"type": "set", "table": "items", "id": A, "key": "nope", "value": 1}]}),
                "RS003",
            ),
            (
                json!({"ops": [{"type": "set", "table": "items", "id": A, "key": "n\"; DROP TABLE items; --", "value": 1}]}),
                "RS003",
            ),
            (
                json!({"ops": [{"type": "create", "table": "items", "id": B, "value": {"bogus": 1}}]}),
                "RS003",
            ),
            (
                json!({"ops": [{"type": "set", "table": "items", "id": A, "key": "n", "value": "one"}]}),
                "RS004",
            ),
            (
                json!({"ops": [{"type": "set", "table": "items", "id": A, "key": "n", "value": 1.5}]}),
                "RS004",
            ),
            (
                json!({"ops": [{"type": "set", "table": "items", "id": A, "key": "done", "value": "yes"}]}),
                "RS004",
            ),
            (
                json!({"ops": [{"type": "set", "table": "items", "id": A, "key": "title.x", "value": 1}]}),
                "RS004",
            ),
            (
                json!({"ops": [{"type": "listInsert", "table": "items", "id": A, "key": "tags", "value": 5}]}),
                "RS004",
            ),
            (
                json!({"ops": [{"type": "listInsert", "table": "items", "id": A, "key": "title", "value": "x"}]}),
                "RS004",
            ),
            (
                json!({"ops": [{"type": "set-now", "table": "items", "id": A, "key": "n"}]}),
                "RS004",
            ),
            (
                json!({"ops": [{"type": "set", "table": "items", "id": B, "key": "n", "value": 1}]}),
                "RS404",
            ),
            (
                json!({"ops": [{"type": "set", "table": "items", "id": A, "key": "n", "value": 2, "version": 9}]}),
                "RS409",
            ),
            (
                json!({"ops": [{"type": "create", "table": "items", "id": A, "value": {}}]}),
                "23505",
            ),
        ];
        for (tx, code) in cases {
            let result = try_apply(tx.clone());
            assert_eq!(error_code(&result), code, "{tx} gave {result}");
            for field in ["message", "detail", "hint"] {
                assert!(
                    result["error"][field].is_string(),
                    "{field} missing in {result}"
                );
            }
        }
        let conflict = try_apply(
            json!({"ops": [{"type": "set", "table": "items", "id": A, "key": "n", "value": 2, "version": 9}]}),
        );
        assert_eq!(conflict["error"]["current_version"], json!(1));
        assert_eq!(
            conflict["error"]["detail"],
            json!("op 0 expected version 9, the row is at version 1")
        );
        assert_eq!(
            Spi::get_one::<i64>("SELECT version FROM public.items"),
            Ok(Some(1))
        );
    }

    #[pg_test(error = "version conflict on items:00000000-0000-4000-8000-00000000000a")]
    fn apply_raises_conflicts() {
        demo_table();
        apply(json!({"ops": [{"type": "create", "table": "items", "id": A, "value": {}}]}));
        apply(
            json!({"ops": [{"type": "set", "table": "items", "id": A, "key": "n", "value": 2, "version": 5}]}),
        );
    }

    #[pg_test]
    fn values_are_bound_not_spliced() {
        demo_table();
        let nasty = "'); DROP TABLE public.items; --";
        apply(json!({"ops": [{"type": "create", "table": "items", "id": A,
            "value": {"title": nasty, "meta": {nasty: nasty}, "tags": [nasty]}}]}));
        let row = sql_json("SELECT to_jsonb(i) FROM public.items i", vec![]);
        assert_eq!(row["title"], json!(nasty));
        assert_eq!(row["meta"], json!({nasty: nasty}));
        let quoted = apply(
            json!({"ops": [{"type": "set", "table": "items", "id": A, "key": ["meta", "a\"b"], "value": 1}]}),
        );
        assert_eq!(quoted["rows"][0]["row"]["meta"]["a\"b"], json!(1));
    }

    #[pg_test]
    fn get_returns_visible_rows_and_null_for_the_rest() {
        demo_table();
        apply(
            json!({"ops": [{"type": "create", "table": "items", "id": A, "value": {"title": "a"}}]}),
        );
        let got = sql_json(
            "SELECT rowsync.get($1)",
            vec![JsonB(
                json!([format!("items:{A}"), {"table": "items", "id": B}, "items:not-a-uuid"]),
            )
            .into()],
        );
        assert_eq!(got["rows"][0]["row"]["title"], json!("a"));
        assert_eq!(got["rows"][1]["row"], Value::Null);
        assert_eq!(got["rows"][2]["row"], Value::Null);
        let bad = sql_json("SELECT rowsync._get($1)", vec![JsonB(json!([42])).into()]);
        assert_eq!(error_code(&bad), "RS001");
    }

    #[pg_test]
    fn key_changes_and_truncate_are_logged() {
        demo_table();
        Spi::run(&format!(
            "INSERT INTO public.items (id, board) VALUES ('{A}', '{BOARD1}')"
        ))
        .unwrap();
        Spi::run(&format!("UPDATE public.items SET id = '{B}'")).unwrap();
        Spi::run("TRUNCATE public.items").unwrap();
        let log = sql_json(
            "SELECT jsonb_agg(jsonb_build_array(kind, row_id) ORDER BY cursor) FROM rowsync.changes",
            vec![],
        );
        assert_eq!(
            log,
            json!([
                ["insert", A],
                ["delete", A],
                ["insert", B],
                ["truncate", null]
            ])
        );
    }

    #[pg_test]
    fn sleeping_listeners_make_writers_notify() {
        demo_table();
        assert_eq!(
            Spi::get_one::<i64>("SELECT last_value FROM rowsync.sleepers"),
            Ok(Some(0))
        );
        Spi::run("SELECT rowsync.listener_sleep('b1'); SELECT rowsync.listener_sleep('b2')")
            .unwrap();
        assert_eq!(
            Spi::get_one::<i64>("SELECT last_value FROM rowsync.sleepers"),
            Ok(Some(2))
        );
        Spi::run("SELECT rowsync.listener_awake('b1')").unwrap();
        assert_eq!(
            Spi::get_one::<i64>("SELECT last_value FROM rowsync.sleepers"),
            Ok(Some(1))
        );
        Spi::run("SELECT rowsync.listener_forget('b2')").unwrap();
        assert_eq!(
            Spi::get_one::<i64>("SELECT last_value FROM rowsync.sleepers"),
            Ok(Some(0))
        );
    }

    #[pg_test]
    fn one_row_one_id_however_spelled() {
        demo_table();
        let upper = A.to_ascii_uppercase();
        let created = apply(
            json!({"ops": [{"type": "create", "table": "items", "id": upper, "value": {"id": upper, "n": 1}}]}),
        );
        assert_eq!(created["rows"][0]["id"], json!(A));
        let both = apply(json!({"ops": [
            {"type": "set", "table": "items", "id": upper, "key": "n", "value": 2, "version": 1},
            {"type": "set", "table": "items", "id": A, "key": "done", "value": true, "version": 1}
        ]}));
        assert_eq!(both["rows"].as_array().unwrap().len(), 1, "{both}");
        assert_eq!(both["rows"][0]["version"], json!(2));
    }

    /// Undo compares against the value as stored, not as the client spelled it.
    #[pg_test]
    fn undo_guards_hold_what_postgres_stored() {
        Spi::run("SET LOCAL TimeZone = 'UTC'").unwrap();
        demo_table();
        apply(json!({"ops": [{"type": "create", "table": "items", "id": A, "value": {}}]}));
        let set = apply(
            json!({"ops": [{"type": "set", "table": "items", "id": A, "key": "due", "value": "2030-01-01 10:00"}]}),
        );
        assert_eq!(
            set["inverse"][0]["expect"],
            json!("2030-01-01T10:00:00+00:00")
        );
        let undo = apply(json!({"ops": set["inverse"].clone()}));
        assert_eq!(undo["skipped"], json!([]));
        assert_eq!(undo["rows"][0]["row"]["due"], Value::Null);
    }

    #[pg_test]
    fn numbers_keep_their_digits() {
        demo_table();
        apply(json!({"ops": [{"type": "create", "table": "items", "id": A, "value": {}}]}));
        Spi::run(&format!("UPDATE public.items SET meta = '{{\"big\": 12345678901234567890123, \"price\": 19.90}}' WHERE id = '{A}'")).unwrap();
        apply(
            json!({"ops": [{"type": "set", "table": "items", "id": A, "key": "meta.color", "value": "red"}]}),
        );
        let meta = Spi::get_one::<String>("SELECT meta::text FROM public.items")
            .unwrap()
            .unwrap();
        assert_eq!(
            meta,
            r#"{"big": 12345678901234567890123, "color": "red", "price": 19.90}"#
        );
    }

    /// The backend caches a table's definition; ALTER TABLE makes it read it again.
    #[pg_test]
    fn a_new_column_is_seen_at_once() {
        demo_table();
        apply(json!({"ops": [{"type": "create", "table": "items", "id": A, "value": {}}]}));
        Spi::run("ALTER TABLE public.items ADD COLUMN color text").unwrap();
        let set = apply(
            json!({"ops": [{"type": "set", "table": "items", "id": A, "key": "color", "value": "red"}]}),
        );
        assert_eq!(set["rows"][0]["row"]["color"], json!("red"));
    }
}
