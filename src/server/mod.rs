//! The HTTP side: lockd's threads take requests from tiny_http and answer
//! them. The path of one call, top to bottom, is [`call::answer`]: receive
//! (a [`pool`] worker takes the request from tiny_http) → parse → the lock
//! core → wait until the change is durable ([`durable`]) → reply → log
//! ([`access`]).
//!
//! No thread waits for one client on behalf of others: a reply is written
//! by the worker that took the request, by a writer thread of its
//! connection's own, or, after an fsync, by the syncer when the write cannot
//! wait for the client ([`outbox`]). So a client that does not read its
//! replies, or reads them slowly, holds up threads of its own connection
//! and nobody else: the pool starts another worker whenever fewer than
//! `--threads` are waiting for requests. A connection is owned by one
//! worker at a time ([`connection`]): pipelined calls are answered in order
//! by the worker that owns it, so a connection never ties up more than one
//! worker, and one whose reply cannot be sent within the send timeout is
//! closed.
//!
//! Group commit stays ([`durable`]): the lock directory is fsync'd once for
//! every change made while the previous fsync ran (by the syncer thread, or
//! by a lone caller's worker when none runs).
//!
//! What works around tiny_http 0.12's quirks (restarting its accept loop,
//! requests it cannot drop, closing a connection it gives no handle to) is
//! in [`intake`].

mod access;
mod call;
mod connection;
mod durable;
mod intake;
mod outbox;
mod pool;
mod route;
mod sockets;

use std::fmt;
use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::metrics::Metrics;
use crate::store::Store;
use crate::systemd::Health;

use connection::Connections;
use durable::Durability;
use intake::Intake;
use outbox::Outbox;

/// How the server behaves; see the command line for the defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Threads waiting for requests at any time: the pool starts another
    /// thread when fewer wait, so a thread busy with a slow client or waiting
    /// for the disk never keeps a request waiting.
    pub threads: usize,
    /// The largest request body accepted.
    pub max_body: usize,
    /// How long a whole request body may take to arrive.
    pub body_timeout: Duration,
}

/// What the threads of the server share.
struct Shared {
    store: Arc<Store>,
    settings: Settings,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    durability: Durability,
    connections: Connections,
    outbox: Outbox,
    intake: Intake,
    /// Every thread the server started (workers and the syncer), to wait
    /// for at a stop; finished ones are removed as new ones are added.
    threads: Mutex<Vec<thread::JoinHandle<()>>>,
    stopping: AtomicBool,
    abandoned: AtomicUsize,
    fatal: Mutex<Option<Fatal>>,
}

/// Why the server cannot go on. lockd then exits, so that systemd starts a
/// fresh one.
#[derive(Debug, Clone)]
pub enum Fatal {
    /// An accept loop ended and no new one could be started: `None` when
    /// lockd was stopping anyway.
    CannotRestart(Option<Arc<io::Error>>),
    /// This many requests were abandoned, each keeping a socket.
    Abandoned(usize),
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fatal::CannotRestart(source) => {
                f.write_str(
                    "the HTTP server stopped accepting connections and cannot be restarted: ",
                )?;
                match source {
                    Some(error) => error.fmt(f)?,
                    None => f.write_str("lockd is stopping")?,
                }
                f.write_str("; exiting so that a restart serves again")
            }
            Fatal::Abandoned(n) => write!(
                f,
                "{n} requests abandoned; exiting so that a restart frees their sockets"
            ),
        }
    }
}

impl std::error::Error for Fatal {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Fatal::CannotRestart(Some(error)) => Some(&**error),
            _ => None,
        }
    }
}

/// A running server; [`Running::stop`] ends it gracefully.
pub struct Running {
    shared: Arc<Shared>,
}

/// Start serving on `listener`, counting into `metrics` and answering
/// `GET /health` from `health`.
pub fn start(
    listener: TcpListener,
    store: Arc<Store>,
    settings: Settings,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> io::Result<Running> {
    let intake = Intake::new(listener, settings.threads.max(1))?;
    let shared = Arc::new(Shared {
        durability: Durability::new(Arc::clone(&store), Arc::clone(&metrics)),
        store,
        settings,
        metrics,
        health,
        connections: Connections::default(),
        outbox: Outbox::new(intake.port()),
        intake,
        threads: Mutex::new(Vec::new()),
        stopping: AtomicBool::new(false),
        abandoned: AtomicUsize::new(0),
        fatal: Mutex::new(None),
    });
    let syncer = {
        let shared = Arc::clone(&shared);
        thread::Builder::new()
            .name("syncer".into())
            .spawn(move || shared.durability.run_syncer(&shared))?
    };
    shared.keep(syncer);
    let spares = {
        let shared = Arc::clone(&shared);
        thread::Builder::new()
            .name("spares".into())
            .spawn(move || intake::keep_spares(&shared))?
    };
    shared.keep(spares);
    pool::start(&shared, &shared.intake.current().ok_or_else(stopped)?)?;
    Ok(Running { shared })
}

fn stopped() -> io::Error {
    io::Error::other("the server stopped while starting")
}

impl Running {
    /// Why the server cannot go on, once it cannot.
    pub fn fatal(&self) -> Option<Fatal> {
        self.shared
            .fatal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stop taking requests, let those in flight finish (up to `grace`),
    /// sync, and return whether everything finished in time.
    pub fn stop(self, grace: Duration) -> bool {
        let shared = &self.shared;
        shared.stopping.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + grace;
        // Workers answer what tiny_http has already read, then end; a
        // worker busy with a request (reading a slow body, say) finishes it.
        while shared.intake.idle_workers() > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        // Closing every copy of the listening socket (tiny_http connects to
        // itself to end its accept loop) makes new callers be refused, or,
        // under socket activation, wait in the kernel's queue for the next
        // lockd, instead of being accepted and never answered. Requests
        // already taken keep their connections.
        shared.intake.close();
        let workers_done = shared.wait_for_threads(deadline, |name| name != "syncer");
        shared.durability.stop();
        let syncer_done = shared.wait_for_threads(deadline, |_| true);
        workers_done && syncer_done
    }
}

impl Shared {
    fn fail(&self, why: Fatal) {
        log::error!("{why}");
        self.fatal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(why);
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Remember a thread to wait for at a stop.
    fn keep(&self, handle: thread::JoinHandle<()>) {
        let mut threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
        threads.retain(|t| !t.is_finished());
        threads.push(handle);
    }

    /// Wait until every kept thread whose name `which` accepts has ended,
    /// or `deadline`; whether they all ended.
    fn wait_for_threads(&self, deadline: Instant, which: impl Fn(&str) -> bool) -> bool {
        loop {
            let busy = {
                let mut threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
                threads.retain(|t| !t.is_finished());
                threads
                    .iter()
                    .any(|t| which(t.thread().name().unwrap_or_default()))
            };
            if !busy {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}
