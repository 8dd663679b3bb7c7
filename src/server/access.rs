//! The access log and the call metrics: one line per lock change (or
//! refusal, or failure) with the peer, the resource, the client, the outcome
//! and the time to the reply, and a warning for any other fault.

use std::net::SocketAddr;
use std::time::Duration;

use tiny_http::Request;

use super::Shared;
use crate::api::{self, Effect, Event, Kind, Reply};

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
    let who = match &event.client {
        Some(client) => format!(
            "{} {} by {} from {peer}",
            event.method.name(),
            api::shown(&event.resource),
            api::shown(client)
        ),
        None => format!(
            "{} {} from {peer}",
            event.method.name(),
            api::shown(&event.resource)
        ),
    };
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

pub fn peer_of(request: &Request) -> String {
    request
        .remote_addr()
        .map_or_else(|| "unknown".to_owned(), SocketAddr::to_string)
}
