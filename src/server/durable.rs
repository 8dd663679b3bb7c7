//! Waiting until a change is durable: group commit.
//!
//! A worker whose reply depends on a change not yet on stable storage calls
//! [`Durability::wait`]. If it can hand the reply over (its connection's
//! socket is known: see [`super::outbox`], which writes a reply after its
//! fsync only if that cannot wait for the client), it asks the syncer
//! thread for the next fsync, leaves the reply with it and goes on to its
//! next request: it never waits for the disk. Otherwise it runs the fsync
//! itself if none is running or asked for (a lone caller on a new
//! connection: no thread switch, and no search for its socket), or asks
//! the syncer for the next one and sleeps until it ends; then it sends its
//! reply. The syncer runs each fsync as soon as the running one ends, so
//! while calls keep coming the fsyncs run back to back, each covering every
//! change made before it began: every call that arrived while the previous
//! one ran (group commit). Sleeping workers are woken one by one (`unpark`:
//! a broadcast would wake them all into one mutex). So no client can hold
//! up the fsyncs.
//!
//! Once a second the syncer also removes content files no new lock will
//! link to (see [`Store::remove_stale_contents`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use super::Shared;
use super::outbox::{self, Handoff, Pending};
use crate::api::CallError;
use crate::metrics::Metrics;
use crate::store::{self, Store};

/// The directory fsyncs, and the workers waiting for them.
pub struct Durability {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    /// Wakes the syncer: an fsync is asked for, one ended, or lockd stops.
    wake: Condvar,
    stopping: AtomicBool,
}

/// What waits for an fsync.
#[allow(clippy::large_enum_variant)] // a box would cost an allocation per call
enum Waiter {
    /// A worker, asleep.
    Worker(Thread),
    /// A reply handed over, to be sent once the fsync ends.
    Reply(Handoff),
}

#[derive(Default)]
struct State {
    /// Whether an fsync runs now.
    syncing: bool,
    /// Whether a worker waits for an fsync that has not started.
    asked: bool,
    /// How many fsyncs have started, and ended.
    started: u64,
    ended: u64,
    /// The workers asleep and the replies handed over, each with the
    /// number of the fsync that covers its change.
    waiting: Vec<(u64, Waiter)>,
    /// Why the last fsync that failed failed.
    failed: Option<Arc<store::Error>>,
}

impl Durability {
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>) -> Durability {
        Durability {
            store,
            metrics,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            stopping: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Return once change `seq` is on stable storage, or with the error of
    /// the fsync that was to cover it; or, given `hand_to` (the reply's
    /// connection and ownership) and when the syncer is to run that fsync,
    /// take the reply out of `pending` for the syncer to send
    /// ([`outbox::deliver`]) and return at once.
    pub fn wait(
        &self,
        shared: &Arc<Shared>,
        seq: u64,
        pending: &mut Option<Pending>,
        hand_to: Option<(SocketAddr, u64)>,
    ) -> Result<(), CallError> {
        // The number of the fsync that covers the change: the first to
        // start from now on (set at the first look at the state).
        let mut covering = None;
        loop {
            if self.is_durable(seq)? {
                return Ok(());
            }
            let mut state = self.lock();
            if self.is_durable(seq)? {
                return Ok(());
            }
            let number = *covering.get_or_insert(state.started + 1);
            if state.ended >= number {
                // It ended, and the change is not durable: it failed.
                return Err(match &state.failed {
                    Some(error) => CallError::NotSynced(Arc::clone(error)),
                    None => unfinished(self.store.dir()),
                });
            }
            // A reply that can be handed over always is: the worker does
            // not wait for the disk (measured: bench/profile-notes.md).
            if state.syncing || state.asked || (hand_to.is_some() && pending.is_some()) {
                let waiter = match (hand_to, pending.take()) {
                    (Some((peer, id)), Some(pending)) => {
                        Waiter::Reply(Handoff { pending, peer, id })
                    }
                    (_, other) => {
                        *pending = other;
                        Waiter::Worker(thread::current())
                    }
                };
                let handed = matches!(waiter, Waiter::Reply(_));
                state.waiting.push((number, waiter));
                if !state.asked {
                    state.asked = true;
                    self.wake.notify_one();
                }
                drop(state);
                if handed {
                    return Ok(());
                }
                thread::park();
            } else {
                let number = state.begin();
                drop(state);
                self.sync(shared, number);
            }
        }
    }

    fn is_durable(&self, seq: u64) -> Result<bool, CallError> {
        self.store
            .is_durable(seq)
            .map_err(|lost| CallError::NotSynced(Arc::new(lost)))
    }

    /// Whether an fsync runs or is asked for now: a change made now waits
    /// for the syncer's next one.
    pub fn is_busy(&self) -> bool {
        let state = self.lock();
        state.syncing || state.asked
    }

    /// Run fsync `number`, then wake the workers it covers and send the
    /// replies it covers.
    fn sync(&self, shared: &Arc<Shared>, number: u64) {
        let started = Instant::now();
        let synced = self.store.sync();
        self.metrics.fsync_duration.observe(started.elapsed());
        let failed = synced.err().map(Arc::new);
        let covered = {
            let mut state = self.lock();
            state.syncing = false;
            state.ended = number;
            if let Some(error) = &failed {
                log::error!("{}", CallError::NotSynced(Arc::clone(error)));
                state.failed = Some(Arc::clone(error));
            }
            if state.asked {
                self.wake.notify_one();
            }
            let waiting = std::mem::take(&mut state.waiting);
            let (covered, later): (Vec<_>, Vec<_>) =
                waiting.into_iter().partition(|(n, _)| *n <= number);
            state.waiting = later;
            covered
        };
        let mut replies = Vec::new();
        for (_, waiter) in covered {
            match waiter {
                Waiter::Worker(worker) => worker.unpark(),
                Waiter::Reply(handoff) => replies.push(handoff),
            }
        }
        if !replies.is_empty() {
            outbox::deliver(shared, replies, failed.as_ref());
        }
    }

    /// The syncer thread: run each fsync asked for as soon as none runs,
    /// and remove stale content files once a second, until stopped.
    pub fn run_syncer(&self, shared: &Arc<Shared>) {
        let mut swept = Instant::now();
        loop {
            let number = {
                let mut state = self.lock();
                // Until an fsync is asked for and none runs.
                while !state.asked || state.syncing {
                    if self.stopping.load(Ordering::SeqCst) && !state.asked {
                        return;
                    }
                    if swept.elapsed() >= Duration::from_secs(1) {
                        drop(state);
                        self.store.remove_stale_contents();
                        swept = Instant::now();
                        state = self.lock();
                        continue;
                    }
                    state = self
                        .wake
                        .wait_timeout(state, Duration::from_secs(1))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                state.begin()
            };
            self.sync(shared, number);
        }
    }

    /// Let the syncer end once no worker waits.
    pub fn stop(&self) {
        let _state = self.lock();
        self.stopping.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

impl State {
    /// Start an fsync; its number.
    fn begin(&mut self) -> u64 {
        self.syncing = true;
        self.asked = false;
        self.started += 1;
        self.started
    }
}

/// An fsync that ended without making a change durable failed, and records
/// why; this stands in should that ever not hold.
fn unfinished(dir: &std::path::Path) -> CallError {
    CallError::NotSynced(Arc::new(store::Error::Io {
        action: "fsync",
        path: dir.to_path_buf(),
        source: std::io::Error::other("the fsync covering this change did not complete"),
    }))
}
