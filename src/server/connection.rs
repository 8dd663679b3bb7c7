//! Who answers a connection's requests: one worker at a time, its owner.
//!
//! tiny_http reads a connection's pipelined requests as they come and hands
//! them out one by one, but writes their replies in order: the reply to a
//! request waits until the one before it is written. A worker answering the
//! second of two pipelined calls would wait for whoever answers the first,
//! so a client that pipelines many calls and reads nothing could tie up a
//! worker per call. Instead the first worker to take a request of a
//! connection owns it: later requests of that connection are queued for it,
//! and it answers them in order before it takes anything else. A connection
//! thus never holds more than one worker, and its calls take effect in the
//! order they were sent.
//!
//! A connection whose reply cannot be written within the send timeout (its
//! client does not read, or was stopped), or that has more than
//! [`MAX_PIPELINED`] calls waiting, is closed: its queued calls are dropped
//! unanswered and unexecuted (no reply of them could reach the client).

use std::collections::VecDeque;
use std::collections::hash_map::{Entry, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tiny_http::Request;

use super::call::{self, Sent};
use super::{Shared, intake};

/// A connection with more calls than this waiting for their replies is
/// closed: no XML-RPC client pipelines that deep, and it bounds what one
/// connection can make lockd hold in memory while its replies are stuck.
pub const MAX_PIPELINED: usize = 1024;

/// How long requests that tiny_http read from a closed connection before it
/// was closed are recognised and dropped. A new connection from the same
/// address and port within that time is unlikely: lockd, having closed
/// first, keeps the old one in TIME-WAIT for 60 s.
const CLOSED_MEMORY: Duration = Duration::from_secs(60);

/// The connections a worker owns now, and those recently closed.
#[derive(Default)]
pub struct Connections {
    owned: Mutex<HashMap<SocketAddr, Owned>>,
}

#[derive(Default)]
struct Owned {
    /// Requests for the owner to answer next, in order.
    waiting: VecDeque<Request>,
    /// When lockd closed the connection.
    closed: Option<Instant>,
}

/// What became of a request handed to the connection's owner.
enum Claim {
    /// This worker owns the connection now: answer it.
    Owner(Request),
    /// Queued for the owner, or dropped.
    Handed,
}

/// Answer `request`, and the requests that come in on its connection
/// meanwhile, unless another worker owns the connection.
pub fn serve(shared: &Arc<Shared>, request: Request) {
    let Some(peer) = request.remote_addr().copied() else {
        call::answer(shared, request);
        return;
    };
    let mut next = match claim(shared, peer, request) {
        Claim::Owner(request) => request,
        Claim::Handed => return,
    };
    loop {
        if let Sent::TimedOut = call::answer(shared, next) {
            let why = format!(
                "a reply to {peer} could not be sent within the send timeout (the client does not read)"
            );
            return close(shared, peer, &why);
        }
        match shared.connections.next(peer) {
            Some(request) => next = request,
            None => return,
        }
    }
}

/// Make this worker the owner of `peer`'s connection, or queue `request`
/// for its owner.
fn claim(shared: &Shared, peer: SocketAddr, request: Request) -> Claim {
    let mut owned = shared.connections.lock();
    match owned.entry(peer) {
        Entry::Vacant(entry) => {
            entry.insert(Owned::default());
            Claim::Owner(request)
        }
        Entry::Occupied(mut entry) => {
            let connection = entry.get_mut();
            match connection.closed {
                Some(at) if at.elapsed() < CLOSED_MEMORY => {
                    drop(owned);
                    intake::discard(shared, request);
                }
                Some(_) => {
                    // A new connection from the same address and port.
                    *connection = Owned::default();
                    return Claim::Owner(request);
                }
                None if connection.waiting.len() >= MAX_PIPELINED => {
                    connection.waiting.push_back(request);
                    drop(owned);
                    let why = format!(
                        "{peer} pipelined more than {MAX_PIPELINED} calls without reading the replies"
                    );
                    close(shared, peer, &why);
                }
                None => connection.waiting.push_back(request),
            }
            Claim::Handed
        }
    }
}

/// Close `peer`'s connection and drop the requests waiting on it. Its owner,
/// if busy, finds it closed when it looks for the next request.
fn close(shared: &Shared, peer: SocketAddr, why: &str) {
    let dropped: Vec<Request> = {
        let mut owned = shared.connections.lock();
        owned.retain(|_, c| c.closed.is_none_or(|at| at.elapsed() < CLOSED_MEMORY));
        let connection = owned.entry(peer).or_default();
        connection.closed = Some(Instant::now());
        connection.waiting.drain(..).collect()
    };
    match shared.intake.close_connection(peer) {
        Ok(_) => log::warn!(
            "{why}: closed the connection, {} pipelined calls dropped unanswered",
            dropped.len()
        ),
        Err(error) => log::error!(
            "{why}: could not close the connection ({error}); it ends at the idle timeout"
        ),
    }
    for request in dropped {
        intake::discard(shared, request);
    }
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Owned>> {
        self.owned.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next request the owner of `peer`'s connection is to answer, or
    /// none: then it owns the connection no more.
    fn next(&self, peer: SocketAddr) -> Option<Request> {
        let mut owned = self.lock();
        let connection = owned.get_mut(&peer)?;
        if connection.closed.is_some() {
            return None;
        }
        let next = connection.waiting.pop_front();
        if next.is_none() {
            owned.remove(&peer);
        }
        next
    }
}
