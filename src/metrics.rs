//! The numbers `GET /metrics` shows, kept in atomics so that counting costs
//! a request nothing but a few relaxed additions, and written out by hand in
//! the Prometheus text exposition format (version 0.0.4).
//!
//! Nothing here touches the disk on a scrape. The held-locks gauge is seeded
//! from the start-up scan of the lock directory and then follows lockd's own
//! grants and releases; the age of the oldest lock comes from a scan that the
//! self-test thread repeats now and then (see [`Metrics::set_oldest_lock`]),
//! because reading a directory of 100,000 lock files on every scrape would
//! cost more than the scrape is worth.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::api::{Effect, Event, Kind, Method, Reply};

/// Upper bounds (seconds) of the duration histograms' buckets: a lock call
/// is normally one fsync, so 100 µs to 10 s covers a fast SSD to a sick disk.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

/// How an answered call ended: the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// Fault 1: one of the three refusals.
    Refused,
    /// Another fault, for a call that cannot be carried out as made.
    Fault,
    /// A lock directory failure (fault -32603).
    Error,
}

impl Outcome {
    const ALL: [Outcome; 4] = [
        Outcome::Ok,
        Outcome::Refused,
        Outcome::Fault,
        Outcome::Error,
    ];

    fn of(reply: &Reply) -> Outcome {
        match &reply.value {
            Ok(_) => Outcome::Ok,
            Err(error) => match error.kind() {
                Kind::Refused => Outcome::Refused,
                Kind::Invalid => Outcome::Fault,
                Kind::Failed => Outcome::Error,
            },
        }
    }

    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Fault => "fault",
            Outcome::Error => "error",
        }
    }
}

/// The `method` label of calls to methods lockd does not serve, or of
/// bodies that are not an XML-RPC call at all.
const OTHER_METHOD: &str = "other";

/// A latency histogram with fixed buckets.
pub struct Histogram {
    /// `counts[i]` counts observations in bucket `i` alone (not cumulative);
    /// the last slot is for those above the largest bound.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(BUCKETS.len());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            match BUCKETS.get(i) {
                Some(bound) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// Every metric lockd exports.
pub struct Metrics {
    /// `requests[m][o]`: calls to method `m` (by [`Method::index`], the
    /// last slot for [`OTHER_METHOD`]) with outcome `Outcome::ALL[o]`.
    requests: Vec<[AtomicU64; Outcome::ALL.len()]>,
    refusals: AtomicU64,
    errors: AtomicU64,
    locks_held: AtomicI64,
    /// Unix seconds when the oldest lock found by the last scan was taken;
    /// -1 when that scan found none, `i64::MIN` before the first scan.
    oldest_lock: AtomicI64,
    pub request_duration: Histogram,
    pub fsync_duration: Histogram,
}

impl Metrics {
    /// Fresh metrics, with `locks_held` locks found in the directory at start-up.
    pub fn new(locks_held: usize) -> Metrics {
        Metrics {
            requests: (0..=Method::all().count())
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
            refusals: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            locks_held: AtomicI64::new(i64::try_from(locks_held).unwrap_or(i64::MAX)),
            oldest_lock: AtomicI64::new(i64::MIN),
            request_duration: Histogram::new(),
            fsync_duration: Histogram::new(),
        }
    }

    /// Count an answered XML-RPC call that took `elapsed` up to its reply,
    /// with what it did.
    pub fn record_call(&self, reply: &Reply, elapsed: Duration) {
        let m = reply.method.map_or(self.requests.len() - 1, Method::index);
        let o = Outcome::of(reply) as usize;
        if let Some(counts) = self.requests.get(m) {
            counts[o].fetch_add(1, Ordering::Relaxed);
        }
        // A multicall answers Ok even when some of its members failed: its
        // events say what each lock and unlock did.
        let failed = reply
            .events
            .iter()
            .any(|e| matches!(&e.outcome, Err(error) if error.kind() == Kind::Failed));
        if Outcome::of(reply) == Outcome::Error || failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        for event in &reply.events {
            self.record_event(event);
        }
        self.request_duration.observe(elapsed);
    }

    fn record_event(&self, event: &Event) {
        match &event.outcome {
            Ok(Effect::Granted) => {
                self.locks_held.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Effect::Released) => {
                self.locks_held.fetch_sub(1, Ordering::Relaxed);
            }
            Err(error) if error.kind() == Kind::Refused => {
                self.refusals.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {}
        }
    }

    /// Record the result of a scan of the lock directory: when the oldest
    /// lock found was taken, or `None` if there was none.
    pub fn set_oldest_lock(&self, since: Option<SystemTime>) {
        let seconds = match since {
            None => -1,
            Some(time) => match time.duration_since(UNIX_EPOCH) {
                Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                Err(_) => 0,
            },
        };
        self.oldest_lock.store(seconds, Ordering::Relaxed);
    }

    /// The metrics in the Prometheus text format, at `now`.
    pub fn render(&self, now: SystemTime) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# HELP lockd_locks_held Locks held: the lock files found at start-up plus this process's grants minus its releases (changes by other processes sharing the directory show after a restart)"
        );
        let _ = writeln!(out, "# TYPE lockd_locks_held gauge");
        let held = self.locks_held.load(Ordering::Relaxed).max(0);
        let _ = writeln!(out, "lockd_locks_held {held}");

        let _ = writeln!(
            out,
            "# HELP lockd_oldest_lock_age_seconds Age of the oldest held lock at the last directory scan (every minute), 0 when none is held"
        );
        let _ = writeln!(out, "# TYPE lockd_oldest_lock_age_seconds gauge");
        let oldest = self.oldest_lock.load(Ordering::Relaxed);
        if oldest != i64::MIN {
            let now = now
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            let age = if oldest < 0 { 0 } else { (now - oldest).max(0) };
            let _ = writeln!(out, "lockd_oldest_lock_age_seconds {age}");
        }

        let _ = writeln!(
            out,
            "# HELP lockd_requests_total XML-RPC calls answered, by method (\"other\" for unknown methods and malformed calls) and outcome (ok, refused: fault 1, fault: another fault, error: lock directory failure)"
        );
        let _ = writeln!(out, "# TYPE lockd_requests_total counter");
        let methods = Method::all().map(Method::name).chain([OTHER_METHOD]);
        for (method, counts) in methods.zip(&self.requests) {
            for (outcome, count) in Outcome::ALL.iter().zip(counts) {
                let _ = writeln!(
                    out,
                    "lockd_requests_total{{method=\"{method}\",outcome=\"{}\"}} {}",
                    outcome.label(),
                    count.load(Ordering::Relaxed)
                );
            }
        }

        let counters = [
            (
                "lockd_refusals_total",
                "Locks and unlocks refused (the three fault 1 answers), also inside system.multicall",
                &self.refusals,
            ),
            (
                "lockd_errors_total",
                "Calls whose answer carried a lock directory failure (fault -32603), also inside system.multicall",
                &self.errors,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }

        self.request_duration.write(
            &mut out,
            "lockd_request_duration_seconds",
            "Time from receiving an XML-RPC call to sending its answer, including the wait for the directory fsync",
        );
        self.fsync_duration.write(
            &mut out,
            "lockd_fsync_duration_seconds",
            "Time one fsync of the lock directory took (one covers every change queued since the previous one)",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::api::CallError;
    use crate::store::{self, Refusal};
    use crate::xmlrpc::Value;

    fn reply(method: &str, value: Result<Value, CallError>, events: Vec<Event>) -> Reply {
        Reply {
            method: Method::named(method),
            value,
            seq: 0,
            events,
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.write(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.0001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.0025\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
        assert!(out.contains("x_sum 60.00305\n"), "{out}");
    }

    #[test]
    fn calls_are_counted_by_method_and_outcome() {
        let m = Metrics::new(2);
        let event = |method: &str, outcome| Event {
            method: Method::named(method).unwrap(),
            resource: "r".into(),
            client: Some("c".into()),
            outcome,
        };
        let refused = CallError::Store(Arc::new(store::Error::Refused(Refusal::NotLocked)));
        let disk = CallError::Store(Arc::new(store::Error::Io {
            action: "write",
            path: "/locks/r.resource.lock".into(),
            source: std::io::Error::other("disk"),
        }));
        let lock_ok = event("lock", Ok(Effect::Granted));
        m.record_call(
            &reply("lock", Ok(Value::Nil), vec![lock_ok]),
            Duration::ZERO,
        );
        let lock_refused = event("lock", Err(refused.clone()));
        m.record_call(
            &reply("lock", Err(refused), vec![lock_refused]),
            Duration::ZERO,
        );
        let unlock_failed = event("unlock", Err(disk.clone()));
        m.record_call(
            &reply("unlock", Err(disk), vec![unlock_failed]),
            Duration::ZERO,
        );
        let unknown = CallError::NoMethod("frobnicate".into());
        m.record_call(&reply("frobnicate", Err(unknown), vec![]), Duration::ZERO);
        let out = m.render(SystemTime::now());
        assert!(out.contains("lockd_locks_held 3\n"), "{out}");
        assert!(
            out.contains("lockd_requests_total{method=\"lock\",outcome=\"ok\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("lockd_requests_total{method=\"lock\",outcome=\"refused\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("lockd_requests_total{method=\"unlock\",outcome=\"error\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("lockd_requests_total{method=\"other\",outcome=\"fault\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("lockd_refusals_total 1\n"), "{out}");
        assert!(out.contains("lockd_errors_total 1\n"), "{out}");
        assert!(
            !out.contains("\nlockd_oldest_lock_age_seconds "),
            "no age before the first scan: {out}"
        );
        m.set_oldest_lock(Some(UNIX_EPOCH + Duration::from_secs(1000)));
        let out = m.render(UNIX_EPOCH + Duration::from_secs(1042));
        assert!(out.contains("lockd_oldest_lock_age_seconds 42\n"), "{out}");
        m.set_oldest_lock(None);
        let out = m.render(UNIX_EPOCH + Duration::from_secs(1042));
        assert!(out.contains("lockd_oldest_lock_age_seconds 0\n"), "{out}");
    }
}
