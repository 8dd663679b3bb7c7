//! Waiting until a change is durable: group commit.
//!
//! A worker whose reply depends on a change not yet on stable storage asks
//! for it ([`Durability::wait`]) and sleeps. The syncer thread fsyncs the
//! lock directory once for every change made so far, and wakes the
//! workers; each then sends its own reply. The workers are woken one by one
//! (`unpark`), not with a condition variable: a broadcast would wake them
//! all into one mutex, which on two cores costs more than the fsync. While one fsync runs, the
//! changes of other calls pile up for the next, so one fsync covers as many
//! calls as arrive during the last. The syncer never touches a socket: no
//! client can hold it up.
//!
//! Once a second the syncer also removes content files no new lock will
//! link to (see [`Store::remove_stale_contents`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use crate::api::CallError;
use crate::metrics::Metrics;
use crate::store::{self, Store};

/// The directory fsyncs, and the workers waiting for them.
pub struct Durability {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    /// Wakes the syncer: a worker waits for a change.
    wanted: Condvar,
    /// The number of the last fsync that ended.
    done: AtomicU64,
}

#[derive(Default)]
struct State {
    /// The number of the fsync that covers a change asked for now: the one
    /// that starts next.
    next: u64,
    /// Whether a worker waits for the fsync numbered `next`.
    asked: bool,
    /// The workers waiting, each with the number of the fsync it waits for.
    waiting: Vec<(u64, Thread)>,
    /// The last fsync that failed: its number and why.
    failed: Option<(u64, Arc<store::Error>)>,
    stopping: bool,
}

impl Durability {
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>) -> Durability {
        Durability {
            store,
            metrics,
            state: Mutex::new(State {
                next: 1,
                ..State::default()
            }),
            wanted: Condvar::new(),
            done: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Return once change `seq` is on stable storage, or with the error of
    /// the fsync that was to cover it.
    pub fn wait(&self, seq: u64) -> Result<(), CallError> {
        if self.store.is_durable(seq) {
            return Ok(());
        }
        let ticket = {
            let mut state = self.lock();
            // The change was made before this point, so the fsync numbered
            // `next` (which starts after it) covers it.
            let ticket = state.next;
            state.waiting.push((ticket, thread::current()));
            if !state.asked {
                state.asked = true;
                self.wanted.notify_one();
            }
            ticket
        };
        loop {
            if self.store.is_durable(seq) {
                return Ok(());
            }
            if self.done.load(Ordering::Acquire) >= ticket {
                // The fsync that was to cover the change ended, and did not.
                let state = self.lock();
                return match &state.failed {
                    Some((_, error)) => Err(CallError::NotSynced(Arc::clone(error))),
                    None => Ok(()),
                };
            }
            thread::park();
        }
    }

    /// The syncer thread: fsync whenever a worker waits, until stopped.
    pub fn run_syncer(&self) {
        let mut swept = Instant::now();
        loop {
            let number = {
                let mut state = self.lock();
                while !state.asked && !state.stopping {
                    state = self
                        .wanted
                        .wait_timeout(state, Duration::from_secs(1))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    if swept.elapsed() >= Duration::from_secs(1) {
                        break;
                    }
                }
                if !state.asked && state.stopping {
                    return;
                }
                if !state.asked {
                    None
                } else {
                    state.asked = false;
                    state.next += 1;
                    Some(state.next - 1)
                }
            };
            if swept.elapsed() >= Duration::from_secs(1) {
                self.store.remove_stale_contents();
                swept = Instant::now();
            }
            if let Some(number) = number {
                self.sync(number);
            }
        }
    }

    /// Run fsync number `number` and wake the workers waiting for it.
    fn sync(&self, number: u64) {
        let started = Instant::now();
        let synced = self.store.sync();
        self.metrics.fsync_duration.observe(started.elapsed());
        let woken: Vec<(u64, Thread)> = {
            let mut state = self.lock();
            if let Err(error) = synced {
                let error = Arc::new(error);
                log::error!("{}", CallError::NotSynced(Arc::clone(&error)));
                state.failed = Some((number, error));
            }
            self.done.store(number, Ordering::Release);
            let (woken, later) = std::mem::take(&mut state.waiting)
                .into_iter()
                .partition(|(ticket, _)| *ticket <= number);
            state.waiting = later;
            woken
        };
        for (_, worker) in woken {
            worker.unpark();
        }
    }

    /// Let the syncer end once no worker waits.
    pub fn stop(&self) {
        self.lock().stopping = true;
        self.wanted.notify_one();
    }
}
