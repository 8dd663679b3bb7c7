//! The load generator `lockd-bench` against the real daemon: a short smoke
//! run in both modes must see only the expected replies and complete cycles.
//! Benchmarks are not tests: nothing here looks at how fast it was.

use std::process::Command;

use crate::support::{self, Daemon};

const BENCH: &str = env!("CARGO_BIN_EXE_lockd-bench");

/// Run lockd-bench against `daemon` with `args`; returns its exit status
/// code, its stdout and its `RESULT` JSON line. Clients connect 2 ms apart:
/// tiny_http 0.12 can leave one of a burst of connections unserved (README,
/// "Known limits"), which is not what these tests are about.
fn bench(daemon: &Daemon, args: &[&str]) -> (Option<i32>, String, String) {
    let addr = daemon.addr.to_string();
    let mut all = vec!["--addr", &addr, "--stagger-ms", "2"];
    all.extend_from_slice(args);
    let output = support::run(Command::new(BENCH).args(&all));
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
    let pid = daemon.pid().to_string();
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
    assert_eq!(daemon.lock_files(), ["lockd.lock"]);
}

#[test]
fn load_generator_counts_a_fault_as_unexpected() {
    let daemon = Daemon::start();
    // client-0's resource is taken by someone else: its every lock faults.
    let out = daemon.py("call(lambda: s.lock('bench-0', 'intruder'))");
    assert_eq!(out.trim(), "None");
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
