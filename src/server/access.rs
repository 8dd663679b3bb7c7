//! The access log and the call metrics: one line per lock change (or
//! refusal, or failure) with the peer, the resource, the client, the outcome
//! and the time to the reply, and a warning for any other fault.

use std::fmt::{self, Write as _};
use std::time::Duration;

use tiny_http::Request;

use super::Shared;
use crate::api::{Effect, Event, Kind, Reply, Shown};

/// Count an answered call and log what it did.
pub fn log(shared: &Shared, reply: &Reply, peer: &str, elapsed: Duration) {
    shared.metrics.record_call(reply, elapsed);
    let ms = elapsed.as_secs_f64() * 1000.0;
    for event in &reply.events {
        log_event(event, peer, ms);
    }
    if let (true, Err(error)) = (reply.events.is_empty(), &reply.value) {
        let fault = error.to_fault();
        log::warn!(
            "call from {peer} faulted ({}): {}",
            fault.code as i32,
            fault.message
        );
    }
}

fn log_event(event: &Event, peer: &str, ms: f64) {
    let who = Who { event, peer };
    match &event.outcome {
        Ok(Effect::Granted) => log::info!("{who}: granted ({ms:.2} ms)"),
        Ok(Effect::Released) => log::info!("{who}: released ({ms:.2} ms)"),
        Err(why) => match why.kind() {
            Kind::Refused => log::info!("{who}: refused, {why} ({ms:.2} ms)"),
            Kind::Invalid => log::warn!("{who}: invalid, {why} ({ms:.2} ms)"),
            Kind::Failed => log::error!("{who}: failed, {why} ({ms:.2} ms)"),
        },
    }
}

/// What an event did to whom, from where: `lock "vm1" by "node1" from
/// 10.0.0.5:41234`. Written straight into the log line.
struct Who<'a> {
    event: &'a Event,
    peer: &'a str,
}

impl fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Who { event, peer } = self;
        write!(f, "{} {}", event.method.name(), Shown(&event.resource))?;
        if let Some(client) = &event.client {
            write!(f, " by {}", Shown(client))?;
        }
        write!(f, " from {peer}")
    }
}

pub fn peer_of(request: &Request) -> String {
    match request.remote_addr() {
        Some(addr) => {
            // Room for the longest IPv6 address with a scope and port: one
            // allocation, where growing the string as it is written takes
            // several.
            let mut peer = String::with_capacity(64);
            let _ = write!(peer, "{addr}");
            peer
        }
        None => "unknown".to_owned(),
    }
}
