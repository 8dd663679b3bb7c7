//! Where tiny_http 0.12 needs working around, all in one place.
//!
//! - Its accept loop ends at the first failed `accept`, and on Linux
//!   `accept` times out with the listener's `SO_RCVTIMEO` (which lockd sets
//!   so that accepted sockets inherit it): after one idle timeout without a
//!   new connection the server would accept no more. It also ends when its
//!   accept thread panics, which it does when no thread can be started for a
//!   new connection. Either way a new tiny_http server takes over on the
//!   same socket ([`Intake::restart`]), and the old one's worker pool goes
//!   on serving its open connections until they have been quiet for an idle
//!   timeout (see [`super::pool`]).
//! - Dropping a request whose body was not read allocates its whole
//!   declared size: a request declaring more than [`ABSURD_BODY`] is
//!   abandoned instead ([`abandon`], [`discard`]).
//! - It gives no handle to a connection's socket, so a connection whose
//!   reply cannot be sent is closed by finding its socket among the
//!   process's descriptors ([`Intake::close_connection`]).
//! - Its thread pool (`TaskPool::spawn`) counts a thread that was woken for
//!   a new connection but has not yet taken it as still idle, so in a burst
//!   of connections some are queued instead of getting a thread, and wait
//!   until another connection ends: with every connection busy, for ever.
//!   That cannot happen while more threads are really idle than connections
//!   arrive at once, so lockd keeps [`SPARE_THREADS`] idle ([`keep_spares`]):
//!   it opens that many connections to itself and closes them, which leaves
//!   that many tiny_http threads waiting, and does it again before they
//!   end (tiny_http ends a thread idle for 5 s).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::thread;
use std::time::Duration;

use tiny_http::{Request, Server};

use super::pool::{self, Pool};
use super::{Fatal, Shared};
use crate::sys;

/// A declared body larger than this is never read or drained: tiny_http
/// 0.12 would allocate the declared size at once when the request is
/// dropped, which aborts the process for absurd sizes. Such a request is
/// abandoned instead (see [`abandon`]).
pub const ABSURD_BODY: usize = 1 << 30;

/// After this many abandoned requests lockd exits for a clean restart: each
/// one keeps a socket and a tiny_http thread (about 16 KiB) until the
/// process ends.
const MAX_ABANDONED: usize = 1024;

/// How many idle tiny_http threads lockd keeps ready for a burst of new
/// connections: a burst up to this size is served at once.
pub const SPARE_THREADS: usize = 64;

/// How often the spare threads are renewed: before tiny_http's 5 s.
const SPARE_RENEWAL: Duration = Duration::from_secs(3);

/// The listening socket and the tiny_http server whose accept loop runs.
pub struct Intake {
    /// Taken (and closed) at stop.
    listener: Mutex<Option<TcpListener>>,
    /// The pool of the server whose accept loop runs; none once stopped.
    current: RwLock<Option<Arc<Pool>>>,
    /// Every pool, the draining ones too, to close at stop.
    pools: Mutex<Vec<Weak<Pool>>>,
    /// The port connections come in on, to find their sockets by.
    port: u16,
    /// Where lockd connects to itself to keep spare threads.
    own_address: SocketAddr,
    threads: usize,
}

/// A tiny_http server, and a watch on its copy of the listening socket.
pub struct Accepting {
    pub server: Server,
    pub watch: ListenerWatch,
}

/// tiny_http's copy of the listening socket, known by descriptor number and
/// inode. tiny_http closes it when its accept loop ends (on a failed
/// `accept`, or when its accept thread panics).
pub struct ListenerWatch {
    fd: RawFd,
    dev: u64,
    ino: u64,
}

impl ListenerWatch {
    fn new(listener: &TcpListener) -> io::Result<ListenerWatch> {
        let fd = listener.as_raw_fd();
        let (dev, ino) = sys::inode_of(fd)?;
        Ok(ListenerWatch { fd, dev, ino })
    }

    /// Whether the descriptor still holds the same socket (a closed
    /// descriptor's number may have been reused for another file).
    pub fn is_open(&self) -> bool {
        sys::inode_of(self.fd).is_ok_and(|id| id == (self.dev, self.ino))
    }
}

/// A tiny_http server accepting on a copy of `listener`.
fn accepting(listener: &TcpListener) -> io::Result<Accepting> {
    let copy = listener.try_clone()?;
    let watch = ListenerWatch::new(&copy)?;
    let server = Server::from_listener(copy, None).map_err(io::Error::other)?;
    Ok(Accepting { server, watch })
}

impl Intake {
    /// A tiny_http server on `listener` whose pool keeps `threads` workers
    /// waiting (started by [`pool::start`]).
    pub fn new(listener: TcpListener, threads: usize) -> io::Result<Intake> {
        let local = listener.local_addr()?;
        let port = local.port();
        let own_address = match local.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, port).into(),
            IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, port).into(),
            _ => local,
        };
        let first = Arc::new(Pool::new(accepting(&listener)?, threads));
        Ok(Intake {
            listener: Mutex::new(Some(listener)),
            pools: Mutex::new(vec![Arc::downgrade(&first)]),
            current: RwLock::new(Some(first)),
            port,
            own_address,
            threads,
        })
    }

    pub fn current(&self) -> Option<Arc<Pool>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `old`'s accept loop ended (`why`; `quiet` if only because no one
    /// connected for an idle timeout): start a new server on the listening
    /// socket with a pool of its own; `old`'s pool goes on serving its open
    /// connections.
    pub fn restart(
        &self,
        shared: &Arc<Shared>,
        old: &Arc<Pool>,
        why: &str,
        quiet: bool,
    ) -> Result<(), Fatal> {
        let cannot = |e: io::Error| Fatal::CannotRestart(Some(Arc::new(e)));
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        match current.as_ref() {
            None => return Err(Fatal::CannotRestart(None)),
            Some(now) if !Arc::ptr_eq(now, old) => return Ok(()),
            Some(_) => {}
        }
        if quiet {
            log::debug!("no new connection for an idle timeout; restarting the accept loop");
        } else {
            // Out of file descriptors or threads, say: do not spin.
            log::warn!(
                "the HTTP server stopped accepting connections: {why}; starting a new one in a second"
            );
            thread::sleep(Duration::from_secs(1));
        }
        let next = {
            let listener = self.listener.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(listener) = listener.as_ref() else {
                return Err(Fatal::CannotRestart(None));
            };
            Arc::new(Pool::new(
                accepting(listener).map_err(cannot)?,
                self.threads,
            ))
        };
        old.drain();
        {
            let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
            pools.retain(|p| p.strong_count() > 0);
            pools.push(Arc::downgrade(&next));
        }
        *current = Some(Arc::clone(&next));
        drop(current);
        pool::start(shared, &next).map_err(cannot)
    }

    /// Workers waiting for requests, in all pools.
    pub fn idle_workers(&self) -> usize {
        self.pools().iter().map(|pool| pool.idle()).sum()
    }

    fn pools(&self) -> Vec<Arc<Pool>> {
        self.pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Close the listening socket and every server's copy of it. Requests
    /// already taken keep their connections.
    pub fn close(&self) {
        for pool in self.pools() {
            pool.close();
        }
        drop(
            self.listener
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        drop(
            self.current
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
    }

    /// The port connections come in on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Shut down the connection from `peer`: its blocked and future writes
    /// fail at once, and tiny_http's thread reading it sees the end and
    /// lets the connection go. tiny_http keeps the socket to itself, so it
    /// is found among the process's descriptors by its addresses; this runs
    /// only for a connection that misbehaved. Returns whether it was found.
    pub fn close_connection(&self, peer: SocketAddr) -> io::Result<bool> {
        sys::shutdown_connection(self.port, peer).map(|n| n > 0)
    }
}

/// Keep [`SPARE_THREADS`] tiny_http threads idle until lockd stops (a
/// thread of its own): open that many connections to lockd, a millisecond
/// apart so that each gets a thread of its own, and close them; the threads
/// that served them wait for the next connections. tiny_http reads nothing
/// from them and answers nothing, so they cost a thread switch each and
/// show nowhere.
pub fn keep_spares(shared: &Shared) {
    while !shared.stopping() {
        let mut connections = Vec::with_capacity(SPARE_THREADS);
        for _ in 0..SPARE_THREADS {
            if shared.stopping() {
                return;
            }
            match TcpStream::connect_timeout(&shared.intake.own_address, Duration::from_secs(1)) {
                Ok(stream) => connections.push(stream),
                Err(error) => {
                    log::debug!("could not connect to lockd itself for spare threads: {error}");
                    break;
                }
            }
            thread::sleep(Duration::from_millis(1));
        }
        // Held until each has a thread: a connection closed at once might
        // be served by the thread that served the one before.
        thread::sleep(Duration::from_millis(50));
        drop(connections);
        let renew = std::time::Instant::now() + SPARE_RENEWAL;
        while !shared.stopping() && std::time::Instant::now() < renew {
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Give up on a request without reading or answering it.
pub fn abandon(shared: &Shared, request: Request, why: &str) {
    log::warn!(
        "{why}; leaving it unanswered (tiny_http cannot drop it safely), its connection is freed at the next restart"
    );
    std::mem::forget(request);
    let n = shared.abandoned.fetch_add(1, Ordering::SeqCst) + 1;
    if n >= MAX_ABANDONED {
        shared.fail(Fatal::Abandoned(n));
    }
}

/// Let go of a request that will not be answered (its connection was
/// closed): dropped, unless dropping it would allocate an absurd size.
pub fn discard(shared: &Shared, request: Request) {
    match request.body_length() {
        Some(declared) if declared > ABSURD_BODY => abandon(
            shared,
            request,
            &format!("a request declaring a {declared}-byte body on a closed connection"),
        ),
        _ => drop(request),
    }
}
