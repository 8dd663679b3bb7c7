//! Hostile input: a corpus of bad requests, each with the outcome it must
//! get (an XML-RPC fault code, an HTTP status, or no reply), sent to one
//! daemon while a prober keeps making normal calls. After every case the
//! lock directory must be unchanged and the daemon must still answer. Then
//! the slow ones: a body that never ends, a header line that never ends,
//! slowloris, and thousands of idle connections, which must all be closed
//! by the idle timeout (`--idle-timeout 2` here) while others are served.
//! External entities must never be read: a marker file's content must not
//! appear in any reply.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use lockd::{http, xmlrpc};

use crate::proof::{self, Outcome, Rpc};
use crate::support::{Daemon, Options};

/// What a bad request must get.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// HTTP 200 with an XML-RPC fault of this code.
    Fault(i32),
    /// This HTTP status.
    Status(u16),
    /// No reply, and the connection is closed.
    Closed,
    /// No reply, and the connection stays open while the client waits.
    NoReply,
}

/// What came back for a request.
#[derive(Debug)]
struct Reply {
    status: Option<u16>,
    body: String,
    closed: bool,
}

impl Reply {
    fn fault_code(&self) -> Option<i32> {
        match xmlrpc::parse_response(self.body.as_bytes()) {
            Ok(Err(fault)) => Some(fault.code as i32),
            _ => None,
        }
    }

    fn matches(&self, expect: Expect) -> bool {
        match expect {
            Expect::Fault(code) => self.status == Some(200) && self.fault_code() == Some(code),
            Expect::Status(status) => self.status == Some(status),
            Expect::Closed => self.status.is_none() && self.closed,
            Expect::NoReply => self.status.is_none() && !self.closed,
        }
    }
}

const MARKER: &str = "SECRET-MARKER-7f3a9c";

fn idle_daemon() -> Daemon {
    Daemon::start_with(Options {
        args: vec!["--idle-timeout".into(), "2".into()],
        ..Options::default()
    })
}

// The corpus is written out byte for byte on purpose: malformed and
// unusual requests are what no writer produces. `call`, `string_params`
// and `lock_with` paste their text into the XML unescaped, so that a case
// can carry markup, references or broken structure; only well-framed HTTP
// comes from lockd's writer (`post`).

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    http::post(
        path,
        &[("Host", "lockd"), ("Content-Type", "text/xml")],
        body,
    )
}

fn call(method: &str, params: &str) -> Vec<u8> {
    post(
        "/",
        format!(
            "<methodCall><methodName>{method}</methodName><params>{params}</params></methodCall>"
        )
        .as_bytes(),
    )
}

fn string_params(values: &[&str]) -> String {
    values
        .iter()
        .map(|v| format!("<param><value><string>{v}</string></value></param>"))
        .collect()
}

fn lock_with(value: &str) -> Vec<u8> {
    call(
        "lock",
        &format!("<param><value>{value}</value></param><param><value>c</value></param>"),
    )
}

fn lock_with_bytes(value: &[u8]) -> Vec<u8> {
    let mut body = b"<methodCall><methodName>lock</methodName><params><param><value>".to_vec();
    body.extend_from_slice(value);
    body.extend_from_slice(
        b"</value></param><param><value>c</value></param></params></methodCall>",
    );
    post("/", &body)
}

/// The corpus: name, request bytes, expected outcome. One long table on
/// purpose: each case is a line, read down the page like a list.
fn corpus(marker_path: &str) -> Vec<(String, Vec<u8>, Expect)> {
    use Expect::*;
    let mut cases: Vec<(&str, Vec<u8>, Expect)> = vec![
        // Not XML, or broken XML.
        ("empty body", post("/", b""), Fault(-32700)),
        ("plain text", post("/", b"this is not xml"), Fault(-32700)),
        ("truncated in a tag", post("/", b"<methodCall><methodName>lock</methodName"), Fault(-32700)),
        ("truncated in params", post("/", b"<methodCall><methodName>lock</methodName><params><param><value>r"), Fault(-32700)),
        ("mismatched end tag", post("/", b"<methodCall><methodName>lock</methodNam></methodCall>"), Fault(-32700)),
        ("two roots", post("/", b"<methodCall><methodName>locks</methodName></methodCall><methodCall/>"), Fault(-32700)),
        ("unterminated CDATA", post("/", b"<methodCall><methodName><![CDATA[lock</methodName></methodCall>"), Fault(-32700)),
        ("comment only", post("/", b"<!-- nothing -->"), Fault(-32700)),
        ("undefined entity", post("/", b"<methodCall><methodName>&lockd;</methodName></methodCall>"), Fault(-32700)),
        ("NUL character reference", lock_with("&#0;"), Fault(-32700)),
        ("invalid UTF-8 body", post("/", b"\xff\xfe<\x00m\x00"), Fault(-32700)),
        ("invalid UTF-8 in a name", lock_with_bytes(b"r\xc3\x28"), Fault(-32700)),
        ("overlong UTF-8 slash", lock_with_bytes(b"..\xc0\xafetc"), Fault(-32700)),
        ("UTF-16 declared, UTF-8 sent", post("/", b"<?xml version='1.0' encoding='UTF-16'?><methodCall><methodName>locks</methodName></methodCall>"), Fault(-32700)),
        ("65 attributes", post("/", format!("<methodCall {}><methodName>locks</methodName></methodCall>", (0..65).map(|i| format!("a{i}='x'")).collect::<Vec<_>>().join(" ")).as_bytes()), Fault(-32700)),
        ("1000-character element name", post("/", format!("<{0}></{0}>", "m".repeat(1000)).as_bytes()), Fault(-32700)),
        // DTDs: entity bombs and external entities.
        ("billion laughs", post("/", billion_laughs().as_bytes()), Fault(-32700)),
        ("quadratic blowup", post("/", format!("<!DOCTYPE m [<!ENTITY a \"{}\">]><methodCall><methodName>{}</methodName></methodCall>", "x".repeat(50_000), "&a;".repeat(10_000)).as_bytes()), Fault(-32700)),
        ("external entity", post("/", format!("<?xml version='1.0'?><!DOCTYPE m [<!ENTITY x SYSTEM \"file://{marker_path}\">]><methodCall><methodName>&x;</methodName></methodCall>").as_bytes()), Fault(-32700)),
        ("external entity in a name", post("/", format!("<!DOCTYPE m [<!ENTITY x SYSTEM \"{marker_path}\">]><methodCall><methodName>lock</methodName><params><param><value>&x;</value></param><param><value>c</value></param></params></methodCall>").as_bytes()), Fault(-32700)),
        ("external DTD", post("/", format!("<!DOCTYPE methodCall SYSTEM \"file://{marker_path}\"><methodCall><methodName>locks</methodName></methodCall>").as_bytes()), Fault(-32700)),
        ("parameter entity", post("/", format!("<!DOCTYPE m [<!ENTITY % p SYSTEM \"file://{marker_path}\"> %p;]><methodCall><methodName>locks</methodName></methodCall>").as_bytes()), Fault(-32700)),
        ("XInclude", post("/", format!("<methodCall xmlns:xi='http://www.w3.org/2001/XInclude'><methodName>status</methodName><params><param><value><xi:include href='file://{marker_path}' parse='text'/></value></param></params></methodCall>").as_bytes()), Fault(-32600)),
        // Well-formed, but not a call lockd can run.
        ("not a methodCall", post("/", b"<foo/>"), Fault(-32600)),
        ("a methodResponse", post("/", b"<methodResponse><params/></methodResponse>"), Fault(-32600)),
        ("no methodName", post("/", b"<methodCall><params/></methodCall>"), Fault(-32600)),
        ("empty methodName", post("/", b"<methodCall><methodName> </methodName></methodCall>"), Fault(-32600)),
        ("methodName with an element", post("/", b"<methodCall><methodName><b>lock</b></methodName></methodCall>"), Fault(-32600)),
        ("text in params", call("lock", "stray text"), Fault(-32600)),
        ("value outside a param", call("lock", "<value>r</value>"), Fault(-32600)),
        ("two values in a param", call("lock", "<param><value>r</value><value>s</value></param>"), Fault(-32600)),
        ("unknown value type", lock_with("<resource>r</resource>"), Fault(-32600)),
        ("int that is not a number", lock_with("<int>x</int>"), Fault(-32600)),
        ("int overflow", lock_with("<int>99999999999</int>"), Fault(-32600)),
        ("boolean 2", lock_with("<boolean>2</boolean>"), Fault(-32600)),
        ("double that is not a number", lock_with("<double>1.2.3</double>"), Fault(-32600)),
        ("bad base64", lock_with("<base64>!!!</base64>"), Fault(-32600)),
        ("nil with content", lock_with("<nil>x</nil>"), Fault(-32600)),
        ("struct member without name", lock_with("<struct><member><value>x</value></member></struct>"), Fault(-32600)),
        ("array without data", lock_with("<array><value>x</value></array>"), Fault(-32600)),
        ("nesting 65 deep", lock_with(&format!("{}{}", "<array><data><value>".repeat(22), "</value></data></array>".repeat(22))), Fault(-32600)),
        ("nesting 100000 deep", post("/", format!("{}{}", "<a>".repeat(100_000), "</a>".repeat(100_000)).as_bytes()), Fault(-32600)),
        ("nesting 100000 deep, unclosed", post("/", "<a>".repeat(100_000).as_bytes()), Fault(-32600)),
        // Well-formed calls with wrong methods, types or names.
        ("unknown method", call("frobnicate", ""), Fault(-32601)),
        ("100 KB method name", call(&"m".repeat(100_000), ""), Fault(-32601)),
        ("lock with one param", call("lock", &string_params(&["r"])), Fault(-32602)),
        ("lock with three params", call("lock", &string_params(&["r", "c", "x"])), Fault(-32602)),
        ("lock with an int", lock_with("<int>5</int>"), Fault(-32602)),
        ("lock with a struct", lock_with("<struct></struct>"), Fault(-32602)),
        ("lock with an array", lock_with("<array><data/></array>"), Fault(-32602)),
        ("lock with base64", lock_with("<base64>cg==</base64>"), Fault(-32602)),
        ("lock with nil", lock_with("<nil/>"), Fault(-32602)),
        ("unlock with a boolean client", call("unlock", "<param><value>held</value></param><param><value><boolean>1</boolean></value></param>"), Fault(-32602)),
        ("empty resource", call("lock", &string_params(&["", "c"])), Fault(-32602)),
        ("300-byte resource", call("lock", &string_params(&[&"r".repeat(300), "c"])), Fault(-32602)),
        ("900 KB resource", call("lock", &string_params(&[&"r".repeat(900_000), "c"])), Fault(-32602)),
        ("2000-byte client", call("lock", &string_params(&["r", &"c".repeat(2000)])), Fault(-32602)),
        ("client with a line break", call("lock", &string_params(&["r", "a&#10;b"])), Fault(-32602)),
        ("client with padding", call("lock", &string_params(&["r", " c "])), Fault(-32602)),
        ("status of nothing", call("status", ""), Fault(-32602)),
        ("multicall of a string", call("system.multicall", &string_params(&["x"])), Fault(-32602)),
        // HTTP: methods, paths, framing.
        ("GET /", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), Status(405)),
        ("PUT /RPC2", b"PUT /RPC2 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec(), Status(405)),
        ("DELETE /", b"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), Status(405)),
        ("OPTIONS *", b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), Status(404)),
        ("POST to another path", post("/nope", b"<x/>"), Status(404)),
        ("POST to a traversal path", post("/RPC2/../../etc/passwd", b"<x/>"), Status(404)),
        ("POST to an absolute URL", post("http://evil/RPC2", b"<x/>"), Status(404)),
        ("garbage request line", b"HELLO\r\n\r\n".to_vec(), Status(400)),
        // tiny_http 0.12 deadlocks on a version above 1.1 (docs/limits.md).
        ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), NoReply),
        ("header without a colon", b"POST / HTTP/1.1\r\nHost x\r\nContent-Length: 0\r\n\r\n".to_vec(), Status(400)),
        // tiny_http ignores a Content-Length it cannot read: the body is empty.
        ("negative Content-Length", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n<x/>".to_vec(), Fault(-32700)),
        ("Content-Length not a number", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n<x/>".to_vec(), Fault(-32700)),
        ("bad chunk size", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n".to_vec(), Status(400)),
        ("Content-Length over 1 MiB", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n<x/>".to_vec(), Status(413)),
        ("Content-Length 10 GiB", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10737418240\r\n\r\n".to_vec(), NoReply),
        ("Expect something else", b"POST / HTTP/1.1\r\nHost: x\r\nExpect: magic\r\nContent-Length: 4\r\n\r\n<x/>".to_vec(), Status(417)),
    ];
    // Content-Length shorter than the body: the call is cut short, and the
    // rest is not a request. Longer: the rest never comes.
    let xml = format!(
        "<methodCall><methodName>lock</methodName><params>{}</params></methodCall>",
        string_params(&["r", "c"])
    );
    let framed = |length: usize| {
        format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n{xml}").into_bytes()
    };
    cases.push((
        "Content-Length shorter than the body",
        framed(40),
        Fault(-32700),
    ));
    // tiny_http reads a body up to 1 KiB itself, and closes at the timeout.
    cases.push((
        "Content-Length longer than the body",
        framed(xml.len() + 100),
        Closed,
    ));
    // Over 1 KiB lockd reads the body, and answers 408 at the timeout.
    let padded = format!("{xml}{}", " ".repeat(2000));
    let framed_padded = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{padded}",
        padded.len() + 100
    );
    cases.push((
        "Content-Length longer than a 2 KB body",
        framed_padded.into_bytes(),
        Status(408),
    ));
    cases
        .into_iter()
        .map(|(name, bytes, expect)| (name.to_owned(), bytes, expect))
        .collect()
}

fn billion_laughs() -> String {
    let mut dtd = String::from("<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol0 \"lol\">");
    for i in 1..10 {
        let prev = format!("&lol{};", i - 1).repeat(10);
        dtd.push_str(&format!("<!ENTITY lol{i} \"{prev}\">"));
    }
    dtd + "]><methodCall><methodName>&lol9;</methodName></methodCall>"
}

/// Send `bytes` on a new connection and read one reply (or none).
fn exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(wait)).unwrap();
    stream.set_write_timeout(Some(wait)).unwrap();
    // The server may answer and close before taking everything.
    let _ = stream.write_all(bytes);
    let mut reader = BufReader::new(stream);
    match proof::read_response(&mut reader) {
        Ok((status, body)) => Reply {
            status: Some(status),
            body: String::from_utf8_lossy(&body).into_owned(),
            closed: false,
        },
        Err(e) => Reply {
            status: None,
            body: String::new(),
            closed: !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        },
    }
}

/// A thread making normal calls until stopped; counts them, and records
/// the first failure.
struct Prober {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    handle: thread::JoinHandle<Option<String>>,
}

impl Prober {
    fn start(addr: SocketAddr) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let handle = {
            let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
            thread::spawn(move || {
                let mut rpc = Rpc::new(addr);
                while !stop.load(Ordering::SeqCst) {
                    for (method, want) in [("lock", true), ("unlock", true)] {
                        match rpc.call(method, &["probe", "prober"]) {
                            Ok(o) if o.is_nil() == want => {}
                            other => return Some(format!("prober {method}: {other:?}")),
                        }
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(20));
                }
                None
            })
        };
        Prober { stop, done, handle }
    }

    fn rounds(&self) -> u64 {
        self.done.load(Ordering::SeqCst)
    }

    /// Wait until the prober completes one more lock and unlock.
    fn one_more(&self, what: &str) {
        let before = self.rounds();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.rounds() <= before {
            assert!(
                Instant::now() < deadline && !self.handle.is_finished(),
                "the daemon stopped serving normal calls during {what}"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        let rounds = self.rounds();
        if let Some(failure) = self.handle.join().expect("prober thread") {
            panic!("{failure}");
        }
        rounds
    }
}

/// The lock directory's lock files and their contents.
fn state(daemon: &Daemon) -> Vec<(String, String)> {
    daemon
        .lock_files()
        .into_iter()
        .filter(|f| f != "probe.resource.lock")
        .map(|f| {
            let text = std::fs::read_to_string(daemon.dir.join(&f)).unwrap_or_default();
            (f, text)
        })
        .collect()
}

#[test]
fn the_bad_request_corpus_gets_its_expected_outcomes() {
    let temp = tempfile::tempdir().unwrap();
    let marker = temp.path().join("marker");
    std::fs::write(&marker, MARKER).unwrap();
    let daemon = idle_daemon();
    let mut rpc = Rpc::new(daemon.addr);
    assert!(rpc.call("lock", &["held", "owner"]).unwrap().is_nil());
    let before = state(&daemon);
    let prober = Prober::start(daemon.addr);
    let cases = corpus(&marker.to_string_lossy());
    assert!(cases.len() >= 50, "only {} cases", cases.len());
    let mut wrong = Vec::new();
    for (name, bytes, expect) in &cases {
        let wait = match expect {
            Expect::NoReply => Duration::from_secs(3),
            _ => Duration::from_secs(20),
        };
        let reply = exchange(daemon.addr, bytes, wait);
        assert!(
            !reply.body.contains(MARKER),
            "{name}: the marker file was read: {reply:?}"
        );
        if !reply.matches(*expect) {
            wrong.push(format!(
                "{name}: expected {expect:?}, got {:?} {:?} {}",
                reply.status,
                reply.fault_code(),
                reply.body.chars().take(300).collect::<String>()
            ));
        }
        assert_eq!(state(&daemon), before, "{name} changed the lock directory");
        prober.one_more(name);
    }
    assert!(
        wrong.is_empty(),
        "{} wrong outcomes:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    let rounds = prober.finish();
    assert!(!daemon.log().contains(MARKER));
    eprintln!(
        "hostile: {} bad requests got their expected outcomes; {rounds} normal lock/unlock rounds served meanwhile",
        cases.len()
    );
}

/// Linux makes `accept` honour the listener's `SO_RCVTIMEO` (which lockd
/// sets so that accepted sockets inherit it), and tiny_http ends its accept
/// loop at the first error: without a fix, lockd stopped after one idle
/// timeout without a new connection. A client on one keep-alive connection
/// must keep being served across that moment, and new connections must
/// still be accepted after it.
#[test]
fn a_quiet_listener_keeps_accepting() {
    let mut daemon = Daemon::start_with(Options {
        args: vec!["--idle-timeout".into(), "1".into()],
        ..Options::default()
    });
    let mut steady = Rpc::new(daemon.addr);
    let until = Instant::now() + Duration::from_millis(3500);
    let mut calls = 0;
    while Instant::now() < until {
        let reply = steady.call("status", &["r"]);
        assert!(
            matches!(reply, Ok(Outcome::Value(_))),
            "call {calls} on the keep-alive connection: {reply:?}"
        );
        calls += 1;
        thread::sleep(Duration::from_millis(200));
    }
    // Now nothing at all for longer than the idle timeout.
    drop(steady);
    thread::sleep(Duration::from_millis(2500));
    assert!(daemon.is_running(), "lockd stopped after a quiet spell");
    let mut fresh = Rpc::new(daemon.addr);
    assert!(fresh.call("lock", &["r", "c"]).unwrap().is_nil());
    assert!(fresh.call("unlock", &["r", "c"]).unwrap().is_nil());
    assert!(
        !daemon.log().contains("ERROR"),
        "a quiet spell is not an error:\n{}",
        daemon.log()
    );
}

fn open_stream(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// Write `piece` every `every` until the server closes the connection or
/// `limit` passes; then read what came back. Returns (reply, seconds).
fn trickle(
    addr: SocketAddr,
    head: &[u8],
    piece: &[u8],
    every: Duration,
    limit: Duration,
) -> (String, f64) {
    let started = Instant::now();
    let mut stream = open_stream(addr);
    stream.write_all(head).unwrap();
    while started.elapsed() < limit {
        if stream.write_all(piece).is_err() {
            break;
        }
        thread::sleep(every);
        // Stop as soon as the server has answered or closed.
        stream.set_nonblocking(true).unwrap();
        let mut probe = [0u8; 1];
        let answered = !matches!(
            std::io::Read::read(&mut stream, &mut probe),
            Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock
        );
        stream.set_nonblocking(false).unwrap();
        if answered {
            let (rest, _) = proof::drain(&mut stream, Duration::from_secs(5));
            let mut reply = probe.to_vec();
            reply.extend_from_slice(&rest);
            return (
                String::from_utf8_lossy(&reply).into_owned(),
                started.elapsed().as_secs_f64(),
            );
        }
    }
    let (reply, _) = proof::drain(&mut stream, Duration::from_secs(10));
    (
        String::from_utf8_lossy(&reply).into_owned(),
        started.elapsed().as_secs_f64(),
    )
}

/// Bodies that never end, or crawl, get 408 (or 413) at the body deadline;
/// others are served meanwhile.
#[test]
fn endless_and_crawling_bodies_are_cut_off() {
    let daemon = idle_daemon();
    let prober = Prober::start(daemon.addr);
    let a = Duration::from_millis(100);
    let guard = Duration::from_secs(30);
    // Name, request head, the piece sent again and again, how often, and
    // the status line expected.
    type Case = (&'static str, Vec<u8>, Vec<u8>, Duration, &'static str);
    let cases: Vec<Case> = vec![
        (
            "a body that never ends",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n<methodCall>".to_vec(),
            vec![b' '; 100],
            a,
            "HTTP/1.1 408",
        ),
        (
            "a chunked body that never ends",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            b"40\r\n                                                                \r\n".to_vec(),
            a,
            "HTTP/1.1 408",
        ),
        (
            "a chunked body flood",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            format!("10000\r\n{}\r\n", " ".repeat(0x10000)).into_bytes(),
            Duration::from_millis(1),
            "HTTP/1.1 413",
        ),
        (
            "slowloris body, one byte a second",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n".to_vec(),
            b" ".to_vec(),
            Duration::from_secs(1),
            "HTTP/1.1 408",
        ),
    ];
    let handles: Vec<_> = cases
        .into_iter()
        .map(|(name, head, piece, every, want)| {
            let addr = daemon.addr;
            thread::spawn(move || {
                let (reply, secs) = trickle(addr, &head, &piece, every, guard);
                assert!(
                    reply.starts_with(want),
                    "{name}: after {secs:.1} s got {reply:?}"
                );
                eprintln!("hostile: {name}: {want} after {secs:.1} s");
            })
        })
        .collect();
    prober.one_more("endless bodies");
    for handle in handles {
        handle.join().expect("a case failed");
    }
    prober.finish();
    assert_eq!(daemon.lock_files(), ["lockd.lock", "lockd.ranges"]);
}

/// Slowloris on the headers, one byte a second: tiny_http has no deadline
/// for a request head, so the connection lives while bytes come (a known
/// limit), others are served meanwhile, and it is closed one idle timeout
/// after the bytes stop.
#[test]
fn slowloris_headers_are_closed_once_they_stop() {
    let daemon = idle_daemon();
    let prober = Prober::start(daemon.addr);
    let seconds = proof::knob("SLOWLORIS_SECONDS", 4);
    let mut stream = open_stream(daemon.addr);
    let head = b"POST / HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    for i in 0..seconds {
        stream
            .write_all(&head[i as usize % head.len()..][..1])
            .unwrap();
        thread::sleep(Duration::from_secs(1));
        prober.one_more("slowloris");
    }
    let stopped = Instant::now();
    let (reply, closed) = proof::drain(&mut stream, Duration::from_secs(20));
    assert!(closed, "the slow connection was not closed: {reply:?}");
    eprintln!(
        "hostile: slowloris headers for {seconds} s, closed {:.1} s after the last byte",
        stopped.elapsed().as_secs_f64()
    );
    prober.finish();
}

fn raise_fd_limit(want: u64) -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        if limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        limit.rlim_cur
    }
}

/// Thousands of idle connections (half of them with a started request
/// line) do not stop normal calls, and are all closed by the idle timeout.
#[test]
fn thousands_of_idle_connections_time_out() {
    let wanted = proof::knob("IDLE_CONNECTIONS", 2000);
    let limit = raise_fd_limit(2 * wanted + 500);
    let count = wanted.min(limit.saturating_sub(500) / 2) as usize;
    assert!(
        count >= 500,
        "RLIMIT_NOFILE {limit} is too low for this test"
    );
    let daemon = idle_daemon();
    let prober = Prober::start(daemon.addr);
    let mut streams: Vec<TcpStream> = (0..count)
        .map(|i| {
            let mut stream = open_stream(daemon.addr);
            if i % 2 == 1 {
                stream.write_all(b"POST / HT").unwrap();
            }
            stream
        })
        .collect();
    prober.one_more("idle connections");
    eprintln!(
        "hostile: lockd RSS with {count} idle connections: {} MB",
        rss_kib(daemon.pid()) / 1024
    );
    let opened = Instant::now();
    let mut still_open = 0;
    for stream in &mut streams {
        let left = Duration::from_secs(60).saturating_sub(opened.elapsed());
        let (_, closed) = proof::drain(stream, left.max(Duration::from_millis(10)));
        still_open += usize::from(!closed);
    }
    assert_eq!(
        still_open, 0,
        "of {count} idle connections, {still_open} were not closed"
    );
    eprintln!(
        "hostile: {count} idle connections served around and all closed within {:.1} s",
        opened.elapsed().as_secs_f64()
    );
    prober.finish();
    drop(streams);
    let mut rpc = Rpc::new(daemon.addr);
    assert!(matches!(rpc.call("locks", &[]), Ok(Outcome::Value(_))));
}

/// The VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A header line that never ends: tiny_http 0.12 buffers it without limit
/// (upstream PR #232). Measures lockd's memory per MB sent, shows that
/// others are served meanwhile, and that the connection is closed (and
/// lockd goes on) one idle timeout after the bytes stop.
#[test]
fn an_endless_header_line_is_measured_and_survived() {
    let mut daemon = idle_daemon();
    let prober = Prober::start(daemon.addr);
    prober.one_more("start");
    let megabytes = proof::knob("HEADER_MB", 32);
    let before = rss_kib(daemon.pid());
    let mut stream = open_stream(daemon.addr);
    stream.write_all(b"POST / HTTP/1.1\r\nX-Endless: ").unwrap();
    let chunk = vec![b'a'; 1 << 20];
    let mut peak = before;
    for _ in 0..megabytes {
        stream.write_all(&chunk).unwrap();
        peak = peak.max(rss_kib(daemon.pid()));
    }
    prober.one_more("an endless header line");
    thread::sleep(Duration::from_millis(200));
    peak = peak.max(rss_kib(daemon.pid()));
    let (reply, closed) = proof::drain(&mut stream, Duration::from_secs(20));
    assert!(closed, "the endless header was not closed: {reply:?}");
    thread::sleep(Duration::from_millis(300));
    let after = rss_kib(daemon.pid());
    assert!(daemon.is_running());
    prober.finish();
    eprintln!(
        "hostile: endless header line of {megabytes} MB: lockd RSS {} MB before, {} MB peak \
         ({:.2} MB per MB sent), {} MB after the connection closed",
        before / 1024,
        peak / 1024,
        (peak.saturating_sub(before)) as f64 / 1024.0 / megabytes as f64,
        after / 1024
    );
}
