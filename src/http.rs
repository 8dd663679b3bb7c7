//! The client side of HTTP/1.1, as far as calling lockd needs it: the bytes
//! of a POST, and a reader for one reply (interim `1xx` replies skipped; a
//! `Content-Length`, chunked, or read-to-close body; keep-alive as the
//! reply says). [`crate::client`], `lockd-bench` and the integration tests
//! all use it. No sockets here: the reader takes any [`BufRead`].

use std::fmt;
use std::io::{self, BufRead, Read};

/// The largest reply body read: a `locks()` answer for about a million locks.
pub const MAX_BODY: usize = 256 << 20;

/// The longest status or header line read.
const MAX_LINE: usize = 16 << 10;

/// The most header lines read.
const MAX_HEADERS: usize = 100;

/// A POST request: the request line, `headers` in the order given, a
/// `Content-Length`, and `body`.
pub fn post(path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("POST {path} HTTP/1.1\r\n");
    for (name, value) in headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    request
}

/// An HTTP reply.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// The `Content-Type`, lower-cased.
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    /// Whether the connection may carry another request.
    pub keep_alive: bool,
}

/// Why no reply could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The connection ended before the first byte of a reply.
    Closed,
    Io(io::Error),
    /// The bytes are not an HTTP/1.x reply, or one cut short; the text
    /// says what is wrong ("it did not answer HTTP").
    Malformed(String),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Closed => f.write_str("the connection closed before a reply"),
            ReadError::Io(error) => write!(f, "reading the reply failed: {error}"),
            ReadError::Malformed(problem) => f.write_str(problem),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Io(error) => Some(error),
            _ => None,
        }
    }
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> ReadError {
        ReadError::Io(e)
    }
}

fn malformed(problem: impl Into<String>) -> ReadError {
    ReadError::Malformed(problem.into())
}

/// Read one HTTP/1.x reply: skip `1xx` interim replies, then read the body
/// by `Content-Length`, chunked, or up to the end of the connection.
pub fn read_response(r: &mut impl BufRead) -> Result<Response, ReadError> {
    // Tell a server that speaks something else at once, not at the timeout.
    // (`fill_buf`, unlike the reads below, does not try again when a
    // signal interrupts it.)
    let first = loop {
        match r.fill_buf() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other?,
        }
    };
    if first.is_empty() {
        return Err(ReadError::Closed);
    }
    let n = first.len().min(5);
    if first[..n] != b"HTTP/"[..n] {
        return Err(malformed("it did not answer HTTP"));
    }
    loop {
        let head = read_head(r)?;
        if (100..200).contains(&head.status) {
            continue;
        }
        let mut keep_alive = head.keep_alive;
        let body = match (head.chunked, head.length) {
            (true, _) => read_chunked(r)?,
            (false, Some(length)) if length > MAX_BODY => {
                return Err(malformed(format!(
                    "its reply is too large ({length} bytes)"
                )));
            }
            (false, Some(length)) => {
                let mut body = vec![0; length];
                r.read_exact(&mut body).map_err(cut_short)?;
                body
            }
            (false, None) => {
                // No length given: the body runs to the end of the connection.
                keep_alive = false;
                let mut body = Vec::new();
                r.take(MAX_BODY as u64 + 1).read_to_end(&mut body)?;
                if body.len() > MAX_BODY {
                    return Err(malformed("its reply is too large"));
                }
                body
            }
        };
        return Ok(Response {
            status: head.status,
            reason: head.reason,
            content_type: head.content_type,
            body,
            keep_alive,
        });
    }
}

/// A reply's status line and the headers that matter here.
struct Head {
    status: u16,
    reason: String,
    content_type: Option<String>,
    length: Option<usize>,
    chunked: bool,
    keep_alive: bool,
}

fn read_head(r: &mut impl BufRead) -> Result<Head, ReadError> {
    let line = read_line(r)?;
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status = parts.next().and_then(|s| {
        (s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<u16>().ok())?
    });
    let (Some(status), true) = (status, version.starts_with("HTTP/1.")) else {
        return Err(malformed(format!(
            "it did not answer HTTP/1.x (status line {line:?})"
        )));
    };
    let mut head = Head {
        status,
        reason: parts.next().unwrap_or_default().trim().to_owned(),
        content_type: None,
        length: None,
        chunked: false,
        keep_alive: version != "HTTP/1.0",
    };
    for count in 1.. {
        let header = read_line(r)?;
        if header.is_empty() {
            break;
        }
        if count > MAX_HEADERS {
            return Err(malformed("its reply has too many header lines"));
        }
        let Some((name, value)) = header.split_once(':') else {
            return Err(malformed(format!("bad header line {header:?}")));
        };
        head.read_header(&name.trim().to_ascii_lowercase(), value.trim())?;
    }
    Ok(head)
}

impl Head {
    fn read_header(&mut self, name: &str, value: &str) -> Result<(), ReadError> {
        match name {
            "content-length" => match value.parse::<usize>() {
                Ok(n) if self.length.is_none_or(|l| l == n) => self.length = Some(n),
                _ => return Err(malformed(format!("bad Content-Length {value:?}"))),
            },
            "transfer-encoding" => {
                self.chunked = value
                    .rsplit(',')
                    .next()
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            }
            "connection" => {
                for token in value.split(',').map(str::trim) {
                    if token.eq_ignore_ascii_case("close") {
                        self.keep_alive = false;
                    } else if token.eq_ignore_ascii_case("keep-alive") {
                        self.keep_alive = true;
                    }
                }
            }
            "content-type" => self.content_type = Some(value.to_ascii_lowercase()),
            _ => {}
        }
        Ok(())
    }
}

fn read_chunked(r: &mut impl BufRead) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    loop {
        let line = read_line(r)?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| malformed(format!("bad chunk size line {line:?}")))?;
        if size == 0 {
            // Trailer fields, up to an empty line.
            while !read_line(r)?.is_empty() {}
            return Ok(body);
        }
        if body.len().saturating_add(size) > MAX_BODY {
            return Err(malformed("its reply is too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..]).map_err(cut_short)?;
        if !read_line(r)?.is_empty() {
            return Err(malformed("a chunk is longer than its size line says"));
        }
    }
}

/// One line without its CR LF, as text.
fn read_line(r: &mut impl BufRead) -> Result<String, ReadError> {
    let mut line = Vec::new();
    r.take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Err(if line.len() > MAX_LINE {
            malformed("its reply has an overlong line")
        } else {
            malformed("the connection closed in the middle of the reply")
        });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| malformed("its reply head is not text"))
}

fn cut_short(e: io::Error) -> ReadError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        malformed("the connection closed in the middle of the reply")
    } else {
        ReadError::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> Result<Response, ReadError> {
        read_response(&mut &bytes[..])
    }

    /// A reader whose first `fill_buf` is interrupted by a signal.
    struct InterruptedOnce<'a> {
        interrupted: bool,
        bytes: &'a [u8],
    }

    impl io::Read for InterruptedOnce<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.bytes.read(buf)
        }
    }

    impl BufRead for InterruptedOnce<'_> {
        fn fill_buf(&mut self) -> io::Result<&[u8]> {
            if !self.interrupted {
                self.interrupted = true;
                return Err(io::ErrorKind::Interrupted.into());
            }
            self.bytes.fill_buf()
        }
        fn consume(&mut self, n: usize) {
            self.bytes.consume(n);
        }
    }

    #[test]
    fn a_signal_while_waiting_for_the_reply_is_not_an_error() {
        let mut reader = InterruptedOnce {
            interrupted: false,
            bytes: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        };
        let response = read_response(&mut reader).unwrap();
        assert_eq!(response.body, b"ok");
    }

    fn problem(bytes: &[u8]) -> String {
        match read(bytes) {
            Err(ReadError::Malformed(problem)) => problem,
            other => panic!("expected a malformed reply, got {other:?}"),
        }
    }

    #[test]
    fn a_post_is_what_curl_would_send() {
        let request = post(
            "/RPC2",
            &[("Host", "h:1"), ("Content-Type", "text/xml")],
            b"<x/>",
        );
        assert_eq!(
            request,
            b"POST /RPC2 HTTP/1.1\r\nHost: h:1\r\nContent-Type: text/xml\r\nContent-Length: 4\r\n\r\n<x/>"
        );
    }

    #[test]
    fn content_length_reply_as_tiny_http_sends_it() {
        let body = "<methodResponse/>";
        let bytes = format!(
            "HTTP/1.1 200 OK\r\nServer: tiny-http (Rust)\r\nDate: Sun, 29 Nov 2026 15:04:05 GMT\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(
            read(bytes.as_bytes()).unwrap(),
            Response {
                status: 200,
                reason: "OK".into(),
                content_type: Some("text/xml".into()),
                body: body.as_bytes().to_vec(),
                keep_alive: true,
            }
        );
    }

    #[test]
    fn chunked_reply_with_extensions_and_trailer() {
        let bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let response = read(bytes).unwrap();
        assert_eq!(response.body, b"hello world");
        assert!(response.keep_alive);
    }

    #[test]
    fn interim_replies_are_skipped() {
        let bytes = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(read(bytes).unwrap().body, b"ok");
    }

    #[test]
    fn who_closes_the_connection() {
        let close = read(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        assert!(!close.unwrap().keep_alive);
        let old = read(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert!(!old.keep_alive);
        let old_kept =
            read(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n");
        assert!(old_kept.unwrap().keep_alive);
        // Without a length the body is the rest of the connection.
        let to_eof = read(b"HTTP/1.1 200 OK\r\n\r\nall of it").unwrap();
        assert_eq!(
            (to_eof.body.as_slice(), to_eof.keep_alive),
            (&b"all of it"[..], false)
        );
    }

    #[test]
    fn error_pages_are_read_as_such() {
        let page = read(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: 12\r\n\r\n<h1>404</h1>").unwrap();
        assert_eq!((page.status, page.reason.as_str()), (404, "Not Found"));
        assert_eq!(
            page.content_type.as_deref(),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(page.body, b"<h1>404</h1>");
    }

    #[test]
    fn not_http_or_cut_short() {
        assert!(matches!(read(b""), Err(ReadError::Closed)));
        assert_eq!(
            problem(b"SSH-2.0-OpenSSH_9.6\r\n"),
            "it did not answer HTTP"
        );
        assert_eq!(problem(b"<html>"), "it did not answer HTTP");
        assert!(problem(b"HTTP/2 200\r\n\r\n").contains("HTTP/1.x"));
        assert!(problem(b"HTTP/1.1 2000 OK\r\n\r\n").contains("status line"));
        for cut in [
            &b"HTTP/1.1 200 OK\r\nContent-Len"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        ] {
            assert!(problem(cut).contains("middle of the reply"), "{cut:?}");
        }
        assert!(
            problem(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").contains("Content-Length")
        );
        assert!(
            problem(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")
                .contains("Content-Length")
        );
        assert!(problem(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n").contains("header"));
        assert!(
            problem(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
                .contains("chunk size")
        );
        assert!(
            problem(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n")
                .contains("longer")
        );
        let long = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(MAX_LINE));
        assert!(problem(long.as_bytes()).contains("overlong"));
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "X: 1\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(problem(many.as_bytes()).contains("too many"));
    }
}
