//! The load generator `lockd-bench` against the real daemon: a short smoke
//! run in both modes must see only the expected replies and complete cycles.
//! Benchmarks are not tests: nothing here looks at how fast it was.
//!
//! lockd is the other package of the workspace, so Cargo does not hand this
//! test its path: it is taken from the same target directory, where
//! `cargo test --workspace` has just built it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const BENCH: &str = env!("CARGO_BIN_EXE_lockd-bench");

/// A lockd on a port of its own and a fresh lock directory, killed on drop.
struct Daemon {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Daemon {
    fn start() -> Daemon {
        let lockd = PathBuf::from(BENCH).with_file_name("lockd");
        assert!(
            lockd.exists(),
            "{} is missing: run `cargo test --workspace` (or `cargo build`) at the top of the repository",
            lockd.display()
        );
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut child = Command::new(&lockd)
            .arg("--dir")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0", "--log-level", "info"])
            .env_remove("RUST_LOG")
            .env_remove("LISTEN_FDS")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("STATE_DIRECTORY")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start lockd");
        // The start-up line names the address; later lines are drained so
        // that lockd never blocks on a full pipe.
        let stderr = child.stderr.take().expect("piped stderr");
        let (found, address) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split('/').next().unwrap_or_default().to_owned();
                    let _ = found.send(addr);
                }
            }
        });
        let addr = address
            .recv_timeout(Duration::from_secs(20))
            .expect("lockd logs its address within 20 s")
            .parse()
            .expect("a socket address");
        Daemon { child, addr, dir }
    }

    /// The lock directory's file names, sorted, without content files.
    fn lock_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .expect("read the lock directory")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|f| !(f.starts_with(".lockd-") && f.ends_with(".tmp")))
            .collect();
        names.sort();
        names
    }

    /// Call `lock(resource, client)` over a connection of its own; the reply.
    fn lock(&self, resource: &str, client: &str) -> String {
        let body = format!(
            "<?xml version='1.0'?><methodCall><methodName>lock</methodName><params>\
             <param><value><string>{resource}</string></value></param>\
             <param><value><string>{client}</string></value></param>\
             </params></methodCall>"
        );
        let mut stream = TcpStream::connect(self.addr).expect("connect to lockd");
        write!(
            stream,
            "POST /RPC2 HTTP/1.1\r\nHost: {}\r\nContent-Type: text/xml\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .expect("send the call");
        let mut reply = String::new();
        stream.read_to_string(&mut reply).expect("read the reply");
        reply
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run lockd-bench against `daemon` with `args`; returns its exit status
/// code, its stdout and its `RESULT` JSON line. Clients connect 2 ms apart:
/// tiny_http 0.12 can leave one of a burst of connections unserved
/// (docs/limits.md), which is not what these tests are about.
fn bench(daemon: &Daemon, args: &[&str]) -> (Option<i32>, String, String) {
    let addr = daemon.addr.to_string();
    let mut all = vec!["--addr", &addr, "--stagger-ms", "2"];
    all.extend_from_slice(args);
    let output = Command::new(BENCH)
        .args(&all)
        .output()
        .expect("run lockd-bench");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let result = stdout
        .lines()
        .find_map(|line| line.strip_prefix("RESULT "))
        .unwrap_or_else(|| {
            panic!(
                "no RESULT line ({}):\n{stdout}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
        })
        .to_owned();
    (output.status.code(), stdout, result)
}

/// Run lockd-bench for about a second in `mode`; it must succeed.
fn smoke(daemon: &Daemon, mode: &str) -> String {
    let pid = daemon.child.id().to_string();
    let args = [
        "--clients",
        "4",
        "--warmup",
        "0.2",
        "--duration",
        "1",
        "--mode",
        mode,
        "--server-pid",
        &pid,
    ];
    let (code, stdout, result) = bench(daemon, &args);
    assert_eq!(code, Some(0), "lockd-bench {mode} failed:\n{stdout}");
    result
}

/// A number field of the flat JSON summary.
fn field(json: &str, name: &str) -> f64 {
    let key = format!("\"{name}\":");
    let start = json
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {json}"))
        + key.len();
    json[start..]
        .split([',', '}'])
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} is not a number in {json}"))
}

#[test]
fn load_generator_checks_every_reply_in_both_modes() {
    let daemon = Daemon::start();
    let distinct = smoke(&daemon, "distinct");
    assert_eq!(field(&distinct, "unexpected"), 0.0, "{distinct}");
    assert_eq!(field(&distinct, "errors"), 0.0, "{distinct}");
    assert!(field(&distinct, "cycles") > 0.0, "{distinct}");
    assert!(field(&distinct, "per_client_min") > 0.0, "{distinct}");
    let contended = smoke(&daemon, "contended");
    assert_eq!(field(&contended, "unexpected"), 0.0, "{contended}");
    assert_eq!(field(&contended, "errors"), 0.0, "{contended}");
    assert!(field(&contended, "cycles") > 0.0, "{contended}");
    // Every client released what it held when the run ended.
    assert_eq!(daemon.lock_files(), ["lockd.lock", "lockd.ranges"]);
}

#[test]
fn load_generator_counts_a_fault_as_unexpected() {
    let daemon = Daemon::start();
    // client-0's resource is taken by someone else: its every lock faults.
    let reply = daemon.lock("bench-0", "intruder");
    assert!(reply.contains("<nil/>"), "{reply}");
    let (code, stdout, result) = bench(
        &daemon,
        &["--clients", "2", "--warmup", "0", "--duration", "0.5"],
    );
    assert_eq!(code, Some(1), "{stdout}");
    let result = result.as_str();
    assert!(field(result, "unexpected") > 0.0, "{result}");
    assert!(
        result.contains("already locked") || result.contains("AlreadyLocked"),
        "{result}"
    );
    assert_eq!(field(result, "per_client_min"), 0.0, "{result}");
}

#[test]
fn null_responder_answers_nil() {
    let null = PathBuf::from(env!("CARGO_BIN_EXE_lockd-null"));
    let mut child = Command::new(null)
        .args(["--listen", "127.0.0.1:0", "--threads", "1"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lockd-null");
    let mut line = String::new();
    let stderr = child.stderr.take().expect("piped stderr");
    BufReader::new(stderr)
        .read_line(&mut line)
        .expect("read lockd-null's first line");
    let addr = line
        .split("listening on http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    let result = Command::new(BENCH)
        .args(["--addr", &addr, "--clients", "2", "--warmup", "0"])
        .args(["--duration", "0.3", "--expect", "noop"])
        .output()
        .expect("run lockd-bench");
    let _ = child.kill();
    let _ = child.wait();
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert_eq!(result.status.code(), Some(0), "{stdout}");
}

#[test]
fn null_responder_answers_help_and_version() {
    let null = env!("CARGO_BIN_EXE_lockd-null");
    let help = Command::new(null).arg("--help").output().expect("run");
    assert_eq!(help.status.code(), Some(0), "{help:?}");
    assert!(String::from_utf8_lossy(&help.stdout).starts_with("usage: lockd-null"));
    let version = Command::new(null).arg("--version").output().expect("run");
    assert_eq!(version.status.code(), Some(0), "{version:?}");
    assert_eq!(
        String::from_utf8_lossy(&version.stdout),
        format!("lockd-null {}\n", env!("CARGO_PKG_VERSION"))
    );
}
