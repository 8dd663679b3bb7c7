//! Which descriptor holds which connection, so that the syncer can tell
//! whether a reply can be written without waiting for the client.
//!
//! tiny_http gives no handle to a connection's socket. lockd finds it among
//! its descriptors by the client's address and the listening port (a scan of
//! `/proc/self/fd`), and remembers it. A remembered number is checked before
//! each use (its socket must still name that client: lockd serves one
//! listening socket, so the port needs no check): a connection closed since,
//! its number reused by another file, fails the check and is forgotten, and
//! its reply takes the slow way. Scans cost a couple of system calls per
//! descriptor, so they are rationed: one scan learns every connection open
//! at the time, and while scans are rationed out a reply simply takes the
//! slow way (its worker waits and writes it).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::sys;

/// The least time between two scans.
const MIN_SCAN_GAP: Duration = Duration::from_millis(20);
/// Scans may take at most about a tenth of one thread's time: after a scan
/// that took `t`, the next waits at least `10 t`.
const SCAN_SHARE: u32 = 10;

/// The descriptors of the connections to one port.
pub struct Sockets {
    port: u16,
    state: Mutex<State>,
}

struct State {
    known: HashMap<SocketAddr, RawFd>,
    /// No scan before this.
    next_scan: Instant,
}

impl Sockets {
    pub fn new(port: u16) -> Sockets {
        Sockets {
            port,
            state: Mutex::new(State {
                known: HashMap::new(),
                next_scan: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The descriptor of `peer`'s connection, if it is known and still
    /// holds that connection. Its peer alone is checked: lockd serves one
    /// listening socket, so every connection it holds is to `port`.
    fn find(&self, peer: SocketAddr) -> Option<RawFd> {
        let fd = *self.lock().known.get(&peer)?;
        if sys::peer_of(fd) == Some(peer) {
            return Some(fd);
        }
        let mut state = self.lock();
        if state.known.get(&peer) == Some(&fd) {
            state.known.remove(&peer);
        }
        None
    }

    /// Whether `peer`'s connection is known (not checked: see
    /// [`Sockets::learn`]).
    pub fn knows(&self, peer: SocketAddr) -> bool {
        self.lock().known.contains_key(&peer)
    }

    /// Whether `peer`'s connection is known, or can be found now: a scan of
    /// the descriptors when the ration allows. A known number is not
    /// checked here: [`Sockets::has_room`] checks it before it is used.
    pub fn learn(&self, peer: SocketAddr) -> bool {
        if self.knows(peer) {
            return true;
        }
        {
            let mut state = self.lock();
            let now = Instant::now();
            if now < state.next_scan {
                return false;
            }
            // Others skip the scan while this one runs.
            state.next_scan = now + MIN_SCAN_GAP;
        }
        let started = Instant::now();
        let found = match sys::connections_on(self.port) {
            Ok(found) => found,
            Err(error) => {
                log::debug!("could not list this process's descriptors: {error}");
                return false;
            }
        };
        let took = started.elapsed();
        let mut state = self.lock();
        state.known.clear();
        state.known.extend(found);
        state.next_scan = Instant::now() + (took * SCAN_SHARE).max(MIN_SCAN_GAP);
        state.known.contains_key(&peer)
    }

    /// Whether a reply of up to [`SMALL_REPLY`] bytes to `peer` can be
    /// written now without waiting for the client to read: everything
    /// written to its socket before has been acknowledged, so its whole
    /// send buffer (at least 4 KiB on Linux) is free.
    pub fn has_room(&self, peer: SocketAddr) -> bool {
        self.find(peer)
            .is_some_and(|fd| sys::unsent_bytes(fd).is_ok_and(|n| n == 0))
    }
}

/// Replies up to this size (status line and headers included) can go the
/// fast way: well under the smallest send buffer Linux gives a socket.
pub const SMALL_REPLY: usize = 2048;
