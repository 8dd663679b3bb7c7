//! Hostile input and hostile timing: connections that go quiet, crawl or
//! never end must not stop lockd from serving everyone else.

use std::thread;
use std::time::{Duration, Instant};

use crate::proof::{Outcome, Rpc};
use crate::support::{Daemon, Options};

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
