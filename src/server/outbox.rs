//! Replies that wait for an fsync, and who writes them.
//!
//! A worker whose reply waits for the next directory fsync does not have to
//! sleep until it ends: if the connection's socket is known
//! ([`super::sockets`]), it hands the reply to the syncer and takes the
//! next request. After each fsync the syncer writes the replies it covered,
//! but only those it can write without waiting for their clients: a small
//! reply to a socket with nothing unacknowledged in it fits its send buffer
//! and is written at once whatever the client does. Any other reply goes to
//! a writer thread of its connection's own, and so do the later replies of
//! that connection, in order, until it has caught up; a writer whose reply
//! cannot be sent within the send timeout closes the connection. So the
//! syncer, shared by every connection, never waits for one, and a reply that
//! waits for its fsync costs no thread switch of its own.
//!
//! Replies are written in the order their calls were carried out: a
//! connection's calls are answered by one worker at a time, in order
//! ([`super::connection`]), it hands them over in that order, and each
//! fsync's replies are written in the order they were handed over.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Instant;

use tiny_http::Request;

use super::Shared;
use super::call::{self, Sent};
use super::connection::{self, MAX_PIPELINED};
use super::sockets::{SMALL_REPLY, Sockets};
use crate::api::{CallError, Reply};
use crate::store;

/// A call carried out, its reply not sent yet.
pub struct Pending {
    pub request: Request,
    pub reply: Reply,
    /// The client's address, as logged.
    pub peer: String,
    pub started: Instant,
}

/// A reply handed to the syncer, with its connection's address and
/// ownership (see [`super::connection`]).
pub struct Handoff {
    pub pending: Pending,
    pub peer: SocketAddr,
    pub id: u64,
}

/// The connections' sockets, and the replies waiting for a writer thread.
pub struct Outbox {
    pub sockets: Sockets,
    stuck: Mutex<HashMap<SocketAddr, VecDeque<Pending>>>,
}

impl Outbox {
    pub fn new(port: u16) -> Outbox {
        Outbox {
            sockets: Sockets::new(port),
            stuck: Mutex::new(HashMap::new()),
        }
    }

    fn stuck(&self) -> MutexGuard<'_, HashMap<SocketAddr, VecDeque<Pending>>> {
        self.stuck.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `peer`'s connection has replies that a writer thread is
    /// sending (its client is slow to read, or stopped).
    pub fn is_stuck(&self, peer: SocketAddr) -> bool {
        self.stuck().contains_key(&peer)
    }
}

/// Write the replies an fsync covered (`failed`: why it failed), each as
/// soon as it can be written without waiting for its client, the others on
/// writer threads of their connections. Runs on the syncer only, so that
/// replies are written in the order they were handed over.
pub fn deliver(shared: &Arc<Shared>, replies: Vec<Handoff>, failed: Option<&Arc<store::Error>>) {
    for Handoff {
        mut pending,
        peer,
        id,
    } in replies
    {
        if let Some(error) = failed {
            pending.reply.value = Err(CallError::NotSynced(Arc::clone(error)));
        }
        let mut stuck = shared.outbox.stuck();
        if let Some(queue) = stuck.get_mut(&peer) {
            queue.push_back(pending);
            if queue.len() > MAX_PIPELINED {
                drop(stuck);
                let why = format!(
                    "{peer} pipelined more than {MAX_PIPELINED} calls without reading the replies"
                );
                connection::close(shared, peer, id, &why);
            }
            continue;
        }
        // Only this thread adds connections to `stuck`: this one stays out
        // of it until then.
        drop(stuck);
        let xml = call::render(&pending.reply);
        if call::length(&xml) <= SMALL_REPLY && shared.outbox.sockets.has_room(peer) {
            // Cannot wait: the reply fits the socket's free send buffer.
            call::send_and_log(shared, pending, xml);
            continue;
        }
        shared
            .outbox
            .stuck()
            .insert(peer, VecDeque::from([pending]));
        spawn_writer(shared, peer, id);
    }
}

/// Send the replies queued for `peer`'s connection (ownership `id`) on a
/// thread of their own, until none is left; close the connection if one
/// cannot be sent within the send timeout.
fn spawn_writer(shared: &Arc<Shared>, peer: SocketAddr, id: u64) {
    let inner = Arc::clone(shared);
    let spawned = thread::Builder::new()
        .name("writer".into())
        .spawn(move || write_out(&inner, peer, id));
    if let Err(error) = spawned {
        // The syncer must not wait for a client: without a thread to send
        // them, the connection is closed first, so that the replies (a
        // dropped request still sends one) fail at once.
        let why = format!("could not start a thread to send the replies to {peer} ({error})");
        connection::close(shared, peer, id, &why);
        let dropped = shared.outbox.stuck().remove(&peer);
        drop(dropped);
    }
}

fn write_out(shared: &Arc<Shared>, peer: SocketAddr, id: u64) {
    loop {
        let next = {
            let mut stuck = shared.outbox.stuck();
            match stuck.get_mut(&peer).and_then(VecDeque::pop_front) {
                Some(pending) => pending,
                None => {
                    stuck.remove(&peer);
                    return;
                }
            }
        };
        let xml = call::render(&next.reply);
        if let Sent::TimedOut = call::send_and_log(shared, next, xml) {
            let why = format!(
                "a reply to {peer} could not be sent within the send timeout (the client does not read)"
            );
            connection::close(shared, peer, id, &why);
        }
    }
}
