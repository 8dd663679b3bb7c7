//! No client can hold up another: while one misbehaves on its own
//! connections, a well-behaved caller's lock and unlock calls (each on a new
//! connection, as a fresh caller's would be) keep being answered, and a
//! connection whose replies cannot be sent is closed after the send timeout.
//!
//! The misbehaviours: pipelining calls and never reading the replies (also
//! with every reply waiting for an fsync, handed to the syncer); reading
//! a large `locks()` reply slowly; hundreds of connections that send a call
//! and never read; a process stopped with SIGSTOP with its calls in flight.
//!
//! Why the bound proves the point: the stall being guarded against lasts the
//! send timeout, 10 s, per reply that cannot be written (a reply stuck behind
//! an unread socket held up every other reply for that long). Each test's
//! misbehaviour lasts longer than that, and every well-behaved call must be
//! answered within [`BOUND`], 5 s: generous for a loaded 2-core machine (a
//! CI run with the GlusterFS tests beside it once took 3.2 s for one call
//! on a fresh connection while 300 others were open), and still half a
//! single stuck reply. lockd answers such calls in about a
//! millisecond when nothing else runs.

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use lockd::{http, sys, xmlrpc};

use crate::proof::{Outcome, Rpc};
use crate::support::{self, Daemon, Options};

/// How long a well-behaved call may take while another client misbehaves.
const BOUND: Duration = Duration::from_secs(5);

/// lockd's send timeout (`WRITE_TIMEOUT` in lib.rs): how long a reply may
/// wait for a client to read before its connection is closed.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the well-behaved caller keeps calling: past the send timeout,
/// so that the moment the misbehaving connection is closed is covered too.
const WATCH: Duration = Duration::from_secs(13);

/// One call on a new connection; its reply body, or why there is none,
/// given up after `BOUND` plus a margin (so a stall is seen, not waited out).
fn call_once(addr: SocketAddr, method: &str, params: &[&str]) -> Result<Vec<u8>, String> {
    let guard = BOUND + Duration::from_secs(2);
    let stream = TcpStream::connect_timeout(&addr, guard).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(guard)).ok();
    stream.set_write_timeout(Some(guard)).ok();
    let body = support::call_body(method, params);
    let host = addr.to_string();
    let request = http::post(
        "/RPC2",
        &[
            ("Host", host.as_str()),
            ("Content-Type", "text/xml"),
            ("Connection", "close"),
        ],
        body.as_bytes(),
    );
    (&stream)
        .write_all(&request)
        .map_err(|e| format!("send: {e}"))?;
    let mut reader = BufReader::new(stream);
    http::read_response(&mut reader)
        .map(|response| response.body)
        .map_err(|e| format!("no reply: {e:?}"))
}

/// Lock and unlock `resource` over and over for `WATCH`, each call on a new
/// connection; panics if a call is not answered with nil within `BOUND`.
/// Returns the number of cycles and the slowest call.
fn keep_calling(addr: SocketAddr, resource: &str, what: &str) -> (u32, Duration) {
    let start = Instant::now();
    let (mut cycles, mut slowest) = (0, Duration::ZERO);
    while start.elapsed() < WATCH {
        for method in ["lock", "unlock"] {
            let began = Instant::now();
            let reply = call_once(addr, method, &[resource, "good-client"]);
            let took = began.elapsed();
            let nil = reply
                .as_ref()
                .is_ok_and(|body| matches!(xmlrpc::parse_response(body), Ok(Ok(_))));
            assert!(
                nil && took <= BOUND,
                "while {what}, {:.1} s into it, {method} {resource} took {:.2} s (bound {BOUND:?}): {:?}",
                start.elapsed().as_secs_f64(),
                took.as_secs_f64(),
                reply.map(|b| String::from_utf8_lossy(&b).into_owned())
            );
            slowest = slowest.max(took);
        }
        cycles += 1;
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "stalls: while {what}: {cycles} lock+unlock cycles, slowest call {:.1} ms",
        slowest.as_secs_f64() * 1000.0
    );
    (cycles, slowest)
}

/// The bytes of `count` pipelined lock calls on one connection.
fn pipelined_locks(addr: SocketAddr, prefix: &str, count: usize) -> Vec<u8> {
    let host = addr.to_string();
    let mut bytes = Vec::new();
    for i in 0..count {
        let resource = format!("{prefix}-{i}");
        let body = support::call_body("lock", &[&resource, "stuck-client"]);
        bytes.extend(http::post(
            "/RPC2",
            &[("Host", host.as_str()), ("Content-Type", "text/xml")],
            body.as_bytes(),
        ));
    }
    bytes
}

/// Whether lockd logged `why` it closed a connection, within twice the send
/// timeout and a margin from `since`. Twice: the timeout applies to each
/// write, and the kernel may take part of one before the buffers are full,
/// which starts the timeout again.
fn closed_because(log: &dyn Fn() -> String, why: &[&str], since: Instant) -> bool {
    let deadline = since + 2 * SEND_TIMEOUT + BOUND + Duration::from_secs(5);
    while Instant::now() < deadline {
        let log = log();
        if why.iter().any(|w| log.contains(w)) {
            return true;
        }
        thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A stuck reply: the send timeout passed.
const SEND_TIMED_OUT: &str = "could not be sent within the send timeout";
/// More pipelined calls than lockd keeps for one connection.
const TOO_DEEP: &str = "calls without reading the replies";

/// A lock directory with `count` locks held, as gocept.lockd wrote them.
fn held_locks(count: usize) -> (tempfile::TempDir, std::path::PathBuf) {
    let temp = tempfile::tempdir().expect("temporary directory");
    let dir = temp.path().join("locks");
    std::fs::create_dir(&dir).expect("lock directory");
    for i in 0..count {
        std::fs::write(dir.join(format!("held-{i:05}.resource.lock")), "holder")
            .expect("lock file");
    }
    (temp, dir)
}

/// A client sends lock calls back to back on one keep-alive connection and
/// never reads a reply (what a stuck process with pipelined calls looks
/// like once the socket buffers fill): others are answered, and its
/// connection is closed after the send timeout.
#[test]
fn pipelined_calls_never_read_hold_up_no_one() {
    let daemon = Daemon::start();
    let addr = daemon.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut stream = TcpStream::connect(addr).expect("connect");
            stream.set_write_timeout(Some(Duration::from_secs(1))).ok();
            let batch = pipelined_locks(addr, "flood", 200);
            let mut sent = 0usize;
            // Keep sending until lockd closes the connection (the write
            // fails) or the test ends; a write timing out just means the
            // buffers are full.
            while !stop.load(Ordering::SeqCst) {
                match stream.write_all(&batch) {
                    Ok(()) => sent += 200,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => return (sent, true),
                }
            }
            (sent, false)
        })
    };
    // Let the flood fill the buffers first.
    thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    let (cycles, _) = keep_calling(addr, "good-1", "a client pipelines calls and never reads");
    assert!(cycles > 10, "only {cycles} cycles");
    assert!(
        closed_because(&|| daemon.log(), &[SEND_TIMED_OUT, TOO_DEEP], started),
        "the connection that never reads was not closed"
    );
    stop.store(true, Ordering::SeqCst);
    let (sent, cut) = flooding.join().expect("the flooding thread");
    eprintln!("stalls: the flooding client sent {sent} calls; its connection cut: {cut}");
}

/// Clients pipeline calls that all change the directory (lock and unlock by
/// turns) and never read, slowly enough that their connections are not
/// closed for pipelining too deep before their buffers fill (lockd's socket
/// is given a small send buffer, the clients' a small receive buffer; the
/// clients are tests/stalls/flood.py),
/// while a busy keep-alive client keeps an fsync running nearly all the
/// time: so most of their replies are handed to the syncer, which must not
/// wait for them once the buffers are full.
#[test]
fn pipelined_changes_never_read_hold_up_no_one() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    // Accepted sockets inherit it: Linux makes it 8 KiB.
    sys::set_socket_option(listener.as_fd(), libc::SO_SNDBUF, 4096).expect("SO_SNDBUF");
    let addr = listener.local_addr().expect("address");
    let temp = tempfile::tempdir().expect("temporary directory");
    let daemon = support::spawn_activated(&listener, &temp.path().join("locks"));
    assert!(daemon.wait_for_log("listening on"), "{}", daemon.log());
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut rpc = Rpc::new(addr);
            while !stop.load(Ordering::SeqCst) {
                for method in ["lock", "unlock"] {
                    let outcome = rpc.call(method, &["busy", "busy-client"]);
                    assert!(
                        outcome.as_ref().is_ok_and(Outcome::is_nil),
                        "busy client: {method}: {outcome:?}"
                    );
                }
            }
        })
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/stalls/flood.py");
    let flooding: Vec<_> = (0..2)
        .map(|n| {
            Command::new("python3")
                .arg(script)
                .arg(addr.ip().to_string())
                .arg(addr.port().to_string())
                .arg(format!("flood{n}"))
                .arg("30")
                .stdout(Stdio::piped())
                .spawn()
                .expect("python3 runs tests/stalls/flood.py")
        })
        .collect();
    thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    let (cycles, _) = keep_calling(addr, "good-1", "clients pipeline changes and never read");
    assert!(cycles > 10, "only {cycles} cycles");
    let closed = closed_because(&|| daemon.log(), &[SEND_TIMED_OUT], started);
    assert!(
        closed,
        "the connections that never read were not closed; lockd logged:\n{}",
        daemon
            .log()
            .lines()
            .filter(|l| !l.contains("granted") && !l.contains("released"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    stop.store(true, Ordering::SeqCst);
    busy.join().expect("the busy client");
    for flooder in flooding {
        let output = flooder.wait_with_output().expect("flood.py");
        eprintln!(
            "stalls: flood.py {}",
            String::from_utf8_lossy(&output.stdout).trim()
        );
    }
}

/// Three clients call `locks()` with 20,000 locks held (a reply of about 2
/// MB each) and read it a kilobyte a second: others are answered meanwhile.
#[test]
fn large_replies_read_slowly_hold_up_no_one() {
    let (_temp, dir) = held_locks(20_000);
    let daemon = Daemon::start_with(Options {
        dir: Some(dir),
        ..Options::default()
    });
    let addr = daemon.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).expect("connect");
                stream.set_read_timeout(Some(Duration::from_secs(1))).ok();
                let body = support::call_body("locks", &[]);
                let host = addr.to_string();
                let request = http::post("/RPC2", &[("Host", host.as_str())], body.as_bytes());
                stream.write_all(&request).expect("send locks()");
                let mut got = 0;
                let mut chunk = [0u8; 1024];
                while !stop.load(Ordering::SeqCst) {
                    match stream.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(_) => {}
                    }
                    thread::sleep(Duration::from_secs(1));
                }
                got
            })
        })
        .collect();
    thread::sleep(Duration::from_secs(1));
    let (cycles, _) = keep_calling(addr, "good-2", "three clients read locks() slowly");
    assert!(cycles > 10, "only {cycles} cycles");
    stop.store(true, Ordering::SeqCst);
    for reader in readers {
        let got = reader.join().expect("a slow reader");
        eprintln!("stalls: a slow reader got {got} bytes of its locks() reply");
    }
}

/// 300 connections each send a lock call and never read: others are
/// answered, and each of the 300 got its lock.
#[test]
fn hundreds_of_connections_that_never_read_hold_up_no_one() {
    let daemon = Daemon::start();
    let addr = daemon.addr;
    let host = addr.to_string();
    let silent: Vec<TcpStream> = (0..300)
        .map(|i| {
            let mut stream = TcpStream::connect(addr).expect("connect");
            let resource = format!("silent-{i}");
            let body = support::call_body("lock", &[&resource, "silent-client"]);
            let request = http::post("/RPC2", &[("Host", host.as_str())], body.as_bytes());
            stream.write_all(&request).expect("send");
            stream
        })
        .collect();
    let (cycles, _) = keep_calling(addr, "good-3", "300 connections never read");
    assert!(cycles > 10, "only {cycles} cycles");
    let held = daemon
        .lock_files()
        .iter()
        .filter(|f| f.starts_with("silent-"))
        .count();
    assert_eq!(
        held, 300,
        "the silent clients' calls were not all carried out"
    );
    drop(silent);
}

/// A process sends twenty `locks()` calls (20,000 locks held: replies of
/// about 2 MB each, more than the socket buffers take) and is stopped with
/// SIGSTOP before it reads: others are answered, and its connection is
/// closed once the send timeout passes.
#[test]
fn a_stopped_process_holds_up_no_one() {
    let (_temp, dir) = held_locks(20_000);
    let daemon = Daemon::start_with(Options {
        dir: Some(dir),
        ..Options::default()
    });
    let addr = daemon.addr;
    let script = "import os, signal, socket, sys\n\
                  s = socket.create_connection((sys.argv[1], int(sys.argv[2])))\n\
                  s.sendall(sys.stdin.buffer.read())\n\
                  os.kill(os.getpid(), signal.SIGSTOP)\n\
                  s.recv(1)\n";
    let mut child = match Command::new("python3")
        .args([
            "-c",
            script,
            &addr.ip().to_string(),
            &addr.port().to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return support::cannot_run("a_stopped_process_holds_up_no_one", &e.to_string()),
    };
    let host = addr.to_string();
    let body = support::call_body("locks", &[]);
    let call = http::post("/RPC2", &[("Host", host.as_str())], body.as_bytes());
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&call.repeat(20))
            .expect("the calls to the child");
    }
    let started = Instant::now();
    let (cycles, _) = keep_calling(addr, "good-4", "a process with calls in flight is stopped");
    assert!(cycles > 10, "only {cycles} cycles");
    let closed = closed_because(&|| daemon.log(), &[SEND_TIMED_OUT], started);
    let _ = sys::kill(child.id(), libc::SIGCONT);
    let _ = child.kill();
    let _ = child.wait();
    assert!(closed, "the stopped process's connection was not closed");
}
