//! Wake-ups for sleeping listeners: decided once per transaction, when it commits.
//!
//! A transaction that logs a change (or sends an event) marks itself. When it commits,
//! the pre-commit callback reads how many listeners sleep and, if any, queues one
//! payload-free NOTIFY on channel `rowsync`. Reading at commit, not at the write, means a
//! writer that began while every listener was awake still wakes one that fell asleep
//! since; and nothing is queued before the commit, so PREPARE TRANSACTION works (a
//! transaction that has NOTIFYed cannot be prepared). A prepared transaction's changes
//! are found by the next poll instead.
//!
//! The same callbacks drop the capture trigger's cached registry rows when a
//! (sub)transaction aborts (capture::forget).

use pgrx::prelude::*;
use std::cell::Cell;

thread_local! {
    /// Whether this backend's transaction logged a change.
    static CHANGED: Cell<bool> = const { Cell::new(false) };
}

/// Marks the current transaction as one that logged a change.
pub fn changed() {
    CHANGED.set(true);
}

/// Registers the transaction callbacks. Called once per backend, from `_PG_init`.
pub fn register() {
    // SAFETY: registering callbacks from _PG_init is what the API is for.
    unsafe {
        pg_sys::RegisterXactCallback(Some(at_transaction_end), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(at_subtransaction_end), std::ptr::null_mut());
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn at_subtransaction_end(
    event: pg_sys::SubXactEvent::Type,
    _my: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        crate::capture::forget(None);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn at_transaction_end(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    match event {
        pg_sys::XactEvent::XACT_EVENT_PRE_COMMIT if CHANGED.get() => {
            CHANGED.set(false);
            if sleepers() > 0 && queue_has_room() {
                notify();
            }
        }
        pg_sys::XactEvent::XACT_EVENT_ABORT => {
            CHANGED.set(false);
            crate::capture::forget(None);
        }
        pg_sys::XactEvent::XACT_EVENT_COMMIT | pg_sys::XactEvent::XACT_EVENT_PREPARE => {
            CHANGED.set(false)
        }
        _ => {}
    }
}

/// `rowsync.sleepers`'s value, read in place (sequences are outside any snapshot).
/// Looked up by name each time: the extension may have been dropped and created again
/// since this backend last wrote.
fn sleepers() -> i64 {
    // SAFETY: catalog lookups by name, and a call of a built-in with one argument; every
    // role may SELECT the sequence (bootstrap.sql), which the function checks.
    unsafe {
        let schema = pg_sys::get_namespace_oid(c"rowsync".as_ptr(), true);
        if schema == pg_sys::InvalidOid {
            return 0;
        }
        let sequence = pg_sys::get_relname_relid(c"sleepers".as_ptr(), schema);
        if sequence == pg_sys::InvalidOid {
            return 0;
        }
        pgrx::direct_function_call::<i64>(
            pg_sys::pg_sequence_last_value,
            &[Some(pg_sys::Datum::from(sequence))],
        )
        .unwrap_or(0)
    }
}

/// Whether the cluster's notification queue is less than half full. Any role can fill it
/// (a session that LISTENs and stays in a transaction holds it back), and a NOTIFY that
/// finds it full fails the commit: a wake-up is never worth a write. Without it, the
/// listener's safety poll finds the change.
fn queue_has_room() -> bool {
    // SAFETY: a built-in without arguments that reads the queue's head and tail.
    let usage =
        unsafe { pgrx::direct_function_call::<f64>(pg_sys::pg_notification_queue_usage, &[]) };
    usage.is_some_and(|u| u < 0.5)
}

fn notify() {
    // SAFETY: pg_notify with two text arguments, made here; a NOTIFY queued before the
    // commit's own notification step is delivered when the transaction commits.
    unsafe {
        let channel = pgrx::rust_str_to_text_p("rowsync");
        let payload = pgrx::rust_str_to_text_p("");
        pgrx::direct_function_call_as_datum(
            pg_sys::pg_notify,
            &[
                Some(pg_sys::Datum::from(channel.as_ptr())),
                Some(pg_sys::Datum::from(payload.as_ptr())),
            ],
        );
    }
}
