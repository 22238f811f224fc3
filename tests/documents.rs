//! Collaborative documents in SQL: who may append and read, what is stored, and what is
//! refused (malformed, oversized, hidden, read-only), against the example app's task
//! descriptions (`rowsync.enable_doc('app.tasks', 'description')`).

use rowsync_tests::{as_user, demo, scalar, sqlstate, Cluster};
use serde_json::{json, Value};
use tokio_postgres::Client;

/// `getText('t').insert(0, 'hi')` by client 7, as Yjs encodes it.
const HI: &[u8] = &[1, 1, 7, 0, 4, 1, 1, b't', 2, b'h', b'i', 0];
/// Client 7 appending "!" after its "hi".
const BANG: &[u8] = &[1, 1, 7, 2, 0x84, 7, 1, 1, b'!', 0];

async fn append(
    client: &mut Client,
    sub: &str,
    task: &str,
    updates: &[&[u8]],
) -> Result<Option<i64>, tokio_postgres::Error> {
    let tx = rowsync_tests::app_user_tx(client, sub).await?;
    let updates: Vec<Vec<u8>> = updates.iter().map(|u| u.to_vec()).collect();
    let row = tx
        .query_one(
            "SELECT rowsync.doc_append('tasks', $1, 'description', $2)",
            &[&task, &updates],
        )
        .await?;
    tx.commit().await?;
    Ok(row.get(0))
}

async fn parts(
    client: &mut Client,
    sub: &str,
    task: &str,
) -> Result<(Option<Vec<u8>>, Vec<Vec<u8>>), tokio_postgres::Error> {
    let tx = rowsync_tests::app_user_tx(client, sub).await?;
    let row = tx
        .query_one(
            "SELECT snapshot, updates FROM rowsync.doc_parts('tasks', $1, 'description')",
            &[&task],
        )
        .await?;
    tx.commit().await?;
    Ok((
        row.get(0),
        row.get::<_, Option<Vec<Vec<u8>>>>(1).unwrap_or_default(),
    ))
}

async fn access(client: &mut Client, sub: &str, task: &str) -> Value {
    as_user(
        client,
        sub,
        "SELECT coalesce(to_jsonb(rowsync.doc_access('tasks', $1::jsonb #>> '{}', 'description')), 'null')",
        &json!(task),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn writers_append_readers_read_others_are_refused() {
    let db = Cluster::shared().database("docs_access").await;
    let mut c = rowsync_tests::authenticator(&db).await;
    let task = demo::TASK_ANNOUNCE; // on Launch: alice owns, bob edits, carol views

    assert_eq!(access(&mut c, "bob", task).await, json!("write"));
    assert_eq!(access(&mut c, "carol", task).await, json!("read"));
    assert_eq!(access(&mut c, "bob", demo::TASK_SECRET).await, Value::Null);

    let cursor = append(&mut c, "bob", task, &[HI])
        .await
        .unwrap()
        .expect("a cursor");
    append(&mut c, "alice", &task.to_uppercase(), &[BANG])
        .await
        .unwrap();
    let (snapshot, updates) = parts(&mut c, "carol", task).await.unwrap();
    assert_eq!(snapshot, None);
    assert_eq!(
        updates,
        vec![HI.to_vec(), BANG.to_vec()],
        "stored as sent, in order"
    );

    let error = append(&mut c, "carol", task, &[BANG]).await.unwrap_err();
    assert_eq!(
        sqlstate(&error),
        "42501",
        "a viewer may not edit: {error:?}"
    );
    for (who, hidden) in [
        ("bob", demo::TASK_SECRET),
        ("bob", "00000000-0000-4000-8000-0000000000ff"),
        ("bob", "not-a-uuid"),
    ] {
        let error = append(&mut c, who, hidden, &[HI]).await.unwrap_err();
        assert_eq!(sqlstate(&error), "RS404", "{hidden}: {error:?}");
        let error = parts(&mut c, who, hidden).await.unwrap_err();
        assert_eq!(sqlstate(&error), "RS404");
    }
    assert_eq!(
        parts(&mut c, "carol", task).await.unwrap().1.len(),
        2,
        "nothing was added"
    );

    // The feed carries the append as a change of kind doc, naming the column.
    let admin = Cluster::shared().connect("postgres", &db).await;
    let logged: Value = scalar(
        &admin,
        "SELECT to_jsonb(c) - 'at' - 'xid' FROM rowsync.changes c WHERE c.cursor = $1",
        &[&cursor],
    )
    .await;
    assert_eq!(logged["kind"], json!("doc"));
    assert_eq!(logged["tbl"], json!("tasks"));
    assert_eq!(logged["row_id"], json!(task));
    assert_eq!(logged["topic"], json!("description"));
    let read: Value = scalar(
        &admin,
        "SELECT to_jsonb(array_agg(jsonb_build_array(r.col, cardinality(r.updates), r.origin))) \
         FROM rowsync.read_doc_updates(ARRAY[$1::bigint]) r",
        &[&cursor],
    )
    .await;
    assert_eq!(read, json!([["description", 1, null]]));
}

#[tokio::test]
async fn bad_bytes_and_sizes_are_refused_and_change_nothing() {
    let db = Cluster::shared().database("docs_input").await;
    let mut c = rowsync_tests::authenticator(&db).await;
    let task = demo::TASK_SIGNUP;
    append(&mut c, "bob", task, &[HI]).await.unwrap();
    let mut deep = vec![1, 1, 1, 0, 8 | 0b0010_0000, 1, 1, b'm', 1, b'k', 1];
    for _ in 0..10_000 {
        deep.extend_from_slice(&[117, 1]);
    }
    deep.extend_from_slice(&[126, 0]);
    for (what, bytes) in [
        ("garbage", b"hello world".to_vec()),
        ("truncated", HI[..HI.len() - 1].to_vec()),
        ("trailing bytes", [HI, &[0]].concat()),
        ("nested 10,000 deep", deep),
    ] {
        let error = append(&mut c, "bob", task, &[BANG, &bytes])
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&error), "RS013", "{what}: {error:?}");
    }
    assert_eq!(
        append(&mut c, "bob", task, &[&[0, 0]]).await.unwrap(),
        None,
        "an empty update writes nothing"
    );

    let admin = Cluster::shared().connect("postgres", &db).await;
    admin
        .batch_execute("UPDATE rowsync.settings SET doc_max_update_bytes = 11")
        .await
        .unwrap();
    let error = append(&mut c, "bob", task, &[HI]).await.unwrap_err();
    assert_eq!(sqlstate(&error), "RS014");
    admin
        .batch_execute("UPDATE rowsync.settings SET doc_max_update_bytes = DEFAULT")
        .await
        .unwrap();
    admin
        .batch_execute("UPDATE rowsync.doc_columns SET max_bytes = 25")
        .await
        .unwrap();
    append(&mut c, "bob", task, &[BANG]).await.unwrap();
    let error = append(&mut c, "bob", task, &[HI]).await.unwrap_err();
    assert_eq!(sqlstate(&error), "RS015", "12 + 10 + 12 bytes is over 25");
    assert_eq!(
        parts(&mut c, "bob", task).await.unwrap().1,
        vec![HI.to_vec(), BANG.to_vec()]
    );

    // Not a document column, not a synced table.
    let error = as_user(
        &mut c,
        "bob",
        "SELECT to_jsonb(rowsync.doc_append('tasks', ($1::jsonb #>> '{}'), 'title', ARRAY['\\x0000'::bytea]))",
        &json!(task),
    )
    .await
    .unwrap_err();
    assert_eq!(sqlstate(&error), "RS003");
    let error = as_user(
        &mut c,
        "bob",
        "SELECT to_jsonb(rowsync.doc_append('nosuch', ($1::jsonb #>> '{}'), 'title', ARRAY['\\x0000'::bytea]))",
        &json!(task),
    )
    .await
    .unwrap_err();
    assert_eq!(sqlstate(&error), "RS002");
}

#[tokio::test]
async fn nobody_writes_the_document_tables_directly() {
    let db = Cluster::shared().database("docs_tables").await;
    let mut c = rowsync_tests::authenticator(&db).await;
    for sql in [
        "SELECT to_jsonb(count(*)) FROM rowsync.docs WHERE ($1::jsonb #>> '{}') IS NOT NULL",
        "SELECT to_jsonb(count(*)) FROM rowsync.doc_updates WHERE ($1::jsonb #>> '{}') IS NOT NULL",
        "SELECT to_jsonb(count(*)) FROM rowsync.read_doc_updates(ARRAY[1]) WHERE ($1::jsonb #>> '{}') IS NOT NULL",
    ] {
        let error = as_user(&mut c, "bob", sql, &json!("x")).await.unwrap_err();
        assert_eq!(sqlstate(&error), "42501", "{sql}");
    }
    // An append writes as the tables' owner only inside itself.
    let who = as_user(
        &mut c,
        "bob",
        "SELECT to_jsonb(current_user::text) FROM rowsync.doc_append('tasks', $1::jsonb #>> '{}', \
         'description', ARRAY['\\x010107000401017402686900'::bytea]) AS appended(cursor) \
         WHERE appended.cursor IS NOT NULL",
        &json!(demo::TASK_ANNOUNCE),
    )
    .await
    .unwrap();
    assert_eq!(who, json!("app_user"));
    let error = as_user(
        &mut c,
        "bob",
        "SELECT to_jsonb(rowsync.enable_doc('app.tasks', ($1::jsonb #>> '{}')))",
        &json!("title"),
    )
    .await
    .unwrap_err();
    assert_eq!(
        sqlstate(&error),
        "42501",
        "only the table's owner registers documents"
    );
}

/// Bob writes the task's description, then deletes the task; returns the delete's result.
async fn write_then_delete(c: &mut Client, task: &str) -> Value {
    append(c, "bob", task, &[HI]).await.unwrap();
    rowsync_tests::apply_as(
        c,
        "bob",
        json!({"ops": [{"type": "delete", "table": "tasks", "id": task}]}),
    )
    .await
    .unwrap()
}

/// Deleting the row takes the document out of reach; undoing the delete brings it back.
#[tokio::test]
async fn a_deleted_row_retires_its_document_and_undo_revives_it() {
    let db = Cluster::shared().database("docs_lifecycle").await;
    let mut c = rowsync_tests::authenticator(&db).await;
    let task = demo::TASK_VENUE;
    let deleted = write_then_delete(&mut c, task).await;
    assert_eq!(
        sqlstate(&parts(&mut c, "bob", task).await.unwrap_err()),
        "RS404"
    );
    assert_eq!(
        sqlstate(&append(&mut c, "bob", task, &[BANG]).await.unwrap_err()),
        "RS404"
    );
    rowsync_tests::apply_as(&mut c, "bob", json!({"ops": deleted["inverse"]}))
        .await
        .unwrap();
    assert_eq!(
        parts(&mut c, "carol", task).await.unwrap().1,
        vec![HI.to_vec()]
    );
}

/// Compaction: a bridge merges the log into the snapshot, and Postgres keeps the result
/// only if it carries everything it replaces.
#[tokio::test]
async fn compaction_keeps_only_snapshots_that_lose_nothing() {
    let db = Cluster::shared().database("docs_compaction").await;
    let mut c = rowsync_tests::authenticator(&db).await;
    let task = demo::TASK_ANNOUNCE;
    append(&mut c, "bob", task, &[HI]).await.unwrap();
    append(&mut c, "bob", task, &[BANG]).await.unwrap();
    let admin = Cluster::shared().connect("postgres", &db).await;
    admin
        .batch_execute(
            "UPDATE rowsync.settings SET doc_compact_updates = 2, doc_update_min_age = '0'",
        )
        .await
        .unwrap();
    // The bridge's role (granted the feed) claims the due document.
    let feed = rowsync_tests::authenticator(&db).await;
    let claimed = feed
        .query_one(
            "SELECT doc, snapshot, cursors, ns, updates FROM rowsync.doc_compaction_claim()",
            &[],
        )
        .await
        .unwrap();
    let (doc, cursors, ns): (i64, Vec<i64>, Vec<i32>) =
        (claimed.get(0), claimed.get(2), claimed.get(3));
    assert_eq!(
        claimed.get::<_, Vec<Vec<u8>>>(4),
        vec![HI.to_vec(), BANG.to_vec()]
    );
    assert!(
        feed.query("SELECT 1 FROM rowsync.doc_compaction_claim()", &[])
            .await
            .unwrap()
            .is_empty(),
        "leased: a second claim does not get it"
    );
    let finish = "SELECT rowsync.doc_compaction_finish($1, $2, $3, $4)";
    // A snapshot that dropped "!" is refused, and so is one that names another log.
    let error = feed
        .query_one(finish, &[&doc, &HI.to_vec(), &cursors, &ns])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&error), "RS016", "{error:?}");
    let merged: Vec<u8> = [&[1, 2, 7, 0][..], &HI[4..11], &BANG[4..9], &[0]].concat();
    let error = feed
        .query_one(
            finish,
            &[&doc, &merged, &vec![cursors[0] + 1000], &vec![1i32]],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&error), "RS016");
    // Each update named twice: replaced, and counted, once.
    let twice = |v: &Vec<i64>| [v.clone(), v.clone()].concat();
    let done: Value = feed
        .query_one(
            finish,
            &[
                &doc,
                &merged,
                &twice(&cursors),
                &[ns.clone(), ns.clone()].concat(),
            ],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(done, json!({"replaced": 2, "bytes": merged.len()}));
    let tail: (i64, i64) = {
        let row = admin
            .query_one(
                "SELECT tail_bytes, tail_count::bigint FROM rowsync.docs WHERE id = $1",
                &[&doc],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(tail, (0, 0), "the log's size follows what was replaced");
    let (snapshot, updates) = parts(&mut c, "carol", task).await.unwrap();
    assert_eq!((snapshot, updates), (Some(merged.clone()), vec![]));
    append(
        &mut c,
        "bob",
        task,
        &[&[1, 1, 8, 0, 4, 1, 1, b't', 1, b'x', 0]],
    )
    .await
    .unwrap();
    assert_eq!(
        parts(&mut c, "carol", task).await.unwrap().1.len(),
        1,
        "the log grows on after it"
    );
    // Only feed roles compact: neither claiming nor finishing is open to a user, who
    // could otherwise replace a document's text with a snapshot of their own.
    for sql in [
        "SELECT to_jsonb(count(*)) FROM rowsync.doc_compaction_claim() WHERE $1::jsonb IS NOT NULL",
        "SELECT rowsync.doc_compaction_finish(($1::jsonb)::text::bigint, '\\x0000', '{}', '{}')",
    ] {
        let error = as_user(&mut c, "bob", sql, &json!(doc)).await.unwrap_err();
        assert_eq!(sqlstate(&error), "42501", "{sql}");
    }
}

/// A document goes with its row: whoever re-creates a deleted row's id, other than the
/// user whose undo it is, gets an empty document, not the text that was there.
#[tokio::test]
async fn a_recreated_id_does_not_inherit_another_users_document() {
    let db = Cluster::shared().database("docs_recreate").await;
    let mut c = rowsync_tests::authenticator(&db).await;
    let task = demo::TASK_SIGNUP;
    let deleted = write_then_delete(&mut c, task).await;
    // Alice re-creates the row with the same id (she may: she owns the board).
    rowsync_tests::apply_as(&mut c, "alice", json!({"ops": deleted["inverse"]}))
        .await
        .unwrap();
    assert_eq!(
        parts(&mut c, "alice", task).await.unwrap(),
        (None, vec![]),
        "nothing inherited"
    );
    assert_eq!(parts(&mut c, "bob", task).await.unwrap(), (None, vec![]));
}

/// The same for the other ways a key leaves its row: an update that changes the key, a
/// truncate (both by bob), a dropped table. Alice, creating a row of that key then (or a
/// table given the same oid), gets an empty document.
#[tokio::test]
async fn a_key_that_leaves_its_row_takes_its_document_along() {
    let db = Cluster::shared().database("docs_key_leaves").await;
    let mut c = rowsync_tests::authenticator(&db).await;
    let admin = Cluster::shared().connect("postgres", &db).await;
    let moved = "00000000-0000-4000-8000-0000000000aa";
    let task = demo::TASK_SIGNUP;
    append(&mut c, "bob", task, &[HI]).await.unwrap();
    admin
        .batch_execute(&format!(
            "SET request.jwt.claims = '{{\"sub\": \"bob\"}}';
             DELETE FROM app.comments WHERE task_id = '{task}';
             UPDATE app.tasks SET id = '{moved}' WHERE id = '{task}';
             SET request.jwt.claims = '{{\"sub\": \"alice\"}}'"
        ))
        .await
        .unwrap();
    admin
        .batch_execute(&format!(
            "INSERT INTO app.tasks (id, board_id, title) VALUES ('{task}', '{}', 'taken over')",
            demo::LAUNCH
        ))
        .await
        .unwrap();
    assert_eq!(
        parts(&mut c, "alice", task).await.unwrap(),
        (None, vec![]),
        "a new row under a key that moved away"
    );

    append(&mut c, "bob", demo::TASK_ANNOUNCE, &[HI])
        .await
        .unwrap();
    admin
        .batch_execute(&format!(
            "SET request.jwt.claims = '{{\"sub\": \"bob\"}}';
             TRUNCATE app.tasks CASCADE;
             SET request.jwt.claims = '{{\"sub\": \"alice\"}}';
             INSERT INTO app.tasks (id, board_id, title) VALUES ('{}', '{}', 'after truncate')",
            demo::TASK_ANNOUNCE,
            demo::LAUNCH
        ))
        .await
        .unwrap();
    assert_eq!(
        parts(&mut c, "alice", demo::TASK_ANNOUNCE).await.unwrap(),
        (None, vec![]),
        "a new row after a truncate"
    );

    admin
        .batch_execute("DROP TABLE app.tasks CASCADE")
        .await
        .unwrap();
    let left: i64 = rowsync_tests::scalar(
        &admin,
        "SELECT count(*) FROM rowsync.docs WHERE tbl = 'tasks'",
        &[],
    )
    .await;
    assert_eq!(left, 0, "a dropped table's documents go with it");
}
