//! Rows pushed as each subscriber's own policies show them: a connection learns a row's
//! id only if it may read that row, a `remove` goes only to holders, a policy that raises
//! costs only its identity, and access follows access tables and policy edits.

use rowsync_tests::bridge::{token_with, Bridge, Ws};
use rowsync_tests::{demo, Cluster};
use serde_json::{json, Value};
use std::time::Duration;

fn board() -> String {
    format!("tasks?board_id={}", demo::LAUNCH)
}

const PRIVATE: &str = "00000000-0000-4000-8000-0000000000d1";

/// Subscribes to the launch board and loads it, as the client does: the rows loaded are
/// the rows held.
async fn follow_board(ws: &mut Ws) {
    let ack = ws
        .request(json!({"type": "subscribe", "keys": [board()]}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let fetched = ws
        .request(json!({"type": "fetch", "keys": [board()]}))
        .await;
    assert_eq!(fetched["type"], "records", "{fetched}");
}

async fn write(ws: &mut Ws, ops: Value) {
    let reply = ws
        .request(json!({"type": "write", "tx": {"ops": ops}}))
        .await;
    assert_eq!(reply["type"], "ack", "{reply}");
}

/// Touches a task of the board as the database owner, and waits for `ws` to receive it:
/// everything the bridge routed before has reached `ws` by then.
async fn marker(cluster: &Cluster, db: &str, ws: &mut Ws, title: &str) {
    let admin = cluster.connect("postgres", db).await;
    admin
        .execute(
            "UPDATE app.tasks SET title = $2 WHERE id = $1::text::uuid",
            &[&demo::TASK_SIGNUP, &title],
        )
        .await
        .unwrap();
    ws.wait_for_row(title, |r| r["row"]["title"] == title).await;
}

fn never_saw(ws: &Ws, id: &str) {
    for text in &ws.raw {
        assert!(!text.contains(id), "learned of {id}: {text}");
    }
}

/// A private note on a shared board, created, edited and deleted by its owner, never
/// reaches another member: not its id, version or kind, in any byte.
#[tokio::test]
async fn a_private_row_never_reaches_another_member() {
    let cluster = Cluster::shared();
    let db = cluster.database("vis_private").await;
    let bridge = Bridge::start(cluster, &db, |_| {}).await;
    let mut alice = Ws::connect(&bridge, "alice").await;
    let mut bob = Ws::connect(&bridge, "bob").await;
    follow_board(&mut alice).await;
    follow_board(&mut bob).await;
    write(
        &mut alice,
        json!([{"type": "create", "table": "tasks", "id": PRIVATE,
                "value": {"board_id": demo::LAUNCH, "title": "mine alone", "private_to": "alice"}}]),
    )
    .await;
    let created = alice
        .wait_for_row("alice's own note", |r| r["id"] == PRIVATE)
        .await;
    assert_eq!(created["op"], "upsert");
    assert_eq!(created["row"]["title"], "mine alone");
    write(
        &mut alice,
        json!([{"type": "set", "table": "tasks", "id": PRIVATE, "key": "title", "value": "edited"}]),
    )
    .await;
    write(
        &mut alice,
        json!([{"type": "delete", "table": "tasks", "id": PRIVATE}]),
    )
    .await;
    let removed = alice
        .wait_for_row("the delete, to its holder", |r| {
            r["id"] == PRIVATE && r["op"] == "remove"
        })
        .await;
    assert_eq!(removed["keys"], json!([board()]));
    marker(cluster, &db, &mut bob, "after the note").await;
    never_saw(&bob, PRIVATE);
    bridge.stop().await;
}

/// A row that becomes hidden is removed from those who held it, and nobody else hears of
/// it; deleting it then sends nothing at all.
#[tokio::test]
async fn a_row_becoming_hidden_is_removed_from_holders_only() {
    let cluster = Cluster::shared();
    let db = cluster.database("vis_hidden").await;
    let bridge = Bridge::start(cluster, &db, |_| {}).await;
    let mut alice = Ws::connect(&bridge, "alice").await;
    let mut bob = Ws::connect(&bridge, "bob").await;
    let mut carol = Ws::connect(&bridge, "carol").await;
    follow_board(&mut bob).await;
    // Carol follows without loading: she holds nothing.
    carol.subscribe(&[&board()]).await;
    write(
        &mut alice,
        json!([{"type": "set", "table": "tasks", "id": demo::TASK_ANNOUNCE, "key": "private_to", "value": "alice"}]),
    )
    .await;
    // An earlier change of the row, from before it was hidden, may still be on its way
    // (the feed routes in order): the remove is the one that counts.
    let removed = bob
        .wait_for_row("the remove", |r| {
            r["id"] == demo::TASK_ANNOUNCE && r["op"] == "remove"
        })
        .await;
    assert_eq!(
        removed,
        json!({"op": "remove", "table": "tasks", "id": demo::TASK_ANNOUNCE, "keys": [board()]})
    );
    let admin = cluster.connect("postgres", &db).await;
    admin
        .execute(
            "DELETE FROM app.tasks WHERE id = $1::text::uuid",
            &[&demo::TASK_ANNOUNCE],
        )
        .await
        .unwrap();
    let raw_before = bob.raw.len();
    marker(cluster, &db, &mut bob, "after the delete").await;
    marker(cluster, &db, &mut carol, "after the delete, carol").await;
    for text in &bob.raw[raw_before..] {
        assert!(
            !text.contains(demo::TASK_ANNOUNCE),
            "a second remove: {text}"
        );
    }
    never_saw(&carol, demo::TASK_ANNOUNCE);
    bridge.stop().await;
}

/// A token whose claims make a policy raise costs only its own connection the batch (it
/// is told to read again); everyone else receives it.
#[tokio::test]
async fn a_poison_identity_affects_only_itself() {
    let cluster = Cluster::shared();
    let db = cluster.database("vis_poison").await;
    let admin = cluster.connect("postgres", &db).await;
    admin
        .batch_execute(
            "CREATE POLICY team_check ON app.tasks AS RESTRICTIVE FOR SELECT TO app_user
                 USING (coalesce((rowsync.claims() ->> 'team')::int, 0) >= 0)",
        )
        .await
        .unwrap();
    let bridge = Bridge::start(cluster, &db, |_| {}).await;
    let mut bob = Ws::connect(&bridge, "bob").await;
    bob.subscribe(&[&board()]).await;
    let poison = token_with(json!({"sub": "carol", "role": "app_user", "team": "not a number"}));
    let mut carol = Ws::connect_url(&bridge.ws_url(Some(&poison)), None)
        .await
        .unwrap();
    // The subscribe itself checks the board, not its tasks: it succeeds.
    carol.subscribe(&[&board()]).await;
    admin
        .execute(
            "UPDATE app.tasks SET title = 'for everyone' WHERE id = $1::text::uuid",
            &[&demo::TASK_ANNOUNCE],
        )
        .await
        .unwrap();
    let row = bob
        .wait_for_row("the row, despite carol's policy error", |r| {
            r["id"] == demo::TASK_ANNOUNCE
        })
        .await;
    assert_eq!(row["row"]["title"], "for everyone");
    let resync = carol
        .wait_for("carol's resync", |f| f["type"] == "resync")
        .await;
    assert_eq!(resync["reason"], "not_checked");
    assert_eq!(resync["keys"], json!([board()]));
    assert!(
        !carol.raw.iter().any(|t| t.contains("for everyone")),
        "carol received the row"
    );
    bridge.stop().await;
}

/// Resuming, the client's digest of what it holds is checked: a matching one costs
/// nothing, and any other (a forged one) gets the complete list of rows the user may see,
/// which holds no row it may not.
#[tokio::test]
async fn a_resume_digest_gains_nothing() {
    let cluster = Cluster::shared();
    let db = cluster.database("vis_digest").await;
    let admin = cluster.connect("postgres", &db).await;
    admin
        .execute(
            "INSERT INTO app.tasks (id, board_id, title, private_to) VALUES ($1::text::uuid, $2::text::uuid, 'hidden', 'alice')",
            &[&PRIVATE, &demo::LAUNCH],
        )
        .await
        .unwrap();
    let bridge = Bridge::start(cluster, &db, |_| {}).await;
    let mut bob = Ws::connect(&bridge, "bob").await;
    let cursor = bob.subscribe(&[&board()]).await;
    drop(bob);

    let mut bob = Ws::connect(&bridge, "bob").await;
    let forged = json!({board(): "12345"});
    bob.request(json!({"type": "subscribe", "keys": [board()], "cursor": cursor, "held": forged}))
        .await;
    let members = bob.wait_for("members", |f| f["type"] == "members").await;
    assert_eq!(members["key"], board());
    let ids: Vec<&str> = members["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            demo::TASK_ANNOUNCE,
            demo::TASK_SIGNUP,
            "00000000-0000-4000-8000-000000000003"
        ]
    );
    never_saw(&bob, PRIVATE);

    // The digest of exactly those rows: no members message.
    let digest = rowsync_bridge::protocol::members_digest(
        members["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r[0].as_str().unwrap(), r[1].as_i64().unwrap())),
    );
    let mut again = Ws::connect(&bridge, "bob").await;
    again
        .request(json!({"type": "subscribe", "keys": [board()], "cursor": cursor, "held": {board(): digest}}))
        .await;
    marker(cluster, &db, &mut again, "after the resume").await;
    assert!(
        !again.kept().iter().any(|f| f["type"] == "members"),
        "{:?}",
        again.kept()
    );
    bridge.stop().await;
}

/// A change to an access table (board memberships) re-checks access at once, without
/// waiting for the periodic check; an edited policy takes effect within that check.
#[tokio::test]
async fn access_follows_access_tables_and_policy_edits() {
    let cluster = Cluster::shared();
    let db = cluster.database("vis_access").await;
    let bridge = Bridge::start(cluster, &db, |c| {
        c.reauthorize = Duration::from_secs(3600);
    })
    .await;
    let mut carol = Ws::connect(&bridge, "carol").await;
    follow_board(&mut carol).await;
    let admin = cluster.connect("postgres", &db).await;
    let started = std::time::Instant::now();
    admin
        .execute(
            "DELETE FROM app.board_members WHERE board_id = $1::text::uuid AND user_id = 'carol'",
            &[&demo::LAUNCH],
        )
        .await
        .unwrap();
    let revoked = carol
        .wait_for("revoked by the membership change", |f| {
            f["type"] == "revoked"
        })
        .await;
    assert_eq!(revoked["keys"], json!([board()]));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not the hourly check"
    );
    bridge.stop().await;

    let bridge = Bridge::start(cluster, &db, |c| {
        c.reauthorize = Duration::from_millis(200);
    })
    .await;
    let mut bob = Ws::connect(&bridge, "bob").await;
    follow_board(&mut bob).await;
    admin
        .batch_execute(
            "ALTER POLICY boards_read ON app.boards
                 USING (id IN (SELECT app.boards_of('{owner,editor,viewer}'))
                        AND (SELECT rowsync.user_id()) <> 'bob')",
        )
        .await
        .unwrap();
    let revoked = bob
        .wait_for("revoked by the policy edit", |f| f["type"] == "revoked")
        .await;
    assert_eq!(revoked["keys"], json!([board()]));
    bridge.stop().await;
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

/// `visibility => 'scope'`: a scope's rows go to its followers as two of them see them.
/// A declaration the policies contradict is caught when the two disagree: the row is then
/// checked for each follower, nothing hidden goes out, and the metric counts it.
#[tokio::test]
async fn scope_visibility_serves_followers_and_catches_a_false_declaration() {
    let cluster = Cluster::shared();
    let db = cluster.database("vis_scope").await;
    let admin = cluster.connect("postgres", &db).await;
    let refused = admin
        .batch_execute("SELECT rowsync.enable('app.users', visibility => 'scope')")
        .await
        .expect_err("scope visibility needs a scope column");
    assert_eq!(rowsync_tests::sqlstate(&refused), "RS001");
    admin
        .batch_execute("SELECT rowsync.enable('app.tasks', '{board_id}', visibility => 'scope')")
        .await
        .unwrap();
    let bridge = Bridge::start(cluster, &db, |_| {}).await;
    let mut alice = Ws::connect(&bridge, "alice").await;
    let mut bob = Ws::connect(&bridge, "bob").await;
    follow_board(&mut alice).await;
    follow_board(&mut bob).await;
    marker(cluster, &db, &mut bob, "for every follower").await;
    alice
        .wait_for_row("the same row, for alice", |r| {
            r["row"]["title"] == "for every follower"
        })
        .await;
    let (_, metrics) = bridge.http("GET", "/metrics", None, "").await;
    assert_eq!(metric(&metrics, "rowsync_scope_mode_violations_total"), 0);

    write(
        &mut alice,
        json!([{"type": "create", "table": "tasks", "id": PRIVATE,
                "value": {"board_id": demo::LAUNCH, "title": "mine alone", "private_to": "alice"}}]),
    )
    .await;
    alice
        .wait_for_row("alice's note, checked for her", |r| r["id"] == PRIVATE)
        .await;
    marker(cluster, &db, &mut bob, "after the note").await;
    never_saw(&bob, PRIVATE);
    let (_, metrics) = bridge.http("GET", "/metrics", None, "").await;
    assert!(
        metric(&metrics, "rowsync_scope_mode_violations_total") >= 1,
        "{metrics}"
    );
    bridge.stop().await;
}

/// A table key (`tasks`) follows every row of the table the user may see: rows it may not
/// see are neither listed nor pushed.
#[tokio::test]
async fn a_table_subscription_follows_every_visible_row() {
    let cluster = Cluster::shared();
    let db = cluster.database("vis_table").await;
    let bridge = Bridge::start(cluster, &db, |_| {}).await;
    let mut bob = Ws::connect(&bridge, "bob").await;
    let ack = bob
        .request(json!({"type": "subscribe", "keys": ["tasks"]}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let fetched = bob
        .request(json!({"type": "fetch", "keys": ["tasks"]}))
        .await;
    let ids: Vec<&str> = fetched["scopes"][0]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            demo::TASK_ANNOUNCE,
            demo::TASK_SIGNUP,
            "00000000-0000-4000-8000-000000000003",
            demo::TASK_MILK
        ]
    );
    let refused = bob
        .request(json!({"type": "subscribe", "keys": ["nosuch"]}))
        .await;
    assert_eq!(refused["error"]["code"], "table_not_synced", "{refused}");

    let admin = cluster.connect("postgres", &db).await;
    for (id, title) in [
        (demo::TASK_SECRET, "still secret"),
        (demo::TASK_MILK, "oat milk"),
    ] {
        admin
            .execute(
                "UPDATE app.tasks SET title = $2 WHERE id = $1::text::uuid",
                &[&id, &title],
            )
            .await
            .unwrap();
    }
    // The feed replays from its start tick, in order: the demo's own insert of the row
    // may come first; the update is the one that counts.
    let milk = bob
        .wait_for_row("a row of the table", |r| {
            r["id"] == demo::TASK_MILK && r["row"]["title"] == "oat milk"
        })
        .await;
    assert_eq!(milk["keys"], json!(["tasks"]));
    never_saw(&bob, demo::TASK_SECRET);
    bridge.stop().await;
}

/// A table key needs SELECT on the table: a synced table the user's role may not read
/// cannot be followed, fetched or joined as a room.
#[tokio::test]
async fn a_table_the_role_may_not_read_cannot_be_followed() {
    let cluster = Cluster::shared();
    let db = cluster.database("vis_table_rights").await;
    let admin = cluster.connect("postgres", &db).await;
    admin
        .batch_execute(
            "CREATE TABLE app.audit (id text PRIMARY KEY, note text);
             SELECT rowsync.enable('app.audit');
             INSERT INTO app.audit (id, note) VALUES ('a1', 'not for users');",
        )
        .await
        .unwrap();
    let bridge = Bridge::start(cluster, &db, |_| {}).await;
    let mut bob = Ws::connect(&bridge, "bob").await;
    let refused = bob
        .request(json!({"type": "subscribe", "keys": ["audit"]}))
        .await;
    assert_eq!(refused["error"]["code"], "not_found", "{refused}");
    let joined = bob
        .request(json!({"type": "presence", "action": "join", "room": "audit", "state": {}}))
        .await;
    assert_eq!(joined["error"]["code"], "not_found", "{joined}");
    let fetched = bob
        .request(json!({"type": "fetch", "keys": ["audit"]}))
        .await;
    assert_eq!(fetched["error"]["code"], "permission_denied", "{fetched}");
    never_saw(&bob, "not for users");
    bridge.stop().await;
}
