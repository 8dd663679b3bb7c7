//! The workers: lockd's own threads, each taking one request at a time from
//! a tiny_http server and answering it to the end (see [`super::call`]).
//!
//! A worker that waits for the disk or for a slow client is not waiting for
//! requests, so the pool keeps `--threads` workers waiting: a worker that
//! takes a request when it is the last (or one of the last) waiting starts
//! another first. Workers beyond that number end after being idle for
//! [`LINGER`]. How many there are at most follows from the connections: a
//! connection is answered by one worker at a time ([`super::connection`]),
//! and tiny_http already has a thread of its own for each.
//!
//! Every tiny_http server has its own pool. When a server's accept loop ends
//! ([`super::intake`]), a new server with a new pool takes over, and the old
//! pool drains: it keeps one worker waiting and serves the old server's
//! connections until none has sent anything for an idle timeout.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use super::Shared;
use super::connection;
use super::intake::Accepting;

/// How often waiting workers look at the stop flag and at the accept loop.
const POLL: Duration = Duration::from_millis(200);

/// How long a worker beyond `--threads` may wait for a request before it ends.
const LINGER: Duration = Duration::from_secs(5);

/// The workers of one tiny_http server.
pub struct Pool {
    /// The server; none once lockd stops (workers hold it only while they
    /// wait for a request, so that taking it here closes its socket).
    accepting: RwLock<Option<Arc<Accepting>>>,
    /// Workers waiting for a request, or about to.
    idle: AtomicUsize,
    /// How many workers should wait: `--threads`, one once draining.
    min_idle: AtomicUsize,
    /// Whether another server accepts new connections now.
    draining: AtomicBool,
    /// Held by the worker taking a request from tiny_http until it has
    /// claimed it ([`connection::take`]): so requests are claimed in the
    /// order tiny_http hands them out, and a connection's pipelined calls
    /// in the order they were sent.
    taking: Mutex<()>,
}

impl Pool {
    pub fn new(accepting: Accepting, threads: usize) -> Pool {
        Pool {
            accepting: RwLock::new(Some(Arc::new(accepting))),
            idle: AtomicUsize::new(0),
            min_idle: AtomicUsize::new(threads.max(1)),
            draining: AtomicBool::new(false),
            taking: Mutex::new(()),
        }
    }

    /// Another server accepts new connections from now on: serve this one's
    /// until they are quiet.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.min_idle.store(1, Ordering::SeqCst);
    }

    /// Let go of the server: once no worker waits on it, its accept loop
    /// ends and its copy of the listening socket is closed.
    pub fn close(&self) {
        drop(
            self.accepting
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
    }

    /// Workers waiting for a request.
    pub fn idle(&self) -> usize {
        self.idle.load(Ordering::SeqCst)
    }

    fn accepting(&self) -> Option<Arc<Accepting>> {
        self.accepting
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Whether a worker idle since `since` should end now; if so, it is no
    /// longer counted.
    fn leave(&self, since: Instant, quiet: Duration) -> bool {
        if self.is_draining() {
            if since.elapsed() <= quiet + POLL {
                return false;
            }
            self.idle.fetch_sub(1, Ordering::SeqCst);
            return true;
        }
        if since.elapsed() <= LINGER {
            return false;
        }
        let min = self.min_idle.load(Ordering::SeqCst);
        self.idle
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n > min).then(|| n - 1)
            })
            .is_ok()
    }
}

/// Start the pool's first workers.
pub fn start(shared: &Arc<Shared>, pool: &Arc<Pool>) -> io::Result<()> {
    for _ in 0..pool.min_idle.load(Ordering::SeqCst) {
        spawn(shared, pool)?;
    }
    Ok(())
}

fn spawn(shared: &Arc<Shared>, pool: &Arc<Pool>) -> io::Result<()> {
    pool.idle.fetch_add(1, Ordering::SeqCst);
    let (inner, mine) = (Arc::clone(shared), Arc::clone(pool));
    let spawned = thread::Builder::new()
        .name("worker".into())
        .spawn(move || work(&inner, &mine));
    match spawned {
        Ok(handle) => {
            shared.keep(handle);
            Ok(())
        }
        Err(error) => {
            pool.idle.fetch_sub(1, Ordering::SeqCst);
            Err(error)
        }
    }
}

/// A worker: take a request, answer it, and again.
fn work(shared: &Arc<Shared>, pool: &Arc<Pool>) {
    let mut idle_since = Instant::now();
    loop {
        let stopping = shared.stopping();
        let wait = if stopping { Duration::ZERO } else { POLL };
        let Some(accepting) = pool.accepting() else {
            pool.idle.fetch_sub(1, Ordering::SeqCst);
            return;
        };
        let received = {
            let _turn = pool.taking.lock().unwrap_or_else(PoisonError::into_inner);
            accepting
                .server
                .recv_timeout(wait)
                .map(|got| got.map(|request| connection::take(shared, request)))
        };
        match received {
            Ok(Some(taken)) => {
                drop(accepting);
                let waiting = pool.idle.fetch_sub(1, Ordering::SeqCst) - 1;
                if !stopping
                    && waiting < pool.min_idle.load(Ordering::SeqCst)
                    && let Err(error) = spawn(shared, pool)
                {
                    log::error!(
                        "could not start a worker thread: {error}; requests wait until a worker is free"
                    );
                }
                if let connection::Taken::Mine { request, owner } = taken {
                    connection::serve(shared, request, owner);
                }
                pool.idle.fetch_add(1, Ordering::SeqCst);
                idle_since = Instant::now();
            }
            Ok(None) | Err(_) if stopping => {
                pool.idle.fetch_sub(1, Ordering::SeqCst);
                return;
            }
            Ok(None) => {
                if !pool.is_draining() && !accepting.watch.is_open() {
                    let why = "its accept thread ended (it does when no thread can be started for a new connection: too many connections for TasksMax= or the process limit)";
                    if let Err(fatal) = shared.intake.restart(shared, pool, why, false) {
                        pool.idle.fetch_sub(1, Ordering::SeqCst);
                        return shared.fail(fatal);
                    }
                }
                if pool.leave(idle_since, shared.settings.body_timeout) {
                    return;
                }
            }
            Err(error) => {
                let quiet = matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                );
                let restarted = shared
                    .intake
                    .restart(shared, pool, &error.to_string(), quiet);
                if let Err(fatal) = restarted {
                    pool.idle.fetch_sub(1, Ordering::SeqCst);
                    return shared.fail(fatal);
                }
            }
        }
    }
}
