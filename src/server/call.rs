//! The path of one request, on the worker that took it: receive → parse →
//! the lock core → wait until durable → reply → log. Everything but the
//! XML-RPC calls is answered by [`route`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tiny_http::{Request, Response};

use super::outbox::Pending;
use super::route::{self, Received};
use super::{Shared, access};
use crate::api::{self, Reply};
use crate::xmlrpc;

/// Whether a reply went out.
pub enum Sent {
    /// Written (or the client had gone: nobody is left to answer).
    Yes,
    /// It could not be written within the send timeout: the client does not
    /// read. Its connection should be closed.
    TimedOut,
}

/// Answer one request; `owner`: its connection and ownership, if known
/// (see [`super::connection`]). A reply that waits for an fsync may be
/// handed to the syncer ([`super::outbox`]); then it is sent later.
pub fn answer(shared: &Arc<Shared>, request: Request, owner: Option<(SocketAddr, u64)>) -> Sent {
    let started = Instant::now();
    let (request, body) = match route::receive(shared, request, started) {
        Received::Call { request, body } => (request, body),
        Received::Answered(sent) => return sent,
    };
    let peer = access::peer_of(&request);
    log::debug!("< {peer} {}", String::from_utf8_lossy(&body));
    let reply = match xmlrpc::parse_call(&body) {
        Ok(call) => api::dispatch(&shared.store, &call, &peer),
        // Logged once, with its code, after the reply is sent.
        Err(fault) => Reply::malformed(fault),
    };
    let seq = reply.seq;
    // Handed over to the syncer when the reply waits for an fsync and the
    // syncer can tell whether the client has room for it: its socket is
    // known. A socket is searched for only when the syncer runs the next
    // fsync anyway; a lone caller on a new connection runs its own.
    let hand_to = owner.filter(|&(addr, _)| {
        let sockets = &shared.outbox.sockets;
        matches!(shared.store.is_durable(seq), Ok(false))
            && (sockets.knows(addr) || shared.durability.is_busy() && sockets.learn(addr))
    });
    let mut pending = Some(Pending {
        request,
        reply,
        peer,
        started,
    });
    let waited = shared.durability.wait(shared, seq, &mut pending, hand_to);
    let Some(mut pending) = pending else {
        return Sent::Yes;
    };
    if let Err(error) = waited {
        pending.reply.value = Err(error);
    }
    let xml = render(&pending.reply);
    send_and_log(shared, pending, xml)
}

/// The XML of a call's reply.
pub fn render(reply: &Reply) -> Vec<u8> {
    match &reply.value {
        Ok(value) => xmlrpc::write_response(value),
        Err(error) => xmlrpc::write_fault(&error.to_fault()),
    }
}

/// About how many bytes a reply of `xml` takes on the wire: with a generous
/// allowance for the status line and tiny_http's headers.
pub fn length(xml: &[u8]) -> usize {
    xml.len().saturating_add(512)
}

/// Send a call's reply, then log the call.
pub fn send_and_log(shared: &Shared, pending: Pending, xml: Vec<u8>) -> Sent {
    let Pending {
        request,
        reply,
        peer,
        started,
        ..
    } = pending;
    log::debug!("> {peer} {}", String::from_utf8_lossy(&xml));
    // Always with a Content-Length, as gocept.lockd sent its replies:
    // tiny_http would send a reply over 32 KiB chunked, and its chunked
    // writer, when a write times out, tries again on being dropped, so a
    // client that stopped reading would keep this thread twice as long.
    let response = Response::from_data(xml)
        .with_header(route::header("Content-Type", "text/xml"))
        .with_chunked_threshold(usize::MAX);
    let sent = send(request, response);
    access::log(shared, &reply, &peer, started.elapsed());
    sent
}

/// Write a response: on this thread, however long the client takes to read
/// it, up to the socket's send timeout for each write.
pub fn send(request: Request, response: route::Body) -> Sent {
    match request.respond(response) {
        Ok(()) => Sent::Yes,
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Sent::TimedOut
        }
        Err(error) => {
            log::debug!("could not send a reply: {error}");
            Sent::Yes
        }
    }
}
