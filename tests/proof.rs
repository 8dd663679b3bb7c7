//! Shared tools of the proof suites (crash, durability, history, hostile,
//! disk): a small keep-alive XML-RPC client over a raw `TcpStream` (with
//! lockd's codec and HTTP reader) that reports exactly what came back (or
//! that nothing did), a seeded PRNG, and
//! the knobs that scale a suite from its short form (run by `cargo test`)
//! to its long form (`LOCKD_PROOF_SCALE=10`, see docs/proofs.md).

#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lockd::http;
use lockd::xmlrpc::{self, Call, Value};

/// A reply as the client saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A value (`<nil/>` for a successful lock or unlock).
    Value(Value),
    /// An XML-RPC fault: code and string.
    Fault(i32, String),
}

impl Outcome {
    pub fn is_nil(&self) -> bool {
        *self == Outcome::Value(Value::Nil)
    }
}

/// One keep-alive HTTP/1.1 connection to lockd.
pub struct Rpc {
    addr: SocketAddr,
    reader: Option<BufReader<TcpStream>>,
    /// How long one call may take before it counts as hung.
    pub guard: Duration,
}

impl Rpc {
    pub fn new(addr: SocketAddr) -> Rpc {
        Rpc {
            addr,
            reader: None,
            guard: Duration::from_secs(30),
        }
    }

    /// Call `method` with string parameters. `Err` means no complete reply
    /// arrived (refused, reset, closed, or the hang guard ran out); the
    /// connection is then dropped and the next call opens a new one.
    pub fn call(&mut self, method: &str, params: &[&str]) -> io::Result<Outcome> {
        let params = params.iter().map(|p| Value::Str((*p).to_owned())).collect();
        self.call_values(method, params)
    }

    /// Call `method` with any parameters; as [`Rpc::call`].
    pub fn call_values(&mut self, method: &str, params: Vec<Value>) -> io::Result<Outcome> {
        let body = xmlrpc::write_call(&Call {
            method: method.to_owned(),
            params,
        });
        let result = self.exchange(&body);
        if result.is_err() {
            self.reader = None;
        }
        result
    }

    fn exchange(&mut self, body: &[u8]) -> io::Result<Outcome> {
        if self.reader.is_none() {
            let stream = TcpStream::connect_timeout(&self.addr, self.guard)?;
            stream.set_read_timeout(Some(self.guard))?;
            stream.set_write_timeout(Some(self.guard))?;
            stream.set_nodelay(true)?;
            self.reader = Some(BufReader::new(stream));
        }
        let Some(reader) = self.reader.as_mut() else {
            return Err(io::Error::other("not connected"));
        };
        let host = self.addr.to_string();
        let request = http::post(
            "/RPC2",
            &[("Host", &host), ("Content-Type", "text/xml")],
            body,
        );
        reader.get_mut().write_all(&request)?;
        let (status, reply) = read_response(reader)?;
        if status != 200 {
            return Err(io::Error::other(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&reply)
            )));
        }
        match xmlrpc::parse_response(&reply) {
            Ok(Ok(value)) => Ok(Outcome::Value(value)),
            Ok(Err(fault)) => Ok(Outcome::Fault(fault.code as i32, fault.message)),
            Err(fault) => Err(io::Error::other(format!(
                "unreadable reply ({}): {}",
                fault.message,
                String::from_utf8_lossy(&reply)
            ))),
        }
    }
}

/// Read one HTTP response with lockd's reader: status and body. A
/// connection closed before or during the reply is `UnexpectedEof`, bytes
/// that are no HTTP reply `InvalidData`, and a read timeout stays what the
/// socket said (`WouldBlock` or `TimedOut`).
pub fn read_response(reader: &mut impl BufRead) -> io::Result<(u16, Vec<u8>)> {
    match http::read_response(reader) {
        Ok(response) => Ok((response.status, response.body)),
        Err(http::ReadError::Io(error)) => Err(error),
        Err(error @ http::ReadError::Closed) => {
            Err(io::Error::new(io::ErrorKind::UnexpectedEof, error))
        }
        Err(error @ http::ReadError::Malformed(_)) => {
            Err(io::Error::new(io::ErrorKind::InvalidData, error))
        }
    }
}

/// xorshift64*: small, seeded, good enough to pick operations and moments.
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Prng {
        Prng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The seed for a suite: `LOCKD_PROOF_SEED`, else the clock (printed so a
/// failure can be replayed).
pub fn seed(suite: &str) -> u64 {
    let seed = std::env::var("LOCKD_PROOF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("{suite}: LOCKD_PROOF_SEED={seed}");
    seed
}

/// How many times longer than the short form to run: `LOCKD_PROOF_SCALE`
/// (default 1). The long form is `LOCKD_PROOF_SCALE=10`.
pub fn scale() -> u64 {
    std::env::var("LOCKD_PROOF_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(1)
}

/// `LOCKD_PROOF_<NAME>` if set, else `short * scale()`.
pub fn knob(name: &str, short: u64) -> u64 {
    std::env::var(format!("LOCKD_PROOF_{name}"))
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(short * scale())
}

/// Read everything a server sends on `stream` until it closes the
/// connection, errs, or `wait` passes; and whether it closed.
pub fn drain(stream: &mut TcpStream, wait: Duration) -> (Vec<u8>, bool) {
    let deadline = std::time::Instant::now() + wait;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return (got, false);
        }
        let _ = stream.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        match stream.read(&mut chunk) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (got, true),
        }
    }
}
