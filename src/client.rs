//! A small blocking XML-RPC client: one keep-alive HTTP/1.1 connection to
//! lockd over `std::net`, the calls encoded and the replies decoded by
//! [`crate::xmlrpc`], sent and read by [`crate::http`]. `lockcmd` uses it,
//! and so can anything else that calls lockd many times in a row.
//!
//! Every call has a deadline (`timeout`) covering the connect, the request
//! and the whole reply. What went wrong is one of four [`Error`]s, chosen so
//! that a caller can tell "nothing was sent" (safe to retry) from "no answer"
//! (the call may have happened) from "the daemon said no".

use std::fmt;
use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::http::{self, ReadError, Response};
use crate::xmlrpc::{self, Call, Fault, FaultCode, Value};

/// Where lockd listens: what to connect to and which path to POST to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port`, as given (also sent as the `Host` header).
    pub authority: String,
    /// The path calls are POSTed to, `/RPC2` unless the URL names one.
    pub path: String,
}

impl Endpoint {
    /// Read `http://host[:port][/path]` or `host[:port]`. A URL without a
    /// port means port 80, as in any HTTP client; a bare host means lockd's
    /// default port, `default_port`.
    pub fn parse(text: &str, default_port: u16) -> Result<Endpoint, AddressError> {
        let bad = |problem| {
            Err(AddressError {
                address: text.to_owned(),
                problem,
            })
        };
        let (rest, port) = match text.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (rest, 80),
            Some((scheme, _)) => return bad(AddressProblem::NotHttp(scheme.to_owned())),
            None => (text, default_port),
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let path = path.split('#').next().unwrap_or_default();
        if authority.is_empty() {
            return bad(AddressProblem::NoHost);
        }
        if authority.contains('@') {
            return bad(AddressProblem::UserName);
        }
        if authority
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return bad(AddressProblem::WhiteSpace);
        }
        // The port follows the last ':' that is not inside [IPv6] brackets.
        let host_end = authority.rfind(']').map_or(0, |i| i + 1);
        let authority = match authority[host_end..].rfind(':') {
            Some(i) => {
                let (host, port) = authority.split_at(host_end + i);
                if host.contains(':') && !host.starts_with('[') {
                    return bad(AddressProblem::UnbracketedIpv6);
                }
                match port[1..].parse::<u16>() {
                    Ok(p) if p > 0 => authority.to_owned(),
                    _ => return bad(AddressProblem::Port),
                }
            }
            None => format!("{authority}:{port}"),
        };
        let path = match path {
            "" => "/RPC2".to_owned(),
            p if p.starts_with('?') => format!("/RPC2{p}"),
            p => p.to_owned(),
        };
        Ok(Endpoint { authority, path })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path)
    }
}

/// Why a server address cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressError {
    /// The address as given.
    pub address: String,
    pub problem: AddressProblem,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressProblem {
    /// A URL of another scheme than http.
    NotHttp(String),
    NoHost,
    UserName,
    WhiteSpace,
    UnbracketedIpv6,
    Port,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let address = &self.address;
        let why = match &self.problem {
            AddressProblem::NotHttp(scheme) => {
                return write!(
                    f,
                    "{address:?} is a {scheme}:// URL; lockd speaks plain HTTP, give http://host:port/"
                );
            }
            AddressProblem::NoHost => "it names no host; give host:port or http://host:port/",
            AddressProblem::UserName => "user names in URLs are not supported",
            AddressProblem::WhiteSpace => "it contains white space",
            AddressProblem::UnbracketedIpv6 => "write an IPv6 address in brackets, e.g. [::1]:7390",
            AddressProblem::Port => "the port is not a number from 1 to 65535",
        };
        write!(f, "{address:?} is not a server address: {why}")
    }
}

impl std::error::Error for AddressError {}

/// Why a call gave no value.
#[derive(Debug)]
pub enum Error {
    /// No connection could be made (refused, no route, unknown host, or the
    /// connect timed out). The call was not sent, so retrying is safe.
    Unreachable { server: String, source: io::Error },
    /// Connected, but no complete reply within the timeout. The call may
    /// have been carried out.
    Timeout { server: String, timeout: Duration },
    /// The peer is not an XML-RPC server (HTML, a 404, not HTTP at all), or
    /// the connection broke after the call was sent.
    Protocol { server: String, problem: String },
    /// The daemon answered with a fault.
    Fault(Fault),
}

impl Error {
    /// Whether this is one of lockd's three refusals (fault code 1): the
    /// call was understood and said no.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Error::Fault(f) if f.code == FaultCode::Refused)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Unreachable { server, source } => {
                write!(
                    f,
                    "cannot reach {server}: {source}; is lockd running there?"
                )
            }
            Error::Timeout { server, timeout } => write!(
                f,
                "{server} did not answer within {} s; lockd may be overloaded or stuck",
                timeout.as_secs_f64()
            ),
            Error::Protocol { server, problem } => {
                write!(f, "{server} is not answering as lockd: {problem}")
            }
            Error::Fault(fault) => write!(f, "fault {}: {}", fault.code as i32, fault.message),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Unreachable { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Several lockd serving one lock directory (one per node, on a cluster
/// filesystem): each call goes to the server that answered last, and
/// moves on to the next one only when a server cannot be reached, which
/// means nothing was sent. After a timeout or a broken reply the call may
/// have been carried out, so it is not sent anywhere else: the error says
/// which server it was.
#[derive(Debug)]
pub struct Servers {
    clients: Vec<Client>,
    current: usize,
}

impl Servers {
    /// Clients for `endpoints`, tried in this order; at least one.
    pub fn new(endpoints: Vec<Endpoint>, timeout: Duration) -> Servers {
        Servers {
            clients: endpoints
                .into_iter()
                .map(|endpoint| Client::new(endpoint, timeout))
                .collect(),
            current: 0,
        }
    }

    /// The server the last call went to.
    pub fn endpoint(&self) -> &Endpoint {
        self.clients[self.current].endpoint()
    }

    /// `lock(resource, client)`.
    pub fn lock(&mut self, resource: &str, client: &str) -> Result<(), Error> {
        self.call("lock", &[resource, client]).map(drop)
    }

    /// `unlock(resource, client)`.
    pub fn unlock(&mut self, resource: &str, client: &str) -> Result<(), Error> {
        self.call("unlock", &[resource, client]).map(drop)
    }

    /// Call `method` with string parameters.
    pub fn call(&mut self, method: &str, params: &[&str]) -> Result<Value, Error> {
        self.call_values(&Call {
            method: method.to_owned(),
            params: params.iter().map(|p| Value::Str((*p).to_owned())).collect(),
        })
    }

    /// Make one call, on the first server that can be reached.
    pub fn call_values(&mut self, call: &Call) -> Result<Value, Error> {
        let count = self.clients.len();
        let mut unreachable = Vec::new();
        for step in 0..count {
            let i = (self.current + step) % count;
            match self.clients[i].call_values(call) {
                Err(Error::Unreachable { server, source }) => {
                    unreachable.push((server, source));
                }
                answered => {
                    self.current = i;
                    return answered;
                }
            }
        }
        let Some((server, source)) = unreachable.pop() else {
            return Err(Error::Protocol {
                server: String::new(),
                problem: "no server given".to_owned(),
            });
        };
        let server = if unreachable.is_empty() {
            server
        } else {
            let others: Vec<String> = unreachable
                .iter()
                .map(|(server, source)| format!("{server} ({source})"))
                .collect();
            format!("{server}, nor {}", others.join(", "))
        };
        Err(Error::Unreachable { server, source })
    }
}

/// A connection to lockd, opened on the first call and kept open between
/// calls. Not shared between threads: give each thread its own.
#[derive(Debug)]
pub struct Client {
    endpoint: Endpoint,
    timeout: Duration,
    stream: Option<TcpStream>,
}

impl Client {
    /// A client for `endpoint`; each call may take up to `timeout`.
    pub fn new(endpoint: Endpoint, timeout: Duration) -> Client {
        Client {
            endpoint,
            timeout,
            stream: None,
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Make one call ([`Servers`] has the conveniences). A kept-open connection that the server has closed in
    /// the meantime is replaced once, transparently.
    pub fn call_values(&mut self, call: &Call) -> Result<Value, Error> {
        let user_agent = concat!("lockd-client/", env!("CARGO_PKG_VERSION"));
        let request = http::post(
            &self.endpoint.path,
            &[
                ("Host", &self.endpoint.authority),
                ("User-Agent", user_agent),
                ("Content-Type", "text/xml"),
            ],
            &xmlrpc::write_call(call),
        );

        let reused = self.stream.is_some();
        let response = match self.exchange(&request) {
            Err(Attempt::Stale(_)) if reused => self.exchange(&request),
            other => other,
        };
        let response = response.map_err(|attempt| match attempt {
            Attempt::Stale(problem) => self.protocol(problem),
            Attempt::Failed(error) => error,
        })?;
        if response.status != 200 {
            return Err(self.protocol(format!(
                "it answered HTTP {} {}",
                response.status, response.reason
            )));
        }
        match xmlrpc::parse_response(&response.body) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(fault)) => Err(Error::Fault(fault)),
            Err(why) => Err(self.protocol(match response.content_type {
                Some(t) if !t.contains("xml") => format!("the reply is {t}, not XML-RPC"),
                _ => format!("the reply is not XML-RPC ({})", why.message),
            })),
        }
    }

    fn protocol(&self, problem: String) -> Error {
        Error::Protocol {
            server: self.endpoint.to_string(),
            problem,
        }
    }

    /// Send a request and read the reply, connecting first if need be.
    fn exchange(&mut self, request: &[u8]) -> Result<Response, Attempt> {
        let deadline = Instant::now() + self.timeout;
        let stream = match self.stream.take() {
            Some(stream) => stream,
            None => self.connect(deadline).map_err(Attempt::Failed)?,
        };
        let timed_out = || {
            Attempt::Failed(Error::Timeout {
                server: self.endpoint.to_string(),
                timeout: self.timeout,
            })
        };
        let mut reader = BufReader::new(Deadline {
            stream: &stream,
            deadline,
        });
        if let Err(e) = reader.get_mut().write_all(request) {
            return Err(match e.kind() {
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => timed_out(),
                _ => Attempt::Stale(format!("the connection broke while sending: {e}")),
            });
        }
        let response = match http::read_response(&mut reader) {
            Ok(response) => response,
            Err(ReadError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                return Err(timed_out());
            }
            Err(ReadError::Closed) => {
                return Err(Attempt::Stale(
                    "it closed the connection without answering".to_owned(),
                ));
            }
            Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(Attempt::Stale(format!(
                    "the connection broke before the reply: {e}"
                )));
            }
            Err(ReadError::Io(e)) => {
                return Err(Attempt::Failed(
                    self.protocol(format!("the connection broke during the reply: {e}")),
                ));
            }
            Err(ReadError::Malformed(problem)) => {
                return Err(Attempt::Failed(self.protocol(problem)));
            }
        };
        // Keep the connection only if the reply ended where the server said.
        if response.keep_alive && reader.buffer().is_empty() {
            drop(reader);
            self.stream = Some(stream);
        }
        Ok(response)
    }

    fn connect(&self, deadline: Instant) -> Result<TcpStream, Error> {
        let unreachable = |source| Error::Unreachable {
            server: self.endpoint.to_string(),
            source,
        };
        let addrs: Vec<SocketAddr> = self
            .endpoint
            .authority
            .to_socket_addrs()
            .map_err(unreachable)?
            .collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the host name has no address");
        for addr in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                last = io::Error::new(io::ErrorKind::TimedOut, "connection timed out");
                break;
            }
            match TcpStream::connect_timeout(&addr, left) {
                Ok(stream) => {
                    // Requests go out in one write; Nagle would only delay them.
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) => last = e,
            }
        }
        Err(unreachable(last))
    }
}

/// How one attempt at a call failed.
enum Attempt {
    /// The connection was found closed before any reply byte: worth one
    /// retry on a fresh connection if it had been kept open from before.
    Stale(String),
    Failed(Error),
}

/// A stream whose every read and write ends by `deadline`.
struct Deadline<'a> {
    stream: &'a TcpStream,
    deadline: Instant,
}

impl Deadline<'_> {
    fn left(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"))
        } else {
            Ok(left)
        }
    }
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.set_read_timeout(Some(self.left()?))?;
        self.stream.read(buf)
    }
}

impl Write for Deadline<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.set_write_timeout(Some(self.left()?))?;
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::net::TcpListener;

    #[test]
    fn endpoints() {
        let parse = |text| Endpoint::parse(text, 7390);
        let ok = |authority: &str, path: &str| {
            Ok(Endpoint {
                authority: authority.into(),
                path: path.into(),
            })
        };
        assert_eq!(parse("127.0.0.1:7390"), ok("127.0.0.1:7390", "/RPC2"));
        assert_eq!(parse("node1"), ok("node1:7390", "/RPC2"));
        assert_eq!(parse("http://node1:8000/"), ok("node1:8000", "/"));
        assert_eq!(parse("HTTP://node1:8000"), ok("node1:8000", "/RPC2"));
        assert_eq!(parse("http://node1/RPC2"), ok("node1:80", "/RPC2"));
        assert_eq!(parse("http://[::1]:7390/x#frag"), ok("[::1]:7390", "/x"));
        assert_eq!(parse("[::1]"), ok("[::1]:7390", "/RPC2"));
        for bad in [
            "",
            "http://",
            "https://node1:7390/",
            "node1:0",
            "node1:99999",
            "node1:x",
            "::1",
            "user@node1:7390",
            "node 1:7390",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            ok("[::1]:7390", "/x").unwrap().to_string(),
            "http://[::1]:7390/x"
        );
        assert_eq!(
            parse("node1:0").unwrap_err().to_string(),
            "\"node1:0\" is not a server address: the port is not a number from 1 to 65535"
        );
        assert_eq!(
            parse("https://n/").unwrap_err().to_string(),
            "\"https://n/\" is a https:// URL; lockd speaks plain HTTP, give http://host:port/"
        );
    }

    /// A server that answers each connection's first request with `nil`, and
    /// then closes it, as lockd does with a connection left idle too long.
    #[test]
    fn a_closed_idle_connection_is_replaced() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for stream in listener.incoming().take(2) {
                let stream = stream.unwrap();
                let mut reader = BufReader::new(&stream);
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if let Some(n) = line.strip_prefix("Content-Length: ") {
                        length = n.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let reply = xmlrpc::write_response(&Value::Nil);
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", reply.len());
                (&stream).write_all(head.as_bytes()).unwrap();
                (&stream).write_all(&reply).unwrap();
            }
        });
        let endpoint = Endpoint::parse(&addr.to_string(), 7390).unwrap();
        let mut client = Servers::new(vec![endpoint], Duration::from_secs(20));
        client.lock("r", "c").unwrap();
        assert!(client.clients[0].stream.is_some(), "the connection is kept");
        // The server has closed it by now, or will before it reads again.
        client.unlock("r", "c").unwrap();
        server.join().unwrap();
    }
}
