//! Bad input: malformed JSON of every shape, limits, and injection attempts through table,
//! key, id and value. Each gets its own error; nothing is written.

use rowsync_tests::{apply_as, demo, scalar, sqlstate, Cluster};
use serde_json::{json, Value};

async fn refused(db: &str, tx: Value) -> (String, String) {
    let mut bob = rowsync_tests::authenticator(db).await;
    let error = apply_as(&mut bob, "bob", tx.clone())
        .await
        .expect_err(&tx.to_string());
    let detail = error
        .as_db_error()
        .and_then(|e| e.detail())
        .unwrap_or_default()
        .to_string();
    (sqlstate(&error), detail)
}

#[tokio::test]
async fn malformed_json_is_refused_by_postgres() {
    let db = Cluster::shared().database("input_json").await;
    let client = rowsync_tests::authenticator(&db).await;
    for text in ["{bad", "", "{\"ops\": [}", "[1,", "nul"] {
        let error = client
            .query_one("SELECT rowsync.apply($1::text::jsonb)", &[&text])
            .await
            .expect_err(text);
        assert_eq!(sqlstate(&error), "22P02", "{text}");
    }
}

#[tokio::test]
async fn every_shape_of_wrong_transaction_names_its_field() {
    let db = Cluster::shared().database("input_shapes").await;
    let set = |extra: Value| {
        let mut op = json!({"type": "set", "table": "tasks", "id": demo::TASK_MILK, "key": "title", "value": "x"});
        for (k, v) in extra.as_object().unwrap() {
            op[k] = v.clone();
        }
        op
    };
    let cases = [
        (json!(null), "field \"transaction\""),
        (json!([]), "field \"transaction\""),
        (json!("ops"), "field \"transaction\""),
        (json!(42), "field \"transaction\""),
        (json!({}), "field \"ops\""),
        (json!({"ops": {}}), "field \"ops\""),
        (json!({"ops": [], "id": "x"}), "field \"id\""),
        (
            json!({"ops": [set(json!({}))], "surprise": 1}),
            "field \"surprise\"",
        ),
        (
            json!({"ops": [set(json!({})), set(json!({})), 7]}),
            "op 2, field \"op\"",
        ),
        (
            json!({"ops": [set(json!({"type": null}))]}),
            "op 0, field \"type\"",
        ),
        (
            json!({"ops": [set(json!({"table": ["tasks"]}))]}),
            "op 0, field \"table\"",
        ),
        (
            json!({"ops": [set(json!({"id": {"$gt": ""}}))]}),
            "op 0, field \"id\"",
        ),
        (
            json!({"ops": [set(json!({"id": "not-a-uuid"}))]}),
            "op 0, field \"id\"",
        ),
        (
            json!({"ops": [set(json!({"key": {"a": 1}}))]}),
            "op 0, field \"key\"",
        ),
        (
            json!({"ops": [set(json!({"key": "title..x"}))]}),
            "op 0, field \"key\"",
        ),
        (
            json!({"ops": [set(json!({"version": "1"}))]}),
            "op 0, field \"version\"",
        ),
        (
            json!({"ops": [set(json!({"position": "append"}))]}),
            "op 0, field \"position\"",
        ),
    ];
    for (tx, detail) in cases {
        let (code, actual) = refused(&db, tx.clone()).await;
        assert_eq!((code.as_str(), actual.as_str()), ("RS001", detail), "{tx}");
    }
}

#[tokio::test]
async fn limits_are_settings() {
    let db = Cluster::shared().database("input_limits").await;
    let admin = Cluster::shared().connect("postgres", &db).await;
    admin
        .batch_execute("UPDATE rowsync.settings SET max_ops = 2")
        .await
        .unwrap();
    let op = json!({"type": "set", "table": "tasks", "id": demo::TASK_MILK, "key": "title", "value": "x"});
    let (code, detail) = refused(&db, json!({"ops": [op.clone(), op.clone(), op]})).await;
    assert_eq!((code.as_str(), detail.as_str()), ("RS001", "field \"ops\""));
}

#[tokio::test]
async fn injection_attempts_are_names_that_do_not_exist_or_values_stored_verbatim() {
    let db = Cluster::shared().database("input_injection").await;
    let milk = demo::TASK_MILK;
    for (tx, code) in [
        (
            json!({"ops": [{"type": "set", "table": "tasks; DROP TABLE app.tasks", "id": milk, "key": "title", "value": 1}]}),
            "RS002",
        ),
        (
            json!({"ops": [{"type": "set", "table": "app.tasks\"--", "id": milk, "key": "title", "value": 1}]}),
            "RS002",
        ),
        (
            json!({"ops": [{"type": "set", "table": "tasks", "id": milk, "key": "title\" = 'x', \"status", "value": "x"}]}),
            "RS003",
        ),
        (
            json!({"ops": [{"type": "set", "table": "tasks", "id": "' OR '1'='1", "key": "title", "value": "x"}]}),
            "RS001",
        ),
        (
            json!({"ops": [{"type": "create", "table": "tasks", "id": "00000000-0000-4000-8000-0000000000d1",
            "value": {"board_id": demo::BOB_ERRANDS, "title)": "x"}}]}),
            "RS003",
        ),
        (
            json!({"ops": [{"type": "set", "table": "tasks", "id": milk, "key": "rank", "value": "1; DROP TABLE app.tasks"}]}),
            "RS004",
        ),
    ] {
        let (actual, _) = refused(&db, tx.clone()).await;
        assert_eq!(actual, code, "{tx}");
    }
    let nasty = "Robert'); DROP TABLE app.tasks; -- $1 %s \\";
    let mut bob = rowsync_tests::authenticator(&db).await;
    let result = apply_as(
        &mut bob,
        "bob",
        json!({"ops": [
            {"type": "set", "table": "tasks", "id": milk, "key": "title", "value": nasty},
            {"type": "listInsert", "table": "tasks", "id": milk, "key": "tags", "value": nasty},
            {"type": "set", "table": "tasks", "id": milk, "key": ["meta", nasty], "value": nasty}
        ]}),
    )
    .await
    .unwrap();
    let row = &result["rows"][0]["row"];
    assert_eq!(row["title"], json!(nasty));
    assert_eq!(row["tags"], json!([nasty]));
    assert_eq!(row["meta"][nasty], json!(nasty));
    let admin = Cluster::shared().connect("postgres", &db).await;
    let count: i64 = scalar(&admin, "SELECT count(*) FROM app.tasks", &[]).await;
    assert_eq!(count, 5, "the table is still there with every row");
}

#[tokio::test]
async fn wrong_types_for_columns() {
    let db = Cluster::shared().database("input_types").await;
    let milk = demo::TASK_MILK;
    for (key, value, code) in [
        ("rank", json!("high"), "RS004"),
        ("rank", json!(true), "RS004"),
        ("tags", json!("a,b"), "RS004"),
        ("tags", json!([1, 2]), "RS004"),
        ("title", json!({"a": 1}), "RS004"),
        ("updated_at", json!(5), "RS004"),
        ("updated_at", json!("not a date"), "22007"),
        ("status", json!("blocked"), "23514"),
        ("title", json!(null), "23502"),
    ] {
        let tx = json!({"ops": [{"type": "set", "table": "tasks", "id": milk, "key": key, "value": value}]});
        let (actual, _) = refused(&db, tx).await;
        assert_eq!(actual, code, "{key} = {value}");
    }
}

/// A backend caches the settings and the registry for `apply`: a change made in another
/// session reaches it at its next transaction, never later.
#[tokio::test]
async fn a_backend_that_cached_the_context_sees_changes_at_once() {
    let db = Cluster::shared().database("input_cached_context").await;
    let admin = Cluster::shared().connect("postgres", &db).await;
    let mut bob = rowsync_tests::authenticator(&db).await;
    let op = json!({"type": "set", "table": "tasks", "id": demo::TASK_MILK, "key": "title", "value": "x"});
    let three = json!({"ops": [op.clone(), op.clone(), op.clone()]});
    rowsync_tests::apply_as(&mut bob, "bob", three.clone())
        .await
        .expect("cached now");
    admin
        .batch_execute("UPDATE rowsync.settings SET max_ops = 2")
        .await
        .unwrap();
    let error = rowsync_tests::apply_as(&mut bob, "bob", three.clone())
        .await
        .unwrap_err();
    assert_eq!(
        rowsync_tests::sqlstate(&error),
        "RS001",
        "the new limit, in the caching backend"
    );
    admin
        .batch_execute("UPDATE rowsync.settings SET max_ops = DEFAULT")
        .await
        .unwrap();
    rowsync_tests::apply_as(&mut bob, "bob", three)
        .await
        .expect("and back");

    admin
        .batch_execute("UPDATE rowsync.synced SET name = 'todo' WHERE name = 'tasks'")
        .await
        .unwrap();
    let error = rowsync_tests::apply_as(&mut bob, "bob", json!({"ops": [op]}))
        .await
        .unwrap_err();
    assert_eq!(
        rowsync_tests::sqlstate(&error),
        "RS002",
        "the old name is gone"
    );
    let renamed = json!({"ops": [{"type": "set", "table": "todo", "id": demo::TASK_MILK, "key": "title", "value": "y"}]});
    rowsync_tests::apply_as(&mut bob, "bob", renamed)
        .await
        .expect("the new name works");
}

/// A cached table is named by schema: renaming the schema, and creating another of the old
/// name with a table of the same name, must not redirect a caching backend's writes.
#[tokio::test]
async fn a_renamed_schema_does_not_redirect_a_cached_table() {
    let db = Cluster::shared().database("input_schema_rename").await;
    let cached = Cluster::shared().connect("postgres", &db).await;
    let admin = Cluster::shared().connect("postgres", &db).await;
    let set = |title: &str| json!({"ops": [{"type": "set", "table": "tasks", "id": demo::TASK_MILK, "key": "title", "value": title}]});
    cached
        .query_one("SELECT rowsync.apply($1)", &[&set("before")])
        .await
        .expect("cached now");
    admin
        .batch_execute(
            "ALTER SCHEMA app RENAME TO app_moved;
             CREATE SCHEMA app;
             CREATE TABLE app.tasks (id uuid PRIMARY KEY, title text, version bigint NOT NULL DEFAULT 1);
             INSERT INTO app.tasks (id, title) VALUES ('00000000-0000-4000-8000-000000000005', 'decoy');",
        )
        .await
        .unwrap();
    cached
        .query_one("SELECT rowsync.apply($1)", &[&set("after")])
        .await
        .expect("applies to the synced table");
    let real: String = rowsync_tests::scalar(
        &admin,
        "SELECT title FROM app_moved.tasks WHERE id = $1::text::uuid",
        &[&demo::TASK_MILK],
    )
    .await;
    let decoy: String = rowsync_tests::scalar(
        &admin,
        "SELECT title FROM app.tasks WHERE id = $1::text::uuid",
        &[&demo::TASK_MILK],
    )
    .await;
    assert_eq!((real.as_str(), decoy.as_str()), ("after", "decoy"));
}
