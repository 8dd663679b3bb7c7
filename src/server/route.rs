//! Routing: which requests are XML-RPC calls, and the answers to all the
//! others (`GET /health`, `GET /metrics`, wrong paths and methods, bodies
//! too large, too slow or unreadable), as HTTP statuses.

use std::io::{self, Cursor};
use std::time::{Instant, SystemTime};

use tiny_http::{Header, Method, Request, Response, StatusCode};

use super::call::{self, Sent};
use super::intake::{self, ABSURD_BODY};
use super::{Settings, Shared, access};

pub type Body = Response<Cursor<Vec<u8>>>;

/// What came of receiving a request.
pub enum Received {
    /// An XML-RPC call, with its body.
    Call { request: Request, body: Vec<u8> },
    /// Something else, answered here.
    Answered(Sent),
}

/// Route a request, and read the body of a call.
pub fn receive(shared: &Shared, mut request: Request, started: Instant) -> Received {
    let path = request.url().split('?').next().unwrap_or_default();
    if matches!(path, "/health" | "/metrics") {
        let response = observe(shared, request.method(), path);
        return Received::Answered(call::send(request, response));
    }
    let rpc_path = matches!(path, "/" | "/RPC2");
    match (request.method(), rpc_path) {
        (Method::Post, true) => {}
        (_, true) => {
            let response = plain(
                405,
                "lockd answers XML-RPC calls: POST them to / or /RPC2\n",
            )
            .with_header(header("Allow", "POST"));
            return Received::Answered(call::send(request, response));
        }
        (_, false) => {
            let message = format!(
                "no such path {path:?}: POST XML-RPC calls to / or /RPC2; GET /health or /metrics\n"
            );
            return Received::Answered(call::send(request, plain(404, &message)));
        }
    }
    match read_body(&mut request, &shared.settings, started) {
        Ok(body) => Received::Call { request, body },
        Err(error) => Received::Answered(refuse_body(shared, request, error)),
    }
}

/// `GET /health` (the latest write-path self-test) and `GET /metrics`.
/// Neither touches the disk.
fn observe(shared: &Shared, method: &Method, path: &str) -> Body {
    if *method != Method::Get {
        let message = format!("{path} answers GET only\n");
        return plain(405, &message).with_header(header("Allow", "GET"));
    }
    if path == "/metrics" {
        let text = shared.metrics.render(SystemTime::now());
        return Response::from_data(text.into_bytes()).with_header(header(
            "Content-Type",
            "text/plain; version=0.0.4; charset=utf-8",
        ));
    }
    match shared.health.check() {
        Ok(()) => plain(200, "ok\n"),
        Err(unhealthy) => plain(503, &format!("{unhealthy}\n")),
    }
}

enum BodyError {
    TooLarge(usize),
    Slow,
    Io(io::Error),
}

/// Read a call's body, up to `max_body` bytes and within `body_timeout` of
/// `started` (a body not already in tiny_http's memory is read here, on the
/// worker, which holds up no one else).
fn read_body(
    request: &mut Request,
    settings: &Settings,
    started: Instant,
) -> Result<Vec<u8>, BodyError> {
    let limit = settings.max_body;
    if let Some(declared) = request.body_length().filter(|&n| n > limit) {
        return Err(BodyError::TooLarge(declared));
    }
    let reader = request.as_reader();
    let mut body = Vec::with_capacity(1024);
    let mut chunk = [0u8; 8192];
    loop {
        if started.elapsed() > settings.body_timeout {
            return Err(BodyError::Slow);
        }
        match reader.read(&mut chunk) {
            Ok(0) => return Ok(body),
            Ok(n) => {
                body.extend_from_slice(&chunk[..n]);
                if body.len() > limit {
                    return Err(BodyError::TooLarge(body.len()));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(BodyError::Slow);
            }
            Err(e) => return Err(BodyError::Io(e)),
        }
    }
}

/// Answer a request whose body could not be read, and log why.
fn refuse_body(shared: &Shared, request: Request, error: BodyError) -> Sent {
    let peer = access::peer_of(&request);
    match error {
        BodyError::TooLarge(declared) => {
            let limit = shared.settings.max_body;
            log::warn!("request from {peer} refused: its body is larger than {limit} bytes");
            if declared > ABSURD_BODY {
                intake::abandon(
                    shared,
                    request,
                    &format!("request from {peer} declares a {declared}-byte body"),
                );
                return Sent::Yes;
            }
            let message = format!(
                "the request body is larger than {limit} bytes; lockd calls are a few hundred bytes\n"
            );
            call::send(request, plain(413, &message))
        }
        BodyError::Slow => {
            log::warn!(
                "request from {peer} refused: its body took longer than {:?}",
                shared.settings.body_timeout
            );
            call::send(
                request,
                plain(408, "the request body did not arrive in time\n"),
            )
        }
        BodyError::Io(error) => {
            log::warn!("request from {peer} dropped: reading its body failed: {error}");
            call::send(request, plain(400, "the request body could not be read\n"))
        }
    }
}

pub fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes())
        .expect("static header names and values are ASCII")
}

fn plain(status: u16, text: &str) -> Body {
    Response::from_data(text.as_bytes().to_vec())
        .with_status_code(StatusCode(status))
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
}
