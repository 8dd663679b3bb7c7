//! lockd under systemd, without systemd: readiness and watchdog datagrams on
//! a socket the test owns, a listening socket passed as file descriptor 3,
//! a graceful stop with a request in flight, journald log lines, and
//! `/health` and `/metrics` over HTTP.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use lockd::http;

use crate::support::{self, Daemon, LOCKD, Options, PATIENCE, Process, call_body};

/// A datagram socket standing in for systemd's `$NOTIFY_SOCKET`.
struct NotifySocket {
    socket: UnixDatagram,
    /// The value for `NOTIFY_SOCKET`.
    name: String,
    _dir: Option<tempfile::TempDir>,
}

impl NotifySocket {
    fn at_path() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        NotifySocket {
            socket,
            name: path.to_str().unwrap().to_owned(),
            _dir: Some(dir),
        }
    }

    fn abstract_name() -> NotifySocket {
        let name = format!(
            "lockd-test-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        NotifySocket {
            socket,
            name: format!("@{name}"),
            _dir: None,
        }
    }

    fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = vec![("NOTIFY_SOCKET".to_owned(), self.name.clone())];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    }

    /// The next message, if one arrives within `wait`.
    fn next(&self, wait: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(wait)).unwrap();
        let mut buffer = [0u8; 4096];
        match self.socket.recv(&mut buffer) {
            Ok(n) => Some(String::from_utf8_lossy(&buffer[..n]).into_owned()),
            Err(_) => None,
        }
    }

    /// Wait for a message with a line starting with `line`; returns it.
    fn wait_for(&self, line: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Some(message) = self.next(Duration::from_millis(200)) {
                if message.lines().any(|l| l.starts_with(line)) {
                    return message;
                }
                seen.push(message);
            }
        }
        panic!("no {line:?} on the notify socket; got {seen:?}");
    }
}

/// Makes a lock directory unwritable even for root, and restores it on drop.
///
/// Tests run as root, for whom permission bits mean nothing; the immutable
/// attribute (`chattr +i`) stops root too: no file can be created in or
/// removed from the directory. Where the filesystem has no such attribute,
/// the directory is renamed away instead, so writes to its path fail.
struct Unwritable {
    dir: PathBuf,
    moved_to: Option<PathBuf>,
}

impl Unwritable {
    fn new(dir: &Path) -> Unwritable {
        let chattr = Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .stderr(Stdio::null())
            .status();
        if chattr.is_ok_and(|s| s.success()) {
            return Unwritable {
                dir: dir.to_owned(),
                moved_to: None,
            };
        }
        let away = dir.with_extension("away");
        std::fs::rename(dir, &away).unwrap();
        Unwritable {
            dir: dir.to_owned(),
            moved_to: Some(away),
        }
    }
}

impl Drop for Unwritable {
    fn drop(&mut self) {
        match &self.moved_to {
            None => {
                let _ = Command::new("chattr").arg("-i").arg(&self.dir).status();
            }
            Some(away) => {
                let _ = std::fs::rename(away, &self.dir);
            }
        }
    }
}

/// GET `path`: status code and body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let reply = support::raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        Duration::from_secs(10),
    );
    let status = reply
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP reply: {reply:?}"));
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Poll `GET /health` until its status is `want`; returns the body.
fn wait_for_health(addr: SocketAddr, want: u16) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, body) = get(addr, "/health");
        if status == want {
            return body;
        }
        assert!(Instant::now() < deadline, "/health stayed {status}: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ready_only_once_the_port_accepts() {
    let notify = NotifySocket::at_path();
    let temp = tempfile::tempdir().unwrap();
    let _lockd = Process::spawn(
        support::clean_command(LOCKD)
            .arg("--dir")
            .arg(temp.path().join("locks"))
            .args(["--listen", "127.0.0.1:0"])
            .env("NOTIFY_SOCKET", &notify.name),
    );
    // The test learns the address from the READY message itself, and
    // connects at once: READY sent before listen() would fail here.
    let ready = notify.wait_for("READY=1");
    let url = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS=listening on "))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("READY carries the address: {ready:?}"));
    let out = support::python(url, "print(s.lock('r', 'c'))");
    assert_eq!(out, "None\n");
}

#[test]
fn abstract_notify_socket_and_stopping() {
    let notify = NotifySocket::abstract_name();
    let mut daemon = Daemon::start_with(Options {
        env: notify.env(&[]),
        ..Options::default()
    });
    notify.wait_for("READY=1");
    let status = daemon.signal_and_wait(libc::SIGTERM);
    assert_eq!(status.code(), Some(0));
    notify.wait_for("STOPPING=1");
}

#[test]
fn watchdog_pings_only_while_the_directory_is_writable() {
    let notify = NotifySocket::at_path();
    let daemon = Daemon::start_with(Options {
        env: notify.env(&[("WATCHDOG_USEC", "400000")]),
        ..Options::default()
    });
    notify.wait_for("READY=1");
    notify.wait_for("WATCHDOG=1");
    notify.wait_for("WATCHDOG=1");

    let unwritable = Unwritable::new(&daemon.dir);
    let status = notify.wait_for("STATUS=unhealthy: ").to_owned();
    assert!(status.contains("could not "), "{status}");
    // Pings come only after a self-test that passed, and none can pass now:
    // watch for many self-test intervals (0.2 s each).
    let quiet_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < quiet_until {
        if let Some(message) = notify.next(Duration::from_millis(100)) {
            assert!(
                !message.lines().any(|l| l == "WATCHDOG=1"),
                "pinged while the directory is unwritable: {message:?}"
            );
        }
    }
    drop(unwritable);
    notify.wait_for("STATUS=healthy");
    notify.wait_for("WATCHDOG=1");
}

#[test]
fn health_flips_with_the_directory() {
    let daemon = Daemon::start();
    assert_eq!(get(daemon.addr, "/health"), (200, "ok\n".to_owned()));
    let post = support::raw(
        daemon.addr,
        b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    );
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    assert!(post.contains("\r\nAllow: GET\r\n"), "{post}");

    let unwritable = Unwritable::new(&daemon.dir);
    let why = wait_for_health(daemon.addr, 503);
    // "could not create" or, if the change came mid-test, "could not remove".
    assert!(why.starts_with("could not "), "{why}");
    // The lock core sees the same failure; the metrics count it.
    let out = daemon.py("call(lambda: s.lock('r', 'c'))");
    assert!(
        out.starts_with("FAULT -32603 lock directory failure"),
        "{out}"
    );
    let metrics = parse_metrics(&get(daemon.addr, "/metrics").1);
    assert_eq!(metrics["lockd_errors_total"], 1.0);
    assert_eq!(
        metrics["lockd_requests_total{method=\"lock\",outcome=\"error\"}"],
        1.0
    );

    drop(unwritable);
    assert_eq!(wait_for_health(daemon.addr, 200), "ok\n");
    assert_eq!(daemon.py("call(lambda: s.lock('r', 'c'))"), "None\n");
}

#[test]
fn metrics_parse_and_move_with_calls() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("locks");
    std::fs::create_dir(&dir).unwrap();
    // A lock gocept.lockd took an hour ago.
    let legacy = dir.join("old.resource.lock");
    std::fs::write(&legacy, "node9").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&legacy)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    let daemon = Daemon::start_in(&dir);

    let (status, text) = get(daemon.addr, "/metrics");
    assert_eq!(status, 200);
    let before = parse_metrics(&text);
    assert_eq!(before["lockd_locks_held"], 1.0);
    assert!(before["lockd_oldest_lock_age_seconds"] >= 3600.0, "{text}");

    daemon.py("call(lambda: s.lock('r1', 'c1'))\n\
         call(lambda: s.lock('r1', 'c2'))\n\
         call(lambda: s.lock('r2', 'c1'))\n\
         call(lambda: s.unlock('r1', 'c1'))\n\
         call(lambda: s.status('r2'))\n\
         call(lambda: s.frobnicate())");
    let after = parse_metrics(&get(daemon.addr, "/metrics").1);
    let delta = |key: &str| after[key] - before[key];
    let requests = |method: &str, outcome: &str| {
        delta(&format!(
            "lockd_requests_total{{method=\"{method}\",outcome=\"{outcome}\"}}"
        ))
    };
    assert_eq!(requests("lock", "ok"), 2.0);
    assert_eq!(requests("lock", "refused"), 1.0);
    assert_eq!(requests("unlock", "ok"), 1.0);
    assert_eq!(requests("status", "ok"), 1.0);
    assert_eq!(requests("other", "fault"), 1.0);
    assert_eq!(delta("lockd_refusals_total"), 1.0);
    assert_eq!(delta("lockd_errors_total"), 0.0);
    assert_eq!(after["lockd_locks_held"], 2.0);
    assert_eq!(delta("lockd_request_duration_seconds_count"), 6.0);
    assert!(delta("lockd_request_duration_seconds_sum") > 0.0);
    assert!(delta("lockd_fsync_duration_seconds_count") >= 1.0);

    let put = support::raw(
        daemon.addr,
        b"DELETE /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    );
    assert!(put.starts_with("HTTP/1.1 405"), "{put}");
    assert!(put.contains("\r\nAllow: GET\r\n"), "{put}");
}

/// A metric or label name as the Prometheus text format allows it.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars().enumerate().all(|(i, c)| {
            c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
        })
}

/// Check a sample's labels (`key="value",...`); the `le` label's value.
fn bucket_bound(line: &str, labels: &str) -> Option<String> {
    let mut le = None;
    for pair in labels.split(',').filter(|p| !p.is_empty()) {
        let (key, quoted) = pair.split_once('=').expect("label=\"value\"");
        assert!(is_name(key), "{line}");
        let inner = quoted
            .strip_prefix('"')
            .and_then(|q| q.strip_suffix('"'))
            .unwrap_or_else(|| panic!("unquoted label value: {line}"));
        assert!(!inner.contains(['"', '\\', '\n']), "{line}");
        if key == "le" {
            le = Some(inner.to_owned());
        }
    }
    le
}

/// Every histogram's buckets grow and end at +Inf with its count, and
/// every family lockd documents is there.
fn check_families(
    text: &str,
    types: &HashMap<String, String>,
    buckets: &HashMap<String, Vec<(String, f64)>>,
    samples: &HashMap<String, f64>,
) {
    for (family, list) in buckets {
        assert_eq!(list.last().unwrap().0, "+Inf", "{family}");
        assert!(
            list.windows(2).all(|w| w[0].1 <= w[1].1),
            "{family}: {list:?}"
        );
        assert_eq!(list.last().unwrap().1, samples[&format!("{family}_count")]);
    }
    for family in [
        "lockd_locks_held",
        "lockd_requests_total",
        "lockd_refusals_total",
        "lockd_errors_total",
        "lockd_request_duration_seconds",
        "lockd_fsync_duration_seconds",
        "lockd_oldest_lock_age_seconds",
    ] {
        assert!(types.contains_key(family), "{family} missing:\n{text}");
    }
}

/// Parse the Prometheus text format strictly: every line is a `# HELP`, a
/// `# TYPE` or a sample of a declared family. Returns each sample's value
/// under `name{labels}` as written.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helped = Vec::new();
    let mut samples = HashMap::new();
    let mut buckets: HashMap<String, Vec<(String, f64)>> = HashMap::new();
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("# HELP name text");
            assert!(is_name(name) && !help.is_empty(), "{line}");
            helped.push(name.to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
            assert!(is_name(name), "{line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "one TYPE per family: {line}"
            );
            continue;
        }
        assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
        let (series, value) = line.rsplit_once(' ').expect("name value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').expect("labels end with }");
                (name, labels)
            }
            None => (series, ""),
        };
        assert!(is_name(name), "{line}");
        let le = bucket_bound(line, labels);
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| types.get(*base).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        let kind = types
            .get(family)
            .unwrap_or_else(|| panic!("sample before its # TYPE: {line}"));
        assert!(helped.iter().any(|h| h == family), "no # HELP: {line}");
        if kind == "counter" {
            assert!(name.ends_with("_total") && value >= 0.0, "{line}");
        }
        if name.ends_with("_bucket") {
            buckets
                .entry(family.to_owned())
                .or_default()
                .push((le.expect("a bucket has le"), value));
        }
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "duplicate series: {line}"
        );
    }
    check_families(text, &types, &buckets, &samples);
    samples
}

#[test]
fn journal_lines_carry_priorities_and_no_time() {
    // JOURNAL_STREAM names stderr's device and inode, as systemd sets it.
    let daemon = Daemon::start_with(Options {
        shell_prelude: Some("export JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2)".into()),
        ..Options::default()
    });
    daemon.py("s.lock('r', 'c')");
    support::post(daemon.addr, "/", "<methodCall><oops>");
    assert!(daemon.wait_for_log("faulted (-32700): the request is not well-formed"));
    let log = daemon.log();
    for line in log.lines() {
        let priority = line
            .strip_prefix('<')
            .and_then(|rest| rest.split_once('>'))
            .map(|(p, _)| p);
        assert!(
            matches!(priority, Some("3" | "4" | "5" | "6" | "7")),
            "a line without a syslog priority: {line:?}\n{log}"
        );
        assert!(!line.contains("Z INFO"), "a timestamp: {line:?}");
    }
    assert!(log.contains("<6>lockd "), "{log}");
    assert!(log.contains("<6>lock \"r\" by \"c\""), "{log}");
    assert!(log.contains("<4>call from 127.0.0.1:"), "{log}");
}

#[test]
fn journal_stream_naming_another_file_is_ignored() {
    // Inherited by a shell whose stderr now goes elsewhere: plain lines.
    let daemon = Daemon::start_with(Options {
        env: vec![("JOURNAL_STREAM".into(), "8:12345".into())],
        ..Options::default()
    });
    daemon.py("s.lock('r', 'c')");
    assert!(daemon.wait_for_log("granted"));
    for line in daemon.log().lines() {
        assert!(!line.starts_with('<'), "a syslog priority: {line:?}");
        assert!(
            line.contains("Z INFO") || line.contains("Z WARN"),
            "no timestamp: {line:?}"
        );
    }
}

#[test]
fn sigterm_lets_a_request_in_flight_finish() {
    let mut daemon = Daemon::start();
    let body = call_body("lock", &["r", "c"]);
    let (first, rest) = body.split_at(body.len() / 2);
    let mut stream = TcpStream::connect(daemon.addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    // A chunked body in two halves, framed by hand: http::post writes
    // Content-Length bodies only.
    stream
        .write_all(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n\
              Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
        )
        .unwrap();
    // lockd answers 100 Continue when it starts reading the body: from
    // then on the request is in flight.
    let mut reply = Vec::new();
    let mut chunk = [0u8; 1024];
    while !String::from_utf8_lossy(&reply).contains("\r\n\r\n") {
        let n = stream.read(&mut chunk).expect("100 Continue");
        assert!(n > 0, "closed before 100 Continue");
        reply.extend_from_slice(&chunk[..n]);
    }
    let interim = String::from_utf8_lossy(&reply).into_owned();
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "{interim}"
    );
    write!(stream, "{:x}\r\n{first}\r\n", first.len()).unwrap();

    lockd::sys::kill(daemon.pid(), libc::SIGTERM).expect("lockd runs");
    assert!(daemon.wait_for_log("stopping: "));
    // It stops accepting: new connections are refused...
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(daemon.addr).is_ok() {
        assert!(Instant::now() < deadline, "still accepting connections");
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...but the request in flight completes.
    write!(stream, "{:x}\r\n{rest}\r\n0\r\n\r\n", rest.len()).unwrap();
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("<nil/>"), "{reply}");
    let status = daemon.signal_and_wait(0);
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    assert!(daemon.log().contains("stopped on signal 15"));
    assert!(daemon.lock_files().contains(&"r.resource.lock".to_owned()));
}

#[test]
fn socket_activation_serves_the_passed_socket() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("locks");

    let mut first = support::spawn_activated(&listener, &dir);
    assert!(first.wait_for_log(&format!(
        "listening on http://{addr}/ (socket from systemd)"
    )));
    let url = format!("http://{addr}");
    assert_eq!(support::python(&url, "print(s.lock('r', 'c'))"), "None\n");
    assert_eq!(first.signal_and_wait(libc::SIGTERM).code(), Some(0));

    // While no lockd runs, the kernel queues a caller on the socket (which
    // the test, like systemd, still holds); the next lockd answers it.
    let body = call_body("status", &["r"]);
    let mut queued = TcpStream::connect(addr).unwrap();
    queued.set_read_timeout(Some(PATIENCE)).unwrap();
    let request = http::post(
        "/RPC2",
        &[("Host", "x"), ("Connection", "close")],
        body.as_bytes(),
    );
    queued.write_all(&request).unwrap();
    let mut second = support::spawn_activated(&listener, &dir);
    let mut reply = String::new();
    let _ = queued.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.contains("<string>c</string>") && reply.contains("<boolean>1</boolean>"),
        "{reply}"
    );
    assert_eq!(second.signal_and_wait(libc::SIGTERM).code(), Some(0));
}

#[test]
fn listen_fds_for_another_process_are_ignored() {
    // LISTEN_PID names someone else: lockd binds --listen itself.
    let daemon = Daemon::start_with(Options {
        env: vec![
            ("LISTEN_PID".into(), "1".into()),
            ("LISTEN_FDS".into(), "1".into()),
        ],
        ..Options::default()
    });
    assert!(!daemon.log().contains("socket from systemd"));
    assert_eq!(daemon.py("print(s.lock('r', 'c'))"), "None\n");
}

#[test]
fn exits_for_a_restart_when_no_thread_can_serve_a_connection() {
    // tiny_http's accept thread panics when it cannot start a thread for a
    // connection (at TasksMax= under systemd) and closes the socket: lockd
    // must then exit 1 for Restart=on-failure, not live on deaf while its
    // self-test keeps feeding the watchdog. The process limit is enforced
    // for users other than root, so lockd runs as nobody with room for its
    // own threads and a few connections.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "this test runs lockd as user nobody: run the tests as root (as .ci/run does)"
    );
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("locks");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(
        temp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut command = support::clean_command(LOCKD);
    command
        .arg("--dir")
        .arg(&dir)
        .args(["--listen", "127.0.0.1:0"])
        .uid(65534)
        .gid(65534);
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            // lockd starts 10 threads; this leaves room for a few more.
            let limit = libc::rlimit {
                rlim_cur: 14,
                rlim_max: 14,
            };
            if libc::setrlimit(libc::RLIMIT_NPROC, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut lockd = Process::spawn(&mut command);
    assert!(lockd.wait_for_log("listening on http://"));
    let log = lockd.log();
    let addr: SocketAddr = log
        .split("listening on http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok())
        .expect("an address in the start-up line");
    // Keep-alive connections that each got an answer hold a thread each;
    // soon no thread can be started for the next one.
    let mut connections = Vec::new();
    for _ in 0..20 {
        let Ok(mut stream) = TcpStream::connect(addr) else {
            break;
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let _ = stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut answer = [0u8; 512];
        if !matches!(stream.read(&mut answer), Ok(n) if n > 0) {
            break;
        }
        connections.push(stream);
    }
    let status = lockd.wait_exit();
    assert_eq!(status.code(), Some(1), "{}", lockd.log());
    assert!(lockd.wait_for_log("the HTTP server stopped accepting connections"));
}
