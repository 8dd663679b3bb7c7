//! Fencing through the real daemon: every method's answer and refusal from
//! Python's xmlrpc.client, tokens that only grow through releases, breaks,
//! fences, SIGKILL rounds and two daemons on one directory, `acquire_many`
//! all or nothing under contention and across a SIGKILL in the middle of a
//! call, and the audit trail after a restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use lockd::xmlrpc::Value;

use crate::proof::{self, Outcome, Prng, Rpc};
use crate::support::Daemon;

const REFUSED: &str = "<type 'exceptions.Exception'>:";

pub fn token_of(outcome: &Outcome) -> Option<i32> {
    match outcome {
        Outcome::Value(value) => match value.member("token") {
            Some(Value::Int(token)) => Some(*token),
            _ => None,
        },
        Outcome::Fault(..) => None,
    }
}

fn strings(list: &[&str]) -> Vec<Value> {
    list.iter().map(|s| Value::Str((*s).to_owned())).collect()
}

/// A lock directory that outlives the daemons a test starts on it (a
/// [`Daemon::start`] removes its own when it is dropped).
fn lock_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("locks");
    (temp, dir)
}

#[test]
fn every_fencing_method_from_python() {
    let (_temp, dir) = lock_dir();
    let daemon = Daemon::start_in(&dir);
    let out = daemon.py("a = s.acquire('vm7', 'node3')\n\
         print(sorted(a), a['resource'], a['client'], a['token'], type(a['token']).__name__)\n\
         call(lambda: s.acquire('vm7', 'node1'))\n\
         call(lambda: s.check('vm7', 'node3', a['token']))\n\
         call(lambda: s.check('vm7', 'node3', a['token'] + 1))\n\
         call(lambda: s.check('vm7', 'node1', a['token']))\n\
         call(lambda: s.check('vm7', 'node3', 0))\n\
         call(lambda: s.status('vm7')['token'])\n\
         call(lambda: s.release('vm7', 'node3', a['token'] + 1))\n\
         call(lambda: s.break_lock('vm7', 'node3', a['token'], ''))\n\
         call(lambda: s.break_lock('vm7', 'node1', a['token'], 'x'))\n\
         b = s.break_lock('vm7', 'node3', a['token'], 'node3 powered off')\n\
         print(b['client'], b['token'] == a['token'])\n\
         call(lambda: s.check('vm7', 'node3', a['token']))\n\
         c = s.acquire('vm7', 'node1')\n\
         print(c['token'] > a['token'])\n\
         call(lambda: s.release('vm7', 'node1', c['token']))\n\
         call(lambda: s.release('vm7', 'node1', c['token']))\n\
         m = s.acquire_many(['d1', 'd2', 'd3'], 'node2')\n\
         print([(l['resource'], l['token']) for l in m])\n\
         call(lambda: s.acquire_many(['d4', 'd2', 'd5'], 'node4'))\n\
         call(lambda: s.status('d4')['locked'])\n\
         call(lambda: s.acquire_many(['d4', 'd4'], 'node4'))\n\
         call(lambda: s.acquire_many(['d4', 5], 'node4'))\n\
         s.lock('legacy', 'node2')\n\
         call(lambda: sorted((l['resource'], l['token']) for l in s.fence('node2', 'stonith')))\n\
         call(lambda: s.fence('node2', 'again'))\n\
         call(lambda: s.fence('node2', ''))\n\
         call(lambda: s.locks())\n\
         call(lambda: s.system.methodSignature('break_lock'))\n\
         call(lambda: s.system.methodSignature('acquire_many'))");
    let lines: Vec<&str> = out.lines().collect();
    let expected = [
        "['client', 'resource', 'since', 'token'] vm7 node3 1 int",
        "FAULT 1 <type 'exceptions.Exception'>:Resource already locked by 'node3'",
        "True",
        "False",
        "False",
        "FAULT -32602 the token is 0: tokens are 1 or more (use the token acquire returned)",
        "1",
        "FAULT 1 <type 'exceptions.Exception'>:Resource locked by 'node3' under token 1, not 2: that grant has ended",
        "FAULT -32602 the reason is empty: say why (it goes into the audit trail)",
        "FAULT 1 <type 'exceptions.Exception'>:Resource locked by 'node3' under token 1, not by 'node1' under token 1",
        "node3 True",
        "False",
        "True",
        "None",
        "FAULT 1 <type 'exceptions.Exception'>:Resource not locked",
        "[('d1', 1), ('d2', 1), ('d3', 1)]",
        "FAULT 1 <type 'exceptions.Exception'>:Resource 'd2' already locked by 'node2'",
        "False",
        "FAULT -32602 acquire_many names 'd4' twice: name each resource once",
        "FAULT -32602 acquire_many's resources must be an array of strings; item 1 is a int",
        "[('d1', 1), ('d2', 1), ('d3', 1), ('legacy', 0)]",
        "[]",
        "FAULT -32602 the reason is empty: say why (it goes into the audit trail)",
        "[]",
        "[['struct', 'string', 'string', 'int', 'string']]",
        "[['array', 'array', 'string']]",
    ];
    assert_eq!(lines, expected, "{out}");
    drop(daemon);
    audit_trail_survives_a_restart(&dir);
}

/// The audit trail of the test above, after a restart: one JSON object a
/// line.
fn audit_trail_survives_a_restart(dir: &std::path::Path) {
    let daemon = Daemon::start_in(dir);
    let audit = std::fs::read_to_string(dir.join("lockd.audit.jsonl")).unwrap();
    let checked = crate::support::run(
        std::process::Command::new("python3")
            .arg("-c")
            .arg(
                "import json, sys\n\
                 for line in open(sys.argv[1]):\n    \
                 e = json.loads(line); print(e['method'], e['resource'], e['holder'], e['token'], e['reason'], e['caller'].startswith('127.0.0.1:'))",
            )
            .arg(dir.join("lockd.audit.jsonl")),
    );
    assert_eq!(
        String::from_utf8_lossy(&checked.stdout),
        "break_lock vm7 node3 1 node3 powered off True\n\
         fence d1 node2 1 stonith True\n\
         fence d2 node2 1 stonith True\n\
         fence d3 node2 1 stonith True\n\
         fence legacy node2 0 stonith True\n",
        "{audit}"
    );
    assert!(daemon.log().contains("listening"));
}

/// Acknowledged grants of one resource, in the order their replies came.
pub type Grants = Arc<Mutex<HashMap<String, Vec<(Instant, i32)>>>>;

/// Clients acquire and release three resources while lockd is killed at
/// random moments and restarted; every acknowledged token of a resource is
/// larger than every one acknowledged before it.
#[test]
fn tokens_only_grow_through_sigkill_rounds() {
    let (_temp, dir) = lock_dir();
    let mut daemon = Daemon::start_in(&dir);
    let seed = proof::seed("fencing");
    let mut rng = Prng::new(seed);
    let grants: Grants = Arc::default();
    let rounds = proof::knob("ROUNDS", 8);
    for round in 0..rounds {
        let addr = daemon.addr;
        let stop = Instant::now() + Duration::from_millis(100 + rng.below(300));
        let clients: Vec<_> = (0..3)
            .map(|c| {
                let grants = Arc::clone(&grants);
                let seed = seed ^ (round << 8) ^ c;
                thread::spawn(move || churn(addr, c, seed, stop + Duration::from_secs(1), &grants))
            })
            .collect();
        thread::sleep(stop.saturating_duration_since(Instant::now()));
        daemon.kill9();
        for client in clients {
            client.join().expect("client thread");
        }
        daemon = Daemon::start_in(&dir);
    }
    let total = tokens_only_grew(&grants);
    eprintln!("fencing: {rounds} SIGKILL rounds, {total} acknowledged grants, tokens only grew");
}

/// Check every resource's acknowledged grants: each token larger than the
/// one acknowledged before it. Returns how many grants there were.
pub fn tokens_only_grew(grants: &Grants) -> usize {
    let grants = grants.lock().unwrap();
    let mut total = 0;
    for (resource, list) in grants.iter() {
        let mut list = list.clone();
        list.sort_by_key(|(at, _)| *at);
        total += list.len();
        for pair in list.windows(2) {
            assert!(
                pair[0].1 < pair[1].1,
                "{resource}: token {} acknowledged after {}",
                pair[1].1,
                pair[0].1
            );
        }
    }
    assert!(total > 20, "too few grants to prove anything: {total}");
    total
}

/// One client: acquire a random resource of three, release it, until `end`
/// or until lockd goes away.
pub fn churn(addr: std::net::SocketAddr, c: u64, seed: u64, end: Instant, grants: &Grants) {
    let mut rng = Prng::new(seed);
    let mut rpc = Rpc::new(addr);
    let me = format!("node{c}");
    while Instant::now() < end {
        let resource = format!("vm{}", rng.below(3));
        let Ok(outcome) = rpc.call("acquire", &[&resource, &me]) else {
            return;
        };
        let Some(token) = token_of(&outcome) else {
            continue;
        };
        grants
            .lock()
            .unwrap()
            .entry(resource.clone())
            .or_default()
            .push((Instant::now(), token));
        let release = vec![
            Value::Str(resource),
            Value::Str(me.clone()),
            Value::Int(token),
        ];
        if rpc.call_values("release", release).is_err() {
            return;
        }
    }
}

#[test]
fn two_daemons_on_one_directory_hand_out_growing_tokens() {
    let first = Daemon::start();
    let second = Daemon::start_in(&first.dir);
    let mut rpcs = [Rpc::new(first.addr), Rpc::new(second.addr)];
    let mut last = 0;
    let mut rng = Prng::new(proof::seed("fencing-two"));
    for _ in 0..60 {
        let i = rng.below(2) as usize;
        let outcome = rpcs[i].call("acquire", &["vm1", "node1"]).unwrap();
        let token = token_of(&outcome).unwrap_or_else(|| panic!("{outcome:?}"));
        assert!(token > last, "{token} after {last}");
        last = token;
        let j = rng.below(2) as usize;
        let release = [strings(&["vm1", "node1"]), vec![Value::Int(token)]].concat();
        assert!(rpcs[j].call_values("release", release).unwrap().is_nil());
    }
}

/// Clients take random pairs and triples of five resources with
/// acquire_many and release them; a refused call leaves none of its
/// resources taken, and no resource is ever held twice.
#[test]
fn acquire_many_is_all_or_nothing_under_contention() {
    let daemon = Daemon::start();
    let seconds = proof::knob("SECONDS", 2);
    let (granted, refused) = acquire_many_contention(&[daemon.addr], Duration::from_secs(seconds));
    assert!(
        granted > 10 && refused > 10,
        "{granted} granted, {refused} refused"
    );
    eprintln!("acquire_many: {granted} granted, {refused} refused, none half-taken");
}

/// Four clients (client `c` on `addrs[c % addrs.len()]`) take random pairs
/// and triples of five resources with acquire_many for `length` and release
/// them, checking that a refused call leaves none of its resources taken
/// and that no resource is ever held twice. Returns how many calls were
/// granted and how many refused.
pub fn acquire_many_contention(addrs: &[std::net::SocketAddr], length: Duration) -> (usize, usize) {
    let holders: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let seed = proof::seed("acquire-many");
    let end = Instant::now() + length;
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let holders = Arc::clone(&holders);
            let addr = addrs[c % addrs.len()];
            thread::spawn(move || contend(addr, c, seed, end, &holders))
        })
        .collect();
    let (mut granted, mut refused) = (0, 0);
    for client in clients {
        let (g, r) = client.join().expect("client thread");
        granted += g;
        refused += r;
    }
    (granted, refused)
}

/// One client of the test above: random sets of two or more of five
/// resources; the number of calls granted and refused.
fn contend(
    addr: std::net::SocketAddr,
    c: usize,
    seed: u64,
    end: Instant,
    holders: &Mutex<HashMap<String, usize>>,
) -> (usize, usize) {
    let mut rng = Prng::new(seed ^ (c as u64 + 1));
    let mut rpc = Rpc::new(addr);
    let me = format!("node{c}");
    let (mut granted, mut refused) = (0, 0);
    while Instant::now() < end {
        let mut set: Vec<String> = (0..5).map(|r| format!("r{r}")).collect();
        set.retain(|_| rng.below(2) == 0);
        if set.len() < 2 {
            continue;
        }
        let names: Vec<Value> = set.iter().map(|r| Value::Str(r.clone())).collect();
        let params = vec![Value::Array(names), Value::Str(me.clone())];
        let outcome = rpc.call_values("acquire_many", params).unwrap();
        match outcome {
            Outcome::Value(Value::Array(locks)) => {
                granted += 1;
                assert_eq!(locks.len(), set.len());
                {
                    let mut holders = holders.lock().unwrap();
                    for r in &set {
                        let before = holders.insert(r.clone(), c);
                        assert_eq!(before, None, "{r} granted to {c} while held by {before:?}");
                    }
                }
                let mut holders = holders.lock().unwrap();
                for (r, lock) in set.iter().zip(&locks) {
                    holders.remove(r);
                    let Some(Value::Int(token)) = lock.member("token") else {
                        panic!("{lock:?}")
                    };
                    let release = [strings(&[r, &me]), vec![Value::Int(*token)]].concat();
                    assert!(rpc.call_values("release", release).unwrap().is_nil());
                }
            }
            Outcome::Fault(1, text) => {
                refused += 1;
                assert!(text.starts_with(&format!("{REFUSED}Resource 'r")), "{text}");
                // Nothing of the set was taken for this client.
                for r in &set {
                    let status = rpc.call("status", &[r]).unwrap();
                    let Outcome::Value(status) = status else {
                        panic!()
                    };
                    assert_ne!(
                        status.member("client").and_then(Value::as_str),
                        Some(me.as_str()),
                        "{r} taken by a refused acquire_many"
                    );
                }
            }
            other => panic!("{other:?}"),
        }
    }
    (granted, refused)
}

/// lockd is killed while an acquire_many of 64 resources is under way,
/// closer and closer to the moment it commits: after the restart either all
/// 64 are held or none.
/// (A kill among the links themselves is a matter of chance here: with the
/// batch marker ignored, this test caught the half-held batch in one run of
/// three at 30 rounds. The store's unit test
/// `a_batch_without_its_marker_holds_nothing` makes that state on purpose.)
#[test]
fn acquire_many_across_sigkill_is_all_or_nothing() {
    let (_temp, dir) = lock_dir();
    let mut daemon = Daemon::start_in(&dir);
    let mut rng = Prng::new(proof::seed("acquire-many-kill"));
    let names: Vec<String> = (0..64).map(|i| format!("disk{i}")).collect();
    // How long one call takes here; the kill then moves towards the moment
    // the call commits: earlier after a round that took everything, later
    // after one that took nothing.
    let list: Vec<Value> = names.iter().map(|n| Value::Str(n.clone())).collect();
    let mut rpc = Rpc::new(daemon.addr);
    let start = Instant::now();
    let params = vec![Value::Array(list), Value::Str("timing".into())];
    assert!(matches!(
        rpc.call_values("acquire_many", params),
        Ok(Outcome::Value(_))
    ));
    let mut delay = start.elapsed().as_micros() as f64 / 2.0;
    assert!(matches!(
        rpc.call("fence", &["timing", "timed"]),
        Ok(Outcome::Value(_))
    ));
    let (mut all, mut none) = (0, 0);
    for round in 0..proof::knob("ROUNDS", 24) {
        let addr = daemon.addr;
        let list: Vec<Value> = names.iter().map(|n| Value::Str(n.clone())).collect();
        let caller = thread::spawn(move || {
            let mut rpc = Rpc::new(addr);
            let params = vec![Value::Array(list), Value::Str(format!("node{round}"))];
            rpc.call_values("acquire_many", params).ok()
        });
        let jitter = 0.8 + rng.below(400) as f64 / 1000.0;
        thread::sleep(Duration::from_micros((delay * jitter) as u64));
        daemon.kill9();
        let answered = caller.join().expect("caller");
        daemon = Daemon::start_in(&dir);
        let mut rpc = Rpc::new(daemon.addr);
        let Ok(Outcome::Value(Value::Array(locks))) = rpc.call("locks", &[]) else {
            panic!("locks()")
        };
        let held = locks.len();
        assert!(
            held == 0 || held == 64,
            "round {round}: {held} of 64 held after the kill"
        );
        if answered
            .as_ref()
            .is_some_and(|o| matches!(o, Outcome::Value(_)))
        {
            assert_eq!(
                held, 64,
                "round {round}: an acknowledged acquire_many lost locks"
            );
        }
        delay *= if held == 64 { 0.7 } else { 1.4 };
        if held == 64 {
            all += 1;
            let owner = locks[0]
                .member("client")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let out = rpc.call("fence", &[&owner, "test round over"]).unwrap();
            assert!(matches!(out, Outcome::Value(Value::Array(ref l)) if l.len() == 64));
        } else {
            none += 1;
        }
    }
    eprintln!("acquire_many across SIGKILL: {all} rounds all held, {none} rounds none");
    assert!(
        all > 0 && none > 0,
        "every kill fell on the same side of the call: the test proves less than it says"
    );
}
