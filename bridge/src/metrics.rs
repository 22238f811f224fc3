//! Counters for `GET /metrics`, in Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Default)]
pub struct Metrics {
    pub changes_read: AtomicU64,
    pub frames_sent: AtomicU64,
    pub messages_received: AtomicU64,
    pub slow_closes: AtomicU64,
    pub revocations: AtomicU64,
    pub scope_violations: AtomicU64,
    pub bus_messages: AtomicU64,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    latency: Histogram,
}

/// Atomic, so that connection tasks on every thread record without a lock.
#[derive(Default)]
struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn error(&self, code: &'static str) {
        if let Ok(mut errors) = self.errors.lock() {
            *errors.entry(code).or_default() += 1;
        }
    }

    /// Seconds from a change's commit to its frame leaving the bridge.
    pub fn observe_latency(&self, seconds: f64) {
        let h = &self.latency;
        if let Some(i) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            h.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        h.count.fetch_add(1, Ordering::Relaxed);
        h.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn render(&self, connections: usize, subscriptions: usize) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, value: usize| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        let counter = |out: &mut String, name: &str, help: &str, value: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        };
        gauge(
            &mut out,
            "rowsync_connections",
            "Open WebSocket connections.",
            connections,
        );
        gauge(
            &mut out,
            "rowsync_subscriptions",
            "Subscriptions over all connections.",
            subscriptions,
        );
        counter(
            &mut out,
            "rowsync_changes_read_total",
            "Changes read from the change log.",
            &self.changes_read,
        );
        counter(
            &mut out,
            "rowsync_frames_sent_total",
            "Queued frames (changes, presence, broadcast) sent to clients.",
            &self.frames_sent,
        );
        counter(
            &mut out,
            "rowsync_messages_received_total",
            "Frames received from clients.",
            &self.messages_received,
        );
        counter(
            &mut out,
            "rowsync_slow_closes_total",
            "Connections closed for falling behind.",
            &self.slow_closes,
        );
        counter(
            &mut out,
            "rowsync_revocations_total",
            "Keys a connection lost when its access was checked again.",
            &self.revocations,
        );
        counter(
            &mut out,
            "rowsync_scope_mode_violations_total",
            "Rows of a scope-visibility table that two followers of the scope saw differently.",
            &self.scope_violations,
        );
        counter(
            &mut out,
            "rowsync_bus_messages_total",
            "Presence and broadcast batches sent to other bridges.",
            &self.bus_messages,
        );
        let _ = writeln!(out, "# HELP rowsync_errors_total Errors reported to clients, by code.\n# TYPE rowsync_errors_total counter");
        if let Ok(errors) = self.errors.lock() {
            for (code, n) in errors.iter() {
                let _ = writeln!(out, "rowsync_errors_total{{code=\"{code}\"}} {n}");
            }
        }
        let name = "rowsync_change_delivery_seconds";
        let _ = writeln!(out, "# HELP {name} From a change being logged (the writer's clock_timestamp) to its live frame being sent.\n# TYPE {name} histogram");
        let h = &self.latency;
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += h.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = h.count.load(Ordering::Relaxed);
        let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}"
        );
        out
    }
}
