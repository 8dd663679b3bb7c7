//! Mutual exclusion under load, checked from the outside: M clients contend
//! for K resources with random lock and unlock calls for T seconds, every
//! call's invocation, completion and result is recorded, and the history is
//! checked afterwards:
//!
//! - no two clients ever held one resource at once: a client holds a
//!   resource from its granted lock to its successful unlock, and two such
//!   holds conflict when neither can be ordered before the other (the first
//!   one's release was invoked only after the second one's grant was
//!   acknowledged, and the other way round);
//! - every "already locked by X" and every "locked by X cannot be unlocked"
//!   names a client X that could hold the resource during the call;
//! - every "not locked" comes from a call during which the resource could
//!   be free, and no call is refused what its own client holds;
//! - at the end, `locks()` lists exactly the holds never released.
//!
//! The same checker runs against one daemon, against two daemons serving
//! one directory, the clients split between them, and (tests/legacy.rs)
//! against lockd and the real gocept.lockd serving one directory, and
//! (tests/cluster.rs) against lockd on several mounts of a GlusterFS volume.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use lockd::xmlrpc::Value;

use crate::proof::{self, Outcome, Prng, Rpc};
use crate::support::Daemon;

const CLIENTS: usize = 6;
const RESOURCES: usize = 3;

#[derive(Debug, Clone)]
pub struct Event {
    pub client: usize,
    pub resource: usize,
    pub lock: bool,
    pub invoked: Duration,
    pub completed: Duration,
    pub outcome: Outcome,
}

/// A resource held by `client` from its grant to its release.
#[derive(Debug)]
struct Hold {
    client: usize,
    /// The grant call's invocation and completion.
    granted: (Duration, Duration),
    /// The release call's invocation and completion; `None` if never released.
    released: Option<(Duration, Duration)>,
}

macro_rules! ensure {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            return Err(format!($($why)+));
        }
    };
}

const FOREVER: Duration = Duration::MAX;

impl Hold {
    /// Whether the resource is held for sure throughout `from..to`.
    fn surely_covers(&self, from: Duration, to: Duration) -> bool {
        self.granted.1 <= from && self.released.map_or(FOREVER, |r| r.0) >= to
    }

    /// Whether the resource may be held at some moment of `from..to`.
    fn may_overlap(&self, from: Duration, to: Duration) -> bool {
        self.granted.0 <= to && self.released.map_or(FOREVER, |r| r.1) >= from
    }
}

fn client_name(c: usize) -> String {
    format!("node{c}")
}

/// The resources of the plain runs.
pub fn plain_names() -> Vec<String> {
    (0..RESOURCES).map(|r| format!("vm{r}")).collect()
}

/// A server under test: where it listens, and whether each call needs a
/// connection of its own (gocept.lockd speaks HTTP/1.0 and closes each).
#[derive(Debug, Clone, Copy)]
pub struct Server {
    pub addr: SocketAddr,
    pub one_call_per_connection: bool,
}

impl Server {
    pub fn lockd(addr: SocketAddr) -> Server {
        Server {
            addr,
            one_call_per_connection: false,
        }
    }
}

/// gocept.lockd forgets `import time`: a call that finds `lockd.lock` taken
/// fails with this before it looks at any lock file, and so changes nothing.
const GOCEPT_BUSY: &str = "<type 'exceptions.NameError'>:global name 'time' is not defined";

#[test]
fn one_daemon_never_grants_twice() {
    let daemon = Daemon::start();
    let (events, locks) = run_history(&[Server::lockd(daemon.addr)], &plain_names());
    passes(&events, &locks, &plain_names());
}

#[test]
fn two_daemons_on_one_directory_never_grant_twice() {
    let first = Daemon::start();
    let second = Daemon::start_in(&first.dir);
    let servers = [Server::lockd(first.addr), Server::lockd(second.addr)];
    let (events, locks) = run_history(&servers, &plain_names());
    passes(&events, &locks, &plain_names());
    assert!(
        second.log().contains("granted") && first.log().contains("granted"),
        "both daemons served grants"
    );
}

/// Check a history and that it had enough contention to prove anything.
pub fn passes(events: &[Event], locks: &[(String, String)], names: &[String]) {
    match check_history(events, locks, names) {
        Ok(summary) => eprintln!("history: {summary}"),
        Err(why) => panic!("history: {why}"),
    }
    let grants = events
        .iter()
        .filter(|e| e.lock && e.outcome.is_nil())
        .count();
    assert!(
        grants > 10 && events.len() > grants + 10,
        "too little contention to prove anything"
    );
}

/// The checker itself finds a double grant, a refusal naming a client that
/// never held the resource, an unjustified "not locked", and a wrong final
/// state.
#[test]
fn the_checker_catches_violations() {
    let ms = Duration::from_millis;
    let nil = Outcome::Value(Value::Nil);
    let ev = |client, lock, from, to, outcome: &Outcome| Event {
        client,
        resource: 0,
        lock,
        invoked: ms(from),
        completed: ms(to),
        outcome: outcome.clone(),
    };
    let refused = |text: &str| Outcome::Fault(1, format!("<type 'exceptions.Exception'>:{text}"));
    let held_by_0 = vec![("vm0".to_owned(), "node0".to_owned())];
    let fine = [ev(0, true, 0, 1, &nil)];
    assert!(check_history_vm(&fine, &held_by_0).is_ok());
    let double = [ev(0, true, 0, 1, &nil), ev(1, true, 2, 3, &nil)];
    assert!(
        check_history_vm(&double, &held_by_0)
            .unwrap_err()
            .contains("two clients at once")
    );
    let overlapping = [
        ev(0, true, 0, 5, &nil),
        ev(1, true, 1, 6, &nil),
        ev(0, false, 7, 8, &nil),
    ];
    assert!(check_history_vm(&overlapping, &[]).is_err());
    let phantom = [ev(
        1,
        true,
        0,
        1,
        &refused("Resource already locked by 'node2'"),
    )];
    assert!(
        check_history_vm(&phantom, &[])
            .unwrap_err()
            .contains("could not hold")
    );
    let not_locked = [
        ev(0, true, 0, 1, &nil),
        ev(1, false, 2, 3, &refused("Resource not locked")),
    ];
    assert!(
        check_history_vm(&not_locked, &held_by_0)
            .unwrap_err()
            .contains("held throughout")
    );
    let own = [
        ev(0, true, 0, 1, &nil),
        ev(0, false, 2, 3, &refused("Resource not locked")),
    ];
    assert!(check_history_vm(&own, &held_by_0).is_err());
    assert!(
        check_history_vm(&fine, &[])
            .unwrap_err()
            .contains("final locks()")
    );
    let sequential = [
        ev(0, true, 0, 1, &nil),
        ev(
            1,
            true,
            2,
            3,
            &refused("Resource already locked by 'node0'"),
        ),
        ev(0, false, 4, 5, &nil),
        ev(1, true, 4, 6, &nil),
        ev(
            0,
            false,
            7,
            8,
            &refused("Resource locked by 'node1' cannot be unlocked by 'node0'"),
        ),
    ];
    let held_by_1 = vec![("vm0".to_owned(), "node1".to_owned())];
    assert_eq!(
        check_history_vm(&sequential, &held_by_1).map(|_| ()),
        Ok(())
    );
}

fn check_history_vm(events: &[Event], locks: &[(String, String)]) -> Result<String, String> {
    check_history(events, locks, &plain_names())
}

/// Run the clients (client `c` talks to `servers[c % servers.len()]`) on
/// the resources `names`, and return the history and the final `locks()`
/// (asked of the first server, which must be a lockd).
pub fn run_history(servers: &[Server], names: &[String]) -> (Vec<Event>, Vec<(String, String)>) {
    let seconds = proof::knob("SECONDS", 3);
    run_history_for(servers, names, Duration::from_secs(seconds))
}

/// [`run_history`] for `length` instead of `LOCKD_PROOF_SECONDS`.
pub fn run_history_for(
    servers: &[Server],
    names: &[String],
    length: Duration,
) -> (Vec<Event>, Vec<(String, String)>) {
    let seed = proof::seed("history");
    let start = Instant::now();
    let end = start + length;
    let handles: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let server = servers[c % servers.len()];
            let names = names.to_vec();
            thread::spawn(move || {
                let mut rng = Prng::new(seed ^ (c as u64 + 1).wrapping_mul(0x9E37_79B9));
                let mut rpc = Rpc::new(server.addr);
                let me = client_name(c);
                let mut events = Vec::new();
                while Instant::now() < end {
                    let resource = rng.below(names.len() as u64) as usize;
                    let lock = rng.below(2) == 0;
                    let name = &names[resource];
                    if server.one_call_per_connection {
                        rpc = Rpc::new(server.addr);
                    }
                    let invoked = start.elapsed();
                    let outcome = rpc
                        .call(if lock { "lock" } else { "unlock" }, &[name, &me])
                        .unwrap_or_else(|e| panic!("{me}: no reply: {e}"));
                    let completed = start.elapsed();
                    events.push(Event {
                        client: c,
                        resource,
                        lock,
                        invoked,
                        completed,
                        outcome,
                    });
                }
                events
            })
        })
        .collect();
    let mut events: Vec<Event> = Vec::new();
    for handle in handles {
        events.extend(handle.join().expect("client thread"));
    }
    let mut rpc = Rpc::new(servers[0].addr);
    let Outcome::Value(Value::Array(list)) = rpc.call("locks", &[]).expect("locks()") else {
        panic!("locks() did not return an array")
    };
    let locks = list
        .iter()
        .map(|l| {
            let field = |n| {
                l.member(n)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            (field("resource"), field("client"))
        })
        .collect();
    (events, locks)
}

const ALREADY: &str = "<type 'exceptions.Exception'>:Resource already locked by '";
const NOT_HOLDER: &str = "<type 'exceptions.Exception'>:Resource locked by '";
const NOT_LOCKED: &str = "<type 'exceptions.Exception'>:Resource not locked";

/// What the checks count.
#[derive(Default)]
struct Counts {
    grants: usize,
    refusals: usize,
}

/// Check a history of calls on `names`; `Err` says what is wrong with it.
fn check_history(
    events: &[Event],
    locks: &[(String, String)],
    names: &[String],
) -> Result<String, String> {
    let mut counts = Counts::default();
    let (busy, events): (Vec<Event>, Vec<Event>) = events
        .iter()
        .cloned()
        .partition(|e| matches!(&e.outcome, Outcome::Fault(1, s) if s == GOCEPT_BUSY));
    let busy = busy.len();
    for (r, name) in names.iter().enumerate() {
        let holds = holds_of(&events, r, &mut counts)?;
        no_two_at_once(name, &holds)?;
        refusals_are_justified(&events, r, &holds)?;
        end_state_matches(name, &holds, locks)?;
    }
    let Counts { grants, refusals } = counts;
    Ok(format!(
        "{} calls by {CLIENTS} clients on {} resources checked: {grants} grants, {refusals} refusals, {busy} calls gocept.lockd failed for want of `import time`, no double grant",
        events.len(),
        names.len()
    ))
}

/// Resource `r`'s holds, from each client's own calls, checking that each
/// client's view is consistent.
fn holds_of(events: &[Event], r: usize, counts: &mut Counts) -> Result<Vec<Hold>, String> {
    // Each client's calls on r, in its own (sequential) order.
    let mut per_client: HashMap<usize, Vec<&Event>> = HashMap::new();
    for event in events.iter().filter(|e| e.resource == r) {
        per_client.entry(event.client).or_default().push(event);
    }
    let mut holds: Vec<Hold> = Vec::new();
    for (&c, calls) in &mut per_client {
        calls.sort_by_key(|e| e.invoked);
        let mut open: Option<usize> = None;
        for e in calls.iter() {
            let holding = open.is_some();
            match (&e.outcome, e.lock) {
                (o, true) if o.is_nil() => {
                    ensure!(!holding, "{e:?}: granted to a client that held it");
                    holds.push(Hold {
                        client: c,
                        granted: (e.invoked, e.completed),
                        released: None,
                    });
                    open = Some(holds.len() - 1);
                    counts.grants += 1;
                }
                (o, false) if o.is_nil() => {
                    let Some(i) = open.take() else {
                        return Err(format!("{e:?}: released by a client that did not hold it"));
                    };
                    holds[i].released = Some((e.invoked, e.completed));
                }
                (Outcome::Fault(1, s), _) => {
                    counts.refusals += 1;
                    let own = s.starts_with(ALREADY)
                        && s[ALREADY.len()..] == format!("{}'", client_name(c));
                    ensure!(
                        holding == own,
                        "{e:?}: the refusal contradicts the client's own hold"
                    );
                }
                _ => return Err(format!("{e:?}: unexpected outcome")),
            }
        }
    }
    Ok(holds)
}

/// No two holds of resource `name` overlap for sure.
fn no_two_at_once(name: &str, holds: &[Hold]) -> Result<(), String> {
    let mut holds: Vec<&Hold> = holds.iter().collect();
    holds.sort_by_key(|h| h.granted.1);
    for (i, a) in holds.iter().enumerate() {
        for b in &holds[i + 1..] {
            if a.client == b.client {
                continue;
            }
            let a_before_b = a.released.is_some_and(|rel| rel.0 < b.granted.1);
            let b_before_a = b.released.is_some_and(|rel| rel.0 < a.granted.1);
            ensure!(
                a_before_b || b_before_a,
                "{name} granted to two clients at once: {a:?} and {b:?}"
            );
        }
    }
    Ok(())
}

/// Every refusal on resource `r` is justified by some possible state.
fn refusals_are_justified(events: &[Event], r: usize, holds: &[Hold]) -> Result<(), String> {
    for e in events.iter().filter(|e| e.resource == r) {
        let Outcome::Fault(1, s) = &e.outcome else {
            continue;
        };
        let named = s
            .strip_prefix(ALREADY)
            .or_else(|| s.strip_prefix(NOT_HOLDER))
            .and_then(|rest| rest.split('\'').next());
        match named {
            Some(holder) => {
                let Some(x) = (0..CLIENTS).find(|&x| client_name(x) == holder) else {
                    return Err(format!("{e:?}: names an unknown client"));
                };
                ensure!(
                    holds
                        .iter()
                        .any(|h| h.client == x && h.may_overlap(e.invoked, e.completed)),
                    "{e:?}: {holder} could not hold the resource during the call"
                );
                if !e.lock {
                    ensure!(
                        s.ends_with(&format!(
                            "cannot be unlocked by '{}'",
                            client_name(e.client)
                        )),
                        "{e:?}"
                    );
                }
            }
            None => {
                ensure!(!e.lock && s == NOT_LOCKED, "{e:?}: unexpected refusal");
                ensure!(
                    !holds
                        .iter()
                        .any(|h| h.surely_covers(e.invoked, e.completed)),
                    "{e:?}: the resource was held throughout the call"
                );
            }
        }
    }
    Ok(())
}

/// The end state of resource `name`: exactly the holds never released.
fn end_state_matches(name: &str, holds: &[Hold], locks: &[(String, String)]) -> Result<(), String> {
    let mut open: Vec<String> = holds
        .iter()
        .filter(|h| h.released.is_none())
        .map(|h| client_name(h.client))
        .collect();
    let listed: Vec<String> = locks
        .iter()
        .filter(|(res, _)| res == name)
        .map(|(_, c)| c.clone())
        .collect();
    open.sort();
    ensure!(
        open == listed,
        "{name}: the final locks() lists {listed:?}, the history leaves {open:?}"
    );
    Ok(())
}
