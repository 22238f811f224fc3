//! `rowsync.visible_rows`, the fan-out's one statement for many identities: each
//! identity sees exactly what its own policies show it, a policy that raises costs only
//! its identity, and nothing of any identity outlives the call.

use rowsync_tests::{demo, Cluster};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// A role of its own policies, beside app_user: roles are cluster-wide, so it is made
/// once, whichever test database gets there first.
const AUDITOR: &str = "DO $$ BEGIN
    CREATE ROLE rowsync_test_auditor NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;
GRANT rowsync_test_auditor TO rowsync_authenticator;";

fn task_id(n: usize) -> String {
    format!("00000000-0000-4000-8000-0000000007{n:02}")
}

#[tokio::test]
async fn each_identity_sees_what_its_own_policies_show_in_one_statement() {
    let cluster = Cluster::shared();
    let db = cluster.database("visible_rows").await;
    let admin = cluster.connect("postgres", &db).await;
    admin.batch_execute(AUDITOR).await.unwrap();
    // 25 users, more than a cursor prefetches (walrus's role leak), each a viewer of the
    // launch board with a private note on it; the auditor reads every shared task.
    admin
        .batch_execute(&format!(
            "GRANT USAGE ON SCHEMA app TO rowsync_test_auditor;
             GRANT SELECT ON app.tasks TO rowsync_test_auditor;
             CREATE POLICY auditor_read ON app.tasks FOR SELECT TO rowsync_test_auditor
                 USING (private_to IS NULL);
             INSERT INTO app.users (id, name) SELECT 'u' || n, 'User ' || n FROM generate_series(0, 24) n;
             INSERT INTO app.board_members (board_id, user_id, role)
                 SELECT '{launch}', 'u' || n, 'viewer' FROM generate_series(0, 24) n;
             INSERT INTO app.tasks (id, board_id, title, private_to)
                 SELECT ('00000000-0000-4000-8000-0000000007' || lpad(n::text, 2, '0'))::uuid,
                        '{launch}', 'note of u' || n, 'u' || n
                   FROM generate_series(0, 24) n;",
            launch = demo::LAUNCH
        ))
        .await
        .unwrap();

    let mut ids: Vec<String> = (0..25).map(task_id).collect();
    ids.push(demo::TASK_ANNOUNCE.into());
    ids.push(demo::TASK_SECRET.into());
    let tables = vec!["tasks".to_string(); ids.len()];
    let all: Vec<usize> = (0..ids.len()).collect();
    let user = |sub: &str| json!({"role": "app_user", "claims": json!({"sub": sub}).to_string(), "rows": all});
    let mut identities = vec![json!({"role": "app_anon", "claims": "{}", "rows": all})];
    identities.extend((0..25).map(|n| user(&format!("u{n}"))));
    identities.push(user("alice"));
    // Claims that are not JSON make rowsync.user_id() raise inside the policy.
    identities.push(json!({"role": "app_user", "claims": "not json", "rows": all}));
    identities.push(user("carol"));
    identities.push(json!({"role": "rowsync_test_auditor", "claims": "{}", "rows": all}));

    let mut bridge = cluster.connect("rowsync_authenticator", &db).await;
    let tx = bridge
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .unwrap();
    let rows = tx
        .query(
            "SELECT identity, row_index, data, error FROM rowsync.visible_rows($1, $2, $3)",
            &[&Value::Array(identities.clone()), &tables, &ids],
        )
        .await
        .unwrap();
    // Inside the transaction and after it, the session is the bridge's own again.
    let who: (String, String) = {
        let row = tx
            .query_one(
                "SELECT current_user::text, coalesce(current_setting('request.jwt.claims', true), '')",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(who, ("rowsync_authenticator".to_string(), String::new()));
    tx.commit().await.unwrap();
    let after: String = rowsync_tests::scalar(&bridge, "SELECT current_user::text", &[]).await;
    assert_eq!(after, "rowsync_authenticator");

    let mut seen: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    let mut errors: BTreeSet<usize> = BTreeSet::new();
    let mut data_per_role: BTreeMap<(String, String), usize> = BTreeMap::new();
    for row in &rows {
        let identity = row.get::<_, i32>(0) as usize;
        let error: Option<String> = row.get(3);
        if error.is_some() {
            errors.insert(identity);
            continue;
        }
        let index = row.get::<_, Option<i32>>(1).unwrap() as usize;
        seen.entry(identity).or_default().insert(ids[index].clone());
        let data: Option<Value> = row.get(2);
        if let Some(data) = data {
            assert_eq!(data["id"], json!(ids[index]), "data of the row asked for");
            let role = identities[identity]["role"].as_str().unwrap().to_string();
            *data_per_role.entry((role, ids[index].clone())).or_default() += 1;
        }
    }
    let anon = 0;
    let poison = 27;
    assert_eq!(
        errors,
        BTreeSet::from([anon, poison]),
        "only anon (no privilege) and the poison identity fail"
    );
    for n in 0..25 {
        assert_eq!(
            seen[&(n + 1)],
            BTreeSet::from([task_id(n), demo::TASK_ANNOUNCE.to_string()]),
            "u{n} sees its own note and the shared task, answered by its own InitPlan"
        );
    }
    assert_eq!(
        seen[&26],
        BTreeSet::from([
            demo::TASK_ANNOUNCE.to_string(),
            demo::TASK_SECRET.to_string()
        ]),
        "alice"
    );
    assert_eq!(
        seen[&28],
        BTreeSet::from([demo::TASK_ANNOUNCE.to_string()]),
        "carol, after the poison identity"
    );
    assert_eq!(
        seen[&29],
        BTreeSet::from([
            demo::TASK_ANNOUNCE.to_string(),
            demo::TASK_SECRET.to_string()
        ]),
        "the auditor, under its own role's policy"
    );
    // Each role's data comes once per row, whoever of the role saw it first.
    assert!(data_per_role.values().all(|n| *n == 1), "{data_per_role:?}");
    assert!(data_per_role.contains_key(&("app_user".into(), demo::TASK_ANNOUNCE.into())));
    assert!(
        data_per_role.contains_key(&("rowsync_test_auditor".into(), demo::TASK_ANNOUNCE.into()))
    );
    assert!(data_per_role.contains_key(&("app_user".into(), task_id(7))));
}

/// Only feed roles may call it, and it grants nothing: a role that is not a member of
/// the role an identity names cannot become it.
#[tokio::test]
async fn visible_rows_grants_nothing() {
    let cluster = Cluster::shared();
    let db = cluster.database("visible_rows_rights").await;
    let user = cluster.connect("rowsync_authenticator", &db).await;
    user.batch_execute("SET ROLE app_user").await.unwrap();
    let denied = user
        .query("SELECT * FROM rowsync.visible_rows('[]', '{}', '{}')", &[])
        .await
        .expect_err("app_user is no feed role");
    assert_eq!(rowsync_tests::sqlstate(&denied), "42501");

    let bridge = cluster.connect("rowsync_authenticator", &db).await;
    let identities = json!([{"role": "postgres", "claims": "{}", "rows": [0]}]);
    let rows = bridge
        .query(
            "SELECT identity, row_index, error FROM rowsync.visible_rows($1, $2, $3)",
            &[&identities, &vec!["tasks"], &vec![demo::TASK_SECRET]],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let error: Option<String> = rows[0].get(2);
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("permission denied")),
        "{error:?}"
    );
}

/// The fan-out's helpers that every role may call read only as their caller, and the
/// registry's visibility and access declarations are the table owner's alone.
#[tokio::test]
async fn helpers_and_declarations_give_nobody_more() {
    let cluster = Cluster::shared();
    let db = cluster.database("visible_bypass").await;
    let bob = cluster.connect("rowsync_authenticator", &db).await;
    bob.batch_execute("SET ROLE app_user; SET request.jwt.claims = '{\"sub\": \"bob\"}'")
        .await
        .unwrap();
    // The probe sees what bob sees: not Alice's secret task.
    let probed = bob
        .query(
            "SELECT row_index FROM rowsync._visible_for('{tasks,tasks}', $1, '{0,1}', '{}')",
            &[&vec![demo::TASK_SECRET, demo::TASK_ANNOUNCE]],
        )
        .await
        .unwrap();
    let seen: Vec<i32> = probed.iter().map(|r| r.get(0)).collect();
    assert_eq!(seen, [1], "only the shared task");
    // The members of Alice's private board, as bob: none.
    let members: Value = rowsync_tests::scalar(
        &bob,
        "SELECT rowsync.members('tasks', 'board_id', $1, 1000)",
        &[&demo::ALICE_NOTES],
    )
    .await;
    assert_eq!(members, json!([]));
    // A column name is checked against the scopes, never spliced as given.
    let injected = bob
        .query(
            "SELECT rowsync._scope_query('tasks', 'board_id = board_id OR true --', 'row')",
            &[],
        )
        .await
        .expect_err("not a scope");
    assert_eq!(rowsync_tests::sqlstate(&injected), "RS003");
    // Declaring another owner's table scope-visible or an access table: refused.
    let updated = bob
        .execute(
            "UPDATE rowsync.synced SET visibility = 'scope', access = true WHERE name = 'tasks'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        updated, 0,
        "row-level security hides the registry row from non-owners"
    );
    let enabled = bob
        .query(
            "SELECT rowsync.enable('app.tasks', '{board_id}', visibility => 'scope')",
            &[],
        )
        .await
        .expect_err("only the owner enables");
    assert_eq!(rowsync_tests::sqlstate(&enabled), "42501");
    let admin = cluster.connect("postgres", &db).await;
    let visibility: String = rowsync_tests::scalar(
        &admin,
        "SELECT visibility FROM rowsync.synced WHERE name = 'tasks'",
        &[],
    )
    .await;
    assert_eq!(visibility, "rls");
}
