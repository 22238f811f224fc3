//! Compaction: every `doc_compact_interval_ms`, merges the logs of documents that are due
//! into their snapshots. The bridge merges (yrs, structurally, on a blocking thread);
//! Postgres accepts a result only if it provably loses nothing
//! (`rowsync.doc_compaction_finish`), so a merge bug is refused, not stored.

use crate::errors::Error;
use crate::state::AppState;
use std::sync::Arc;
use tokio::sync::watch;

/// Documents claimed per round.
const PER_ROUND: i32 = 4;

pub async fn run(state: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    if state.config.doc_compact_interval.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(state.config.doc_compact_interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        match compact(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(documents = n, "compacted"),
            Err(e) => tracing::warn!(code = e.body.code, error = %e.body.message, "compaction"),
        }
    }
}

/// One round: claims due documents, merges each, hands the result to Postgres. Returns
/// how many were compacted.
pub async fn compact(state: &AppState) -> Result<usize, Error> {
    let client = state.pool.get().await?;
    let rows = client
        .query(
            "SELECT doc, snapshot, cursors, ns, updates FROM rowsync.doc_compaction_claim($1)",
            &[&PER_ROUND],
        )
        .await?;
    let mut done = 0;
    for row in rows {
        let doc: i64 = row.get(0);
        let snapshot: Option<Vec<u8>> = row.get(1);
        let cursors: Vec<i64> = row.get(2);
        let ns: Vec<i32> = row.get(3);
        let updates: Vec<Vec<u8>> = row.get(4);
        let parts: Vec<Vec<u8>> = snapshot.into_iter().chain(updates).collect();
        let merged = tokio::task::spawn_blocking(move || super::room::merge(&parts))
            .await
            .map_err(|e| Error::new(crate::errors::INTERNAL, e.to_string()))?;
        let merged = match merged {
            Ok(merged) => merged,
            Err(e) => {
                tracing::error!(doc, error = %e, "a document's log does not merge; left as it is");
                continue;
            }
        };
        // One refusal (RS016) is logged, and the round goes on with the other documents.
        match client
            .execute(
                "SELECT rowsync.doc_compaction_finish($1, $2, $3, $4)",
                &[&doc, &merged, &cursors, &ns],
            )
            .await
        {
            Ok(_) => done += 1,
            Err(e) => tracing::error!(doc, error = %e, "a compacted snapshot was refused"),
        }
    }
    Ok(done)
}
