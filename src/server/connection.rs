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
//! [`MAX_PIPELINED`] calls waiting, is closed: the calls queued for its
//! owner are dropped unanswered and unexecuted (no reply of them could
//! reach the client). Connections are known by the client's address and
//! port, which a new connection may reuse as soon as the old one is gone:
//! so nothing is remembered of a closed connection, and a call of it that
//! tiny_http had read but no worker had taken yet is still carried out (its
//! reply fails at once).

use std::collections::VecDeque;
use std::collections::hash_map::{Entry, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use tiny_http::Request;

use super::call::{self, Sent};
use super::{Shared, intake};

/// A connection with more calls than this waiting for their replies is
/// closed: no XML-RPC client pipelines that deep, and it bounds what one
/// connection can make lockd hold in memory while its replies are stuck.
pub const MAX_PIPELINED: usize = 1024;

/// The connections a worker owns now.
#[derive(Default)]
pub struct Connections {
    owned: Mutex<HashMap<SocketAddr, Owned>>,
    /// Tells owners apart: a connection closed and a new one from the same
    /// address and port are two owners.
    ownerships: AtomicU64,
}

struct Owned {
    /// Which ownership this is.
    id: u64,
    /// Requests for the owner to answer next, in order.
    waiting: VecDeque<Request>,
}

/// What became of a request taken from tiny_http.
#[allow(clippy::large_enum_variant)] // returned once and taken apart at once
pub enum Taken {
    /// This worker answers it: it owns its connection now (address and
    /// ownership), or the connection is unknown.
    Mine {
        request: Request,
        owner: Option<(SocketAddr, u64)>,
    },
    /// Queued for the connection's owner.
    Queued,
}

/// Make this worker the owner of `request`'s connection, or queue
/// `request` for its owner. Requests must be taken here in the order
/// tiny_http handed them out (the pool takes them one at a time), so that
/// an owner answers its connection's calls in the order they were sent.
pub fn take(shared: &Shared, request: Request) -> Taken {
    let Some(peer) = request.remote_addr().copied() else {
        return Taken::Mine {
            request,
            owner: None,
        };
    };
    let mut owned = shared.connections.lock();
    match owned.entry(peer) {
        Entry::Vacant(entry) => {
            let id = shared
                .connections
                .ownerships
                .fetch_add(1, Ordering::Relaxed);
            entry.insert(Owned {
                id,
                waiting: VecDeque::new(),
            });
            Taken::Mine {
                request,
                owner: Some((peer, id)),
            }
        }
        Entry::Occupied(mut entry) => {
            let connection = entry.get_mut();
            connection.waiting.push_back(request);
            if connection.waiting.len() > MAX_PIPELINED {
                let id = connection.id;
                drop(owned);
                let why = format!(
                    "{peer} pipelined more than {MAX_PIPELINED} calls without reading the replies"
                );
                close(shared, peer, id, &why);
            }
            Taken::Queued
        }
    }
}

/// Answer `request`, and the requests that come in on its connection
/// meanwhile (`owner`: see [`take`]).
pub fn serve(shared: &Arc<Shared>, request: Request, owner: Option<(SocketAddr, u64)>) {
    let Some((peer, id)) = owner else {
        call::answer(shared, request, None);
        return;
    };
    let mut next = request;
    loop {
        if let Sent::TimedOut = call::answer(shared, next, owner) {
            let why = format!(
                "a reply to {peer} could not be sent within the send timeout (the client does not read)"
            );
            return close(shared, peer, id, &why);
        }
        // While a writer thread sends this connection's replies to a slow
        // client, its next calls wait: the client cannot see their replies
        // before, and dropping them unexecuted is what a close does.
        while shared.outbox.is_stuck(peer) && !shared.stopping() {
            thread::sleep(STUCK_POLL);
        }
        match shared.connections.next(peer, id) {
            Some(request) => next = request,
            None => return,
        }
    }
}

/// How often an owner looks whether its connection's slow replies are out.
const STUCK_POLL: Duration = Duration::from_millis(10);

/// Close `peer`'s connection (ownership `id`) and drop the requests waiting
/// for its owner. The owner, if busy, finds it gone when it looks for the
/// next request.
pub fn close(shared: &Shared, peer: SocketAddr, id: u64, why: &str) {
    let dropped: Vec<Request> = {
        let mut owned = shared.connections.lock();
        match owned.get(&peer) {
            Some(connection) if connection.id == id => owned
                .remove(&peer)
                .map(|c| c.waiting.into_iter().collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
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

    /// The next request the owner of `peer`'s connection (ownership `id`)
    /// is to answer, or none: then it owns the connection no more.
    fn next(&self, peer: SocketAddr, id: u64) -> Option<Request> {
        let mut owned = self.lock();
        let connection = owned.get_mut(&peer).filter(|c| c.id == id)?;
        let next = connection.waiting.pop_front();
        if next.is_none() {
            owned.remove(&peer);
        }
        next
    }
}
