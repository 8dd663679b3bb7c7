//! Crash safety: clients lock and unlock while lockd is killed with SIGKILL
//! at random moments and restarted on the same directory, round after
//! round. After every restart each client's acknowledged view must match
//! the directory exactly, except for the one call per client that was in
//! flight at the kill (either outcome is fine for it); every lock file must
//! be complete; and no content file may be left over.
//!
//! A SIGKILL loses the process, not the page cache, so this proves the
//! crash-only design (link and unlink are atomic, start-up cleans up), not
//! the fsyncs: `durability.rs` traces those.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::proof::{self, Outcome, Prng, Rpc};
use crate::support::Daemon;

const CLIENTS: usize = 4;
const RESOURCES: usize = 6;

/// What one client knows: which resources it holds by acknowledged replies,
/// and the resource of a call that got no reply.
#[derive(Default)]
struct View {
    held: Vec<bool>,
    in_flight: Option<usize>,
    acknowledged: u64,
}

fn client_name(i: usize) -> String {
    format!("client{i}")
}

fn resource_name(r: usize) -> String {
    format!("res{r}")
}

#[test]
fn acknowledged_changes_survive_sigkill() {
    let rounds = proof::knob("ROUNDS", 10);
    let mut rng = Prng::new(proof::seed("crash"));
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("locks");
    let views: Vec<Arc<Mutex<View>>> = (0..CLIENTS)
        .map(|_| {
            Arc::new(Mutex::new(View {
                held: vec![false; RESOURCES],
                ..View::default()
            }))
        })
        .collect();
    let mut total_acknowledged = 0;
    let mut leftovers_removed = 0;
    for round in 0..rounds {
        let mut daemon = Daemon::start_in(&dir);
        let log = daemon.log();
        if log.contains("leftover temporary files removed") {
            leftovers_removed += 1;
        }
        let tmp: Vec<_> = daemon
            .files()
            .into_iter()
            // The running daemon's self-test may have its probe file open.
            .filter(|f| f.ends_with(".tmp") && !f.starts_with(".lockd-probe-"))
            .collect();
        assert!(
            tmp.is_empty(),
            "round {round}: left over after restart: {tmp:?}"
        );
        check(&daemon, &views, round);

        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let view = Arc::clone(&views[c]);
                let stop = Arc::clone(&stop);
                let addr = daemon.addr;
                let seed = rng.next();
                thread::spawn(move || run_client(c, addr, seed, &view, &stop))
            })
            .collect();
        // Kill at a random moment: sometimes at once, mostly mid-stream.
        thread::sleep(Duration::from_millis(rng.below(300)));
        daemon.kill9();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for handle in handles {
            handle.join().expect("client thread");
        }
    }
    let daemon = Daemon::start_in(&dir);
    check(&daemon, &views, rounds);
    for view in &views {
        total_acknowledged += view.lock().unwrap().acknowledged;
    }
    eprintln!(
        "crash: {rounds} SIGKILLs survived, {total_acknowledged} acknowledged calls checked, \
         {leftovers_removed} restarts removed leftover content files"
    );
    assert!(
        total_acknowledged > rounds,
        "the clients got too few replies for the test to mean anything"
    );
}

/// Lock and unlock at random until the daemon dies (a call without a reply)
/// or `stop` is set.
fn run_client(
    c: usize,
    addr: std::net::SocketAddr,
    seed: u64,
    view: &Mutex<View>,
    stop: &std::sync::atomic::AtomicBool,
) {
    let me = client_name(c);
    let mut rng = Prng::new(seed);
    let mut rpc = Rpc::new(addr);
    rpc.guard = Duration::from_secs(20);
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let r = rng.below(RESOURCES as u64) as usize;
        let resource = resource_name(r);
        let method = if rng.below(2) == 0 { "lock" } else { "unlock" };
        view.lock().unwrap().in_flight = Some(r);
        let Ok(outcome) = rpc.call(method, &[&resource, &me]) else {
            // No reply: the daemon is dead; the call's fate is unknown.
            return;
        };
        let mut view = view.lock().unwrap();
        view.in_flight = None;
        view.acknowledged += 1;
        let held = view.held[r];
        let mine = format!("<type 'exceptions.Exception'>:Resource already locked by '{me}'");
        match (method, &outcome) {
            ("lock", o) if o.is_nil() => {
                assert!(!held, "{me} was granted {resource}, which it held");
                view.held[r] = true;
            }
            ("lock", Outcome::Fault(1, s)) if *s == mine => {
                assert!(held, "{resource} is held by {me} without its knowledge");
            }
            ("lock", Outcome::Fault(1, s)) if s.contains("Resource already locked by") => {
                assert!(!held, "{me} holds {resource} but lockd says: {s}");
            }
            ("unlock", o) if o.is_nil() => {
                assert!(held, "{me} released {resource}, which it did not hold");
                view.held[r] = false;
            }
            ("unlock", Outcome::Fault(1, s))
                if s.contains("Resource not locked") || s.contains("cannot be unlocked by") =>
            {
                assert!(!held, "{me} holds {resource} but lockd says: {s}");
            }
            _ => panic!("{me}: {method} {resource}: unexpected {outcome:?}"),
        }
    }
    view.lock().unwrap().in_flight = None;
}

/// The directory after a restart against every client's view; then take
/// the directory's word for calls that were in flight.
fn check(daemon: &Daemon, views: &[Arc<Mutex<View>>], round: u64) {
    let mut holders: HashMap<usize, String> = HashMap::new();
    for file in daemon.lock_files() {
        if file == "lockd.lock" || file == "lockd.ranges" {
            continue;
        }
        let resource = file
            .strip_suffix(".resource.lock")
            .unwrap_or_else(|| panic!("round {round}: unexpected file {file:?}"));
        let r: usize = resource
            .strip_prefix("res")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("round {round}: unexpected lock file {file:?}"));
        let text = std::fs::read_to_string(daemon.dir.join(&file)).unwrap();
        assert!(
            (0..CLIENTS).any(|c| text == client_name(c)),
            "round {round}: {file} is not a complete lock file: {text:?}"
        );
        holders.insert(r, text);
    }
    for (c, view) in views.iter().enumerate() {
        let mut view = view.lock().unwrap();
        let me = client_name(c);
        for r in 0..RESOURCES {
            let on_disk = holders.get(&r) == Some(&me);
            if view.in_flight == Some(r) {
                view.held[r] = on_disk;
            } else {
                assert_eq!(
                    on_disk,
                    view.held[r],
                    "round {round}: {me} {} {} by acknowledged replies, the directory says otherwise ({:?})",
                    if view.held[r] {
                        "holds"
                    } else {
                        "does not hold"
                    },
                    resource_name(r),
                    holders.get(&r)
                );
            }
        }
        view.in_flight = None;
    }
}
