//! Row-level security: a user cannot read, create, change or delete what the policies
//! deny, a denied write changes nothing, and errors do not tell hidden rows from missing.

use rowsync_tests::{apply_as, as_user, demo, scalar, sqlstate, Cluster};
use serde_json::{json, Value};

const MISSING: &str = "00000000-0000-4000-8000-0000000000ff";

async fn task_as_admin(db: &str, id: &str) -> Value {
    let admin = Cluster::shared().connect("postgres", db).await;
    scalar(
        &admin,
        "SELECT to_jsonb(t) FROM app.tasks t WHERE id = $1::text::uuid",
        &[&id],
    )
    .await
}

#[tokio::test]
async fn hidden_rows_read_as_missing() {
    let db = Cluster::shared().database("rls_read").await;
    let mut bob = rowsync_tests::authenticator(&db).await;
    let pointers = json!([
        format!("tasks:{}", demo::TASK_SECRET),
        format!("tasks:{MISSING}"),
        format!("tasks:{}", demo::TASK_MILK)
    ]);
    let got = as_user(&mut bob, "bob", "SELECT rowsync.get($1)", &pointers)
        .await
        .unwrap();
    assert_eq!(got["rows"][0]["row"], Value::Null);
    assert_eq!(got["rows"][1]["row"], Value::Null);
    assert_eq!(got["rows"][2]["row"]["title"], json!("Buy milk"));
    let listed = as_user(&mut bob, "bob", "SELECT to_jsonb(array_agg(title ORDER BY title)) FROM app.tasks WHERE $1::jsonb IS NOT NULL", &json!(1))
        .await
        .unwrap();
    assert!(!listed
        .as_array()
        .unwrap()
        .contains(&json!("Alice's secret plan")));
}

/// Changing or deleting a hidden row fails exactly as for a row that does not exist.
#[tokio::test]
async fn errors_do_not_reveal_hidden_rows() {
    let db = Cluster::shared().database("rls_errors").await;
    let mut bob = rowsync_tests::authenticator(&db).await;
    for op in [
        json!({"type": "set", "key": "title", "value": "mine now"}),
        json!({"type": "delete"}),
        json!({"type": "listInsert", "key": "tags", "value": "x"}),
    ] {
        let mut messages = Vec::new();
        for id in [demo::TASK_SECRET, MISSING] {
            let mut op = op.clone();
            op["table"] = json!("tasks");
            op["id"] = json!(id);
            let error = apply_as(&mut bob, "bob", json!({"ops": [op]}))
                .await
                .expect_err("hidden");
            let db_error = error.as_db_error().unwrap();
            assert_eq!(db_error.code().code(), "RS404");
            messages.push(
                format!(
                    "{} / {:?} / {:?}",
                    db_error.message(),
                    db_error.detail(),
                    db_error.hint()
                )
                .replace(id, "ID"),
            );
        }
        assert_eq!(
            messages[0], messages[1],
            "hidden and missing rows answer alike"
        );
    }
    let secret = task_as_admin(&db, demo::TASK_SECRET).await;
    assert_eq!(secret["title"], json!("Alice's secret plan"));
    assert_eq!(secret["version"], json!(1));
}

#[tokio::test]
async fn creating_where_policies_deny_changes_nothing() {
    let db = Cluster::shared().database("rls_create").await;
    let mut bob = rowsync_tests::authenticator(&db).await;
    let new_id = "00000000-0000-4000-8000-0000000000a1";
    let tx = json!({"ops": [
        {"type": "set", "table": "tasks", "id": demo::TASK_MILK, "key": "status", "value": "done"},
        {"type": "create", "table": "tasks", "id": new_id, "value": {"board_id": demo::ALICE_NOTES, "title": "sneaky"}}
    ]});
    let error = apply_as(&mut bob, "bob", tx)
        .await
        .expect_err("denied by WITH CHECK");
    assert_eq!(sqlstate(&error), "42501");
    let admin = Cluster::shared().connect("postgres", &db).await;
    let count: i64 = scalar(
        &admin,
        "SELECT count(*) FROM app.tasks WHERE id = $1::text::uuid",
        &[&new_id],
    )
    .await;
    assert_eq!(count, 0);
    // The op before it in the same transaction was rolled back too.
    assert_eq!(
        task_as_admin(&db, demo::TASK_MILK).await["status"],
        json!("todo")
    );
}

#[tokio::test]
async fn moving_a_task_to_a_board_you_cannot_edit_is_denied() {
    let db = Cluster::shared().database("rls_move").await;
    let mut bob = rowsync_tests::authenticator(&db).await;
    let tx = json!({"ops": [{"type": "set", "table": "tasks", "id": demo::TASK_ANNOUNCE, "key": "board_id", "value": demo::ALICE_NOTES}]});
    let error = apply_as(&mut bob, "bob", tx).await.expect_err("WITH CHECK");
    assert_eq!(sqlstate(&error), "42501");
    assert_eq!(
        task_as_admin(&db, demo::TASK_ANNOUNCE).await["board_id"],
        json!(demo::LAUNCH)
    );
}

/// A viewer sees the task, so being told "denied" reveals nothing; nothing changes.
#[tokio::test]
async fn viewers_read_but_cannot_write() {
    let db = Cluster::shared().database("rls_viewer").await;
    let mut carol = rowsync_tests::authenticator(&db).await;
    let got = as_user(
        &mut carol,
        "carol",
        "SELECT rowsync.get($1)",
        &json!([format!("tasks:{}", demo::TASK_ANNOUNCE)]),
    )
    .await
    .unwrap();
    assert_eq!(
        got["rows"][0]["row"]["title"],
        json!("Write the announcement")
    );
    for op in [
        json!({"type": "set", "table": "tasks", "id": demo::TASK_ANNOUNCE, "key": "title", "value": "x"}),
        json!({"type": "delete", "table": "tasks", "id": demo::TASK_ANNOUNCE}),
    ] {
        let error = apply_as(&mut carol, "carol", json!({"ops": [op]}))
            .await
            .expect_err("viewer");
        assert_eq!(sqlstate(&error), "42501");
    }
    let task = task_as_admin(&db, demo::TASK_ANNOUNCE).await;
    assert_eq!(
        (task["title"].clone(), task["version"].clone()),
        (json!("Write the announcement"), json!(1))
    );
    // Carol may comment on what she can see, as herself only.
    let comment = json!({"ops": [{"type": "create", "table": "comments", "id": "00000000-0000-4000-8000-0000000000c9",
        "value": {"task_id": demo::TASK_ANNOUNCE, "author_id": "carol", "body": "Looks good"}}]});
    assert!(apply_as(&mut carol, "carol", comment).await.is_ok());
    let forged = json!({"ops": [{"type": "create", "table": "comments", "id": "00000000-0000-4000-8000-0000000000ca",
        "value": {"task_id": demo::TASK_ANNOUNCE, "author_id": "alice", "body": "I'm Alice"}}]});
    assert_eq!(
        sqlstate(&apply_as(&mut carol, "carol", forged).await.unwrap_err()),
        "42501"
    );
}

#[tokio::test]
async fn editors_write_and_versions_grow() {
    let db = Cluster::shared().database("rls_editor").await;
    let mut bob = rowsync_tests::authenticator(&db).await;
    let result = apply_as(&mut bob, "bob", json!({"ops": [
        {"type": "set", "table": "tasks", "id": demo::TASK_ANNOUNCE, "key": "status", "value": "doing", "version": 1},
        {"type": "listInsert", "table": "tasks", "id": demo::TASK_ANNOUNCE, "key": "tags", "value": "urgent", "position": "prepend"}
    ]})).await.unwrap();
    assert_eq!(result["rows"][0]["version"], json!(2));
    assert_eq!(
        result["rows"][0]["row"]["tags"],
        json!(["urgent", "writing"])
    );
}

/// Stored results of idempotent retries belong to their user.
#[tokio::test]
async fn another_users_transaction_id_is_refused() {
    let db = Cluster::shared().database("rls_txid").await;
    let mut bob = rowsync_tests::authenticator(&db).await;
    let mut alice = rowsync_tests::authenticator(&db).await;
    let id = "33333333-3333-4333-8333-333333333333";
    let tx = |title: &str| json!({"id": id, "ops": [{"type": "set", "table": "tasks", "id": demo::TASK_ANNOUNCE, "key": "title", "value": title}]});
    apply_as(&mut bob, "bob", tx("bob's")).await.unwrap();
    let error = apply_as(&mut alice, "alice", tx("alice's"))
        .await
        .expect_err("same id, other user");
    assert_eq!(sqlstate(&error), "23505");
    assert!(!error.as_db_error().unwrap().message().contains("bob"));
    assert_eq!(
        task_as_admin(&db, demo::TASK_ANNOUNCE).await["title"],
        json!("bob's")
    );
}

/// The policy helpers are inlined: a policy that calls rowsync.user_id() reads the setting
/// directly instead of calling a function per row, and the demo's membership check runs
/// once per statement.
#[tokio::test]
async fn policy_helpers_are_inlined_and_run_once_per_statement() {
    let cluster = Cluster::shared();
    let db = cluster.database("rls_inline").await;
    let admin = cluster.connect("postgres", &db).await;
    let plan = |sql: &'static str| {
        let admin = &admin;
        async move {
            admin
                .query(sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    for helper in ["rowsync.user_id()", "rowsync.claims()"] {
        let text = match helper {
            "rowsync.user_id()" => plan(
                "EXPLAIN (VERBOSE, COSTS OFF) SELECT 1 FROM app.users WHERE id = rowsync.user_id()",
            )
            .await,
            _ => plan("EXPLAIN (VERBOSE, COSTS OFF) SELECT rowsync.claims() FROM app.users").await,
        };
        assert!(text.contains("current_setting"), "{helper} inlined: {text}");
        assert!(!text.contains("rowsync."), "{helper} inlined: {text}");
    }
    admin
        .batch_execute(r#"SET ROLE app_user; SET request.jwt.claims = '{"sub": "bob"}'"#)
        .await
        .unwrap();
    let text = plan("EXPLAIN (COSTS OFF) SELECT * FROM app.tasks").await;
    assert!(
        text.contains("hashed SubPlan"),
        "membership once per statement: {text}"
    );
}

/// Reactions: whoever sees a comment reacts to it, both of two reactions at once count,
/// and nobody changes another user's reaction, or a comment that is not theirs.
#[tokio::test]
async fn reactions_are_each_users_own() {
    const COMMENT: &str = "00000000-0000-4000-8000-0000000000c1"; // bob's, on the Launch board
    let db = Cluster::shared().database("rls_reactions").await;
    let mut alice = rowsync_tests::authenticator(&db).await;
    let mut carol = rowsync_tests::authenticator(&db).await;
    let react = |kind: &str, emoji: &str, user: &str| {
        json!({"ops": [{"type": kind, "table": "comments", "id": COMMENT,
                        "key": ["reactions", emoji], "value": user}]})
    };
    apply_as(&mut alice, "alice", react("listInsert", "👍", "alice"))
        .await
        .expect("alice reacts");
    apply_as(&mut carol, "carol", react("listInsert", "👍", "carol"))
        .await
        .expect("carol, a viewer, reacts");
    let admin = Cluster::shared().connect("postgres", &db).await;
    let reactions = || async {
        scalar::<Value>(
            &admin,
            "SELECT reactions FROM app.comments WHERE id = $1::text::uuid",
            &[&COMMENT],
        )
        .await
    };
    assert_eq!(reactions().await, json!({"👍": ["alice", "carol"]}));

    let refusals = [
        (
            "a reaction in another's name",
            react("listInsert", "🎉", "alice"),
        ),
        (
            "removing another's reaction",
            react("listRemove", "👍", "alice"),
        ),
        (
            "editing another's comment",
            json!({"ops": [{"type": "set", "table": "comments", "id": COMMENT, "key": "body", "value": "carol was here"}]}),
        ),
        (
            "replacing the reactions",
            json!({"ops": [{"type": "set", "table": "comments", "id": COMMENT, "key": "reactions", "value": {"👍": ["carol"]}}]}),
        ),
    ];
    for (what, tx) in refusals {
        let error = apply_as(&mut carol, "carol", tx).await.expect_err(what);
        assert_eq!(sqlstate(&error), "42501", "{what}: {error:?}");
    }
    let error = apply_as(
        &mut carol,
        "carol",
        json!({"ops": [{"type": "set", "table": "comments", "id": COMMENT, "key": "reactions", "value": {"👍": "carol"}}]}),
    )
    .await
    .expect_err("not a list");
    assert_eq!(sqlstate(&error), "22023");
    assert_eq!(
        reactions().await,
        json!({"👍": ["alice", "carol"]}),
        "nothing changed"
    );

    apply_as(&mut carol, "carol", react("listRemove", "👍", "carol"))
        .await
        .expect("carol takes hers back");
    assert_eq!(reactions().await, json!({"👍": ["alice"]}));
    let mut bob = rowsync_tests::authenticator(&db).await;
    apply_as(
        &mut bob,
        "bob",
        json!({"ops": [{"type": "set", "table": "comments", "id": COMMENT, "key": "body", "value": "Repro: submit twice, fast."}]}),
    )
    .await
    .expect("the author edits");
}
