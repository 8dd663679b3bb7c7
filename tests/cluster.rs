//! lockd on every node over a cluster filesystem, proven on a real
//! GlusterFS volume: one lockd per mount of one volume, as one lockd per
//! node would run, each on its own mount of one lock directory.
//!
//! Each test sets up its own volume with `tests/cluster/gluster.sh` (one
//! brick, two or three FUSE mounts with the coherent settings of
//! docs/cluster.md, glusterd in a network namespace that has only `lo`, so
//! nothing touches the network) and tears it down when it ends, failed or
//! not. The tests take turns (an `flock` on a file in the temporary
//! directory), so that two volumes never compete for the two cores.
//!
//! They need root, /dev/fuse, `ip netns`, `nsenter`, and the Debian
//! packages glusterfs-server and glusterfs-client (`.ci/run` installs
//! them). Without these a test fails in CI and says `skipped` elsewhere.
//! The lengths scale with `LOCKD_PROOF_SCALE`, or are set one by one:
//! `LOCKD_PROOF_CLUSTER_SECONDS` (the history run, 6 s),
//! `LOCKD_PROOF_CLUSTER_FENCING_SECONDS` (each of the two fencing loads,
//! 3 s) and `LOCKD_PROOF_CLUSTER_BRICK_SECONDS` (the history run through a
//! brick's death, 5 s).

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use lockd::xmlrpc::Value;

use crate::fencing::{self, Grants};
use crate::history::{self, Server};
use crate::proof::{self, Outcome, Prng, Rpc};
use crate::support::{self, Daemon, LOCKD, Options, Process};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cluster/gluster.sh");

/// A GlusterFS volume with its FUSE mounts, torn down on drop.
struct Volume {
    work: tempfile::TempDir,
    mounts: Vec<PathBuf>,
    /// Held while the volume exists: one volume at a time on this machine.
    _turn: File,
}

impl Volume {
    /// A fresh one-brick volume with `mounts` mounts, or `None` (after
    /// [`support::cannot_run`]) when `test` cannot run here.
    fn up(test: &str, mounts: usize) -> Option<Volume> {
        Volume::up_as(test, mounts, "single")
    }

    /// [`Volume::up`] with the bricks of `layout`: `single` or `arbiter`
    /// (replica 3 arbiter 1, bricks `b1`, `b2` and the arbiter `b3`).
    fn up_as(test: &str, mounts: usize, layout: &str) -> Option<Volume> {
        if let Some(missing) = missing() {
            support::cannot_run(test, &missing);
            return None;
        }
        let turn_path = std::env::temp_dir().join("lockd-cluster-tests.lock");
        let turn = File::create(&turn_path).unwrap();
        turn.lock().unwrap();
        clear_leftovers();
        let work = tempfile::Builder::new()
            .prefix("lockd-gluster-")
            .tempdir()
            .unwrap();
        let started = Instant::now();
        let output = support::run(
            Command::new(SCRIPT)
                .arg("up")
                .arg(work.path())
                .arg(mounts.to_string())
                .arg(layout),
        );
        if !output.status.success() {
            let _ = support::run(Command::new(SCRIPT).arg("down").arg(work.path()));
            let why = String::from_utf8_lossy(&output.stderr);
            support::cannot_run(test, &format!("no GlusterFS volume could be set up: {why}"));
            return None;
        }
        eprintln!(
            "{test}: GlusterFS volume ({layout}) with {mounts} mounts set up in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let mounts: Vec<PathBuf> = (1..=mounts)
            .map(|i| work.path().join(format!("m{i}")))
            .collect();
        // Built first, so that a failed check still tears it down.
        let volume = Volume {
            work,
            mounts,
            _turn: turn,
        };
        for mount in &volume.mounts {
            assert_coherent(mount);
        }
        Some(volume)
    }

    /// The lock directory as mount `i` shows it.
    fn lock_dir(&self, i: usize) -> PathBuf {
        self.mounts[i].join("locks")
    }

    /// The pid of mount `i`'s FUSE client (the `glusterfs` process whose
    /// last argument is the mount point).
    fn fuse_client(&self, i: usize) -> u32 {
        let mount = self.mounts[i].to_string_lossy().into_owned();
        process_where(|args| {
            args.first().is_some_and(|a| a.ends_with("glusterfs")) && args.last() == Some(&mount)
        })
        .unwrap_or_else(|| panic!("no glusterfs client process for {mount}"))
    }

    /// The pid of the brick process serving `brick` (`b1`, …).
    fn brick_process(&self, brick: &str) -> u32 {
        let path = self.work.path().join(brick).to_string_lossy().into_owned();
        process_where(|args| {
            args.windows(2)
                .any(|w| w[0] == "--brick-name" && w[1] == path)
        })
        .unwrap_or_else(|| panic!("no brick process for {path}"))
    }

    /// The network namespace glusterd runs in.
    fn namespace(&self) -> String {
        let state = std::fs::read_to_string(self.work.path().join("state")).unwrap();
        state
            .lines()
            .find_map(|l| l.strip_prefix("ns="))
            .unwrap()
            .to_owned()
    }

    /// `gluster volume set lockd OPTION VALUE`; the active graph of every
    /// mount changes at once. Waits until mount 1's graph shows it.
    fn set(&self, option: &str, value: &str) {
        let socket = self.work.path().join("glusterd.socket");
        let log = self.work.path().join("log/cli.log");
        let output = support::run(
            Command::new("ip")
                .args(["netns", "exec", &self.namespace()])
                .args(["gluster", "--mode=script"])
                .arg(format!("--glusterd-sock={}", socket.display()))
                .arg(format!("--log-file={}", log.display()))
                .args(["volume", "set", "lockd", option, value]),
        );
        assert!(output.status.success(), "{option} {value}: {output:?}");
        // The client switches graphs shortly after glusterd tells it.
        let wanted = value == "on";
        let translator = match option {
            "performance.stat-prefetch" => "md-cache",
            other => other.trim_start_matches("performance."),
        };
        for _ in 0..100 {
            let graph = support::files_in(&self.mounts[0].join(".meta/graphs/active"));
            if graph.iter().any(|t| t.ends_with(&format!("-{translator}"))) == wanted {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!("{option} {value}: the mount's graph did not change within 10 s");
    }

    /// lockd with `--cluster-fs` on mount `i`'s view of the lock directory.
    fn daemon(&self, i: usize) -> Daemon {
        Daemon::start_with(Options {
            dir: Some(self.lock_dir(i)),
            args: vec!["--cluster-fs".into()],
            ..Options::default()
        })
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let started = Instant::now();
        let output = support::run(Command::new(SCRIPT).arg("down").arg(self.work.path()));
        if !output.status.success() {
            eprintln!(
                "tearing down the GlusterFS volume in {} failed: {}",
                self.work.path().display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        if std::thread::panicking() {
            for log in ["glusterd.log", "m1.log", "m2.log", "m3.log"] {
                let path = self.work.path().join("log").join(log);
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let errors: Vec<&str> = text.lines().filter(|l| l.contains("] E [")).collect();
                let tail = &errors[errors.len().saturating_sub(20)..];
                eprintln!("--- errors in {log} ---\n{}", tail.join("\n"));
            }
        }
        eprintln!(
            "GlusterFS volume torn down in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
}

/// Check, as docs/cluster.md tells an operator to, that a mount has the
/// coherent settings: GlusterFS's `.meta` shows the client's command line
/// (the kernel cache timeouts) and the translators of its active graph (no
/// caching translator that serves stale names or contents).
fn assert_coherent(mount: &Path) {
    let meta = mount.join(".meta");
    let cmdline = std::fs::read_to_string(meta.join("cmdline")).unwrap();
    for option in [
        "--attribute-timeout=0",
        "--entry-timeout=0",
        "--negative-timeout=0",
    ] {
        assert!(cmdline.contains(option), "{option} missing: {cmdline}");
    }
    let graph = support::files_in(&meta.join("graphs/active"));
    let caches = [
        "md-cache",
        "quick-read",
        "open-behind",
        "nl-cache",
        "io-cache",
    ];
    let found: Vec<&String> = graph
        .iter()
        .filter(|t| caches.iter().any(|c| t.ends_with(&format!("-{c}"))))
        .collect();
    assert!(found.is_empty(), "caching translators in {graph:?}");
}

/// The first process whose arguments `matches`.
fn process_where(matches: impl Fn(&[String]) -> bool) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if matches(&args) {
            return Some(pid);
        }
    }
    None
}

/// Tear down the volumes of test runs that were killed before their drop
/// ran: with the turn held, no other volume is in use.
fn clear_leftovers() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let ours = entry
            .file_name()
            .to_string_lossy()
            .starts_with("lockd-gluster-");
        if ours && dir.join("state").exists() {
            eprintln!("tearing down a volume left behind in {}", dir.display());
            let _ = support::run(Command::new(SCRIPT).arg("down").arg(&dir));
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// What this machine lacks to set up a volume, if anything.
fn missing() -> Option<String> {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root".to_owned());
    }
    if !Path::new("/dev/fuse").exists() {
        missing.push("/dev/fuse".to_owned());
    }
    for (tool, package) in [
        ("glusterd", "glusterfs-server"),
        ("gluster", "glusterfs-server"),
        ("mount.glusterfs", "glusterfs-client"),
        ("ip", "iproute2"),
        ("nsenter", "util-linux"),
        ("flock", "util-linux"),
    ] {
        let found = support::run(
            Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {tool}")),
        );
        if !found.status.success() {
            missing.push(format!("{tool} (package {package})"));
        }
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

fn servers(daemons: &[Daemon]) -> Vec<Server> {
    daemons.iter().map(|d| Server::lockd(d.addr)).collect()
}

/// Six clients spread over three lockd, each on its own mount, contend for
/// three resources; the history checker of tests/history.rs finds no double
/// grant, no refusal a possible state does not justify (so no unlock by a
/// client that did not hold the lock, and no "not locked" to a holder), and
/// the final `locks()` matches.
#[test]
fn history_over_three_daemons_on_three_mounts() {
    let Some(volume) = Volume::up("history_over_three_daemons_on_three_mounts", 3) else {
        return;
    };
    let daemons: Vec<Daemon> = (0..3).map(|i| volume.daemon(i)).collect();
    let seconds = proof::knob("CLUSTER_SECONDS", 6);
    let names = history::plain_names();
    let (events, locks) =
        history::run_history_for(&servers(&daemons), &names, Duration::from_secs(seconds));
    history::passes(&events, &locks, &names);
    for (i, daemon) in daemons.iter().enumerate() {
        assert!(
            daemon.log().contains("granted"),
            "the lockd on mount {i} granted nothing"
        );
    }
}

/// Fencing across mounts: a resource acquired through one lockd and
/// released through another, round after round, gets a larger token each
/// time; a break through a second lockd ends a grant made by the first for
/// a third, and a fence releases a client's locks whichever lockd granted
/// them, both in the one audit trail; clients on three lockd taking and
/// releasing three resources see every token larger than every one
/// acknowledged before it; and `acquire_many` from clients on different
/// lockd is all or nothing.
#[test]
fn fencing_holds_across_mounts() {
    let Some(volume) = Volume::up("fencing_holds_across_mounts", 3) else {
        return;
    };
    let daemons: Vec<Daemon> = (0..3).map(|i| volume.daemon(i)).collect();
    let mut rpcs: Vec<Rpc> = daemons.iter().map(|d| Rpc::new(d.addr)).collect();
    let mut last = 0;
    for round in 0..30 {
        let (taker, releaser) = (round % 3, (round + 1) % 3);
        let outcome = rpcs[taker].call("acquire", &["vm1", "node1"]).unwrap();
        let token = fencing::token_of(&outcome).unwrap_or_else(|| panic!("{outcome:?}"));
        assert!(token > last, "token {token} after {last}");
        last = token;
        let check = vec![
            Value::Str("vm1".into()),
            Value::Str("node1".into()),
            Value::Int(token),
        ];
        let checked = rpcs[releaser].call_values("check", check.clone()).unwrap();
        assert_eq!(checked, Outcome::Value(Value::Bool(true)), "round {round}");
        assert!(
            rpcs[releaser]
                .call_values("release", check)
                .unwrap()
                .is_nil()
        );
    }

    // A break on another lockd ends the grant everywhere; a fence on a
    // third releases all of a client's locks, whichever lockd granted them.
    let token = fencing::token_of(&rpcs[0].call("acquire", &["vm2", "node1"]).unwrap())
        .expect("acquire vm2");
    let grant = |client: &str, token| {
        vec![
            Value::Str("vm2".into()),
            Value::Str(client.into()),
            Value::Int(token),
        ]
    };
    let broken = rpcs[1]
        .call_values(
            "break_lock",
            [grant("node1", token), vec![Value::Str("node1 off".into())]].concat(),
        )
        .unwrap();
    assert!(matches!(&broken, Outcome::Value(v) if v.member("token") == Some(&Value::Int(token))));
    let checked = rpcs[2].call_values("check", grant("node1", token)).unwrap();
    assert_eq!(checked, Outcome::Value(Value::Bool(false)));
    let next = fencing::token_of(&rpcs[2].call("acquire", &["vm2", "node2"]).unwrap())
        .expect("acquire vm2 again");
    assert!(next > token, "token {next} after a break of {token}");
    let many = vec![
        Value::Array(vec![Value::Str("d1".into()), Value::Str("d2".into())]),
        Value::Str("node2".into()),
    ];
    assert!(matches!(
        rpcs[0].call_values("acquire_many", many).unwrap(),
        Outcome::Value(Value::Array(ref l)) if l.len() == 2
    ));
    let fenced = rpcs[1].call("fence", &["node2", "stonith"]).unwrap();
    assert!(
        matches!(&fenced, Outcome::Value(Value::Array(l)) if l.len() == 3),
        "{fenced:?}"
    );
    assert_eq!(
        rpcs[0].call("locks", &[]).unwrap(),
        Outcome::Value(Value::Array(Vec::new()))
    );
    let audit = std::fs::read_to_string(volume.lock_dir(2).join("lockd.audit.jsonl")).unwrap();
    let methods: Vec<&str> = audit
        .lines()
        .map(|l| {
            if l.contains("\"break_lock\"") {
                "break_lock"
            } else {
                "fence"
            }
        })
        .collect();
    assert_eq!(
        methods,
        ["break_lock", "fence", "fence", "fence"],
        "{audit}"
    );

    let grants: Grants = Arc::default();
    let seed = proof::seed("cluster-fencing");
    let end = Instant::now() + Duration::from_secs(proof::knob("CLUSTER_FENCING_SECONDS", 3));
    let clients: Vec<_> = (0..6u64)
        .map(|c| {
            let grants = Arc::clone(&grants);
            let addr = daemons[c as usize % 3].addr;
            thread::spawn(move || fencing::churn(addr, c, seed ^ c, end, &grants))
        })
        .collect();
    for client in clients {
        client.join().expect("client thread");
    }
    let total = fencing::tokens_only_grew(&grants);

    let addrs: Vec<SocketAddr> = daemons.iter().map(|d| d.addr).collect();
    let seconds = proof::knob("CLUSTER_FENCING_SECONDS", 3);
    let (granted, refused) = fencing::acquire_many_contention(&addrs, Duration::from_secs(seconds));
    assert!(
        granted > 5 && refused > 5,
        "too little contention to prove anything: {granted} granted, {refused} refused"
    );
    eprintln!(
        "fencing across mounts: 30 rounds of acquire and release on different lockd, {total} grants by clients on three lockd, tokens only grew; acquire_many: {granted} granted, {refused} refused, none half-taken"
    );
}

/// One lockd of three is killed with SIGKILL while clients call all three:
/// the other two keep answering every call, the locks the killed one
/// acknowledged stay held (the others refuse them and report their holder),
/// their holder can release them through another lockd, and a lockd started
/// again on the killed one's mount (which removes its leftover content
/// files, and the others' too, while they are busy) sees the same locks.
#[test]
fn kill_9_of_one_daemon_leaves_the_others_serving() {
    let Some(volume) = Volume::up("kill_9_of_one_daemon_leaves_the_others_serving", 3) else {
        return;
    };
    let mut daemons: Vec<Daemon> = (0..3).map(|i| volume.daemon(i)).collect();
    let mut victim = Rpc::new(daemons[0].addr);
    let mut tokens = Vec::new();
    for r in 0..3 {
        let name = format!("held{r}");
        assert!(victim.call("lock", &[&name, "victim"]).unwrap().is_nil());
        let name = format!("fenced{r}");
        let outcome = victim.call("acquire", &[&name, "victim"]).unwrap();
        tokens.push(fencing::token_of(&outcome).unwrap_or_else(|| panic!("{outcome:?}")));
    }

    // Clients on every lockd; those on the survivors must get every reply.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..6usize)
        .map(|c| {
            let addr = daemons[c % 3].addr;
            let stop = Arc::clone(&stop);
            thread::spawn(move || busy_client(addr, c, &stop))
        })
        .collect();
    thread::sleep(Duration::from_millis(700));
    daemons[0].kill9();
    let killed_at = Instant::now();
    thread::sleep(Duration::from_millis(1500));
    // Started again on the same mount while the others are busy.
    daemons[0] = volume.daemon(0);
    thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    for (c, client) in clients.into_iter().enumerate() {
        let (answered, failed, after_kill) = client.join().expect("client thread");
        if c % 3 == 0 {
            eprintln!("client {c} on the killed lockd: {answered} answered, {failed} not");
        } else {
            assert_eq!(failed, 0, "client {c} on a survivor lost {failed} calls");
            assert!(
                after_kill > 10,
                "client {c} on a survivor got only {after_kill} answers after the kill"
            );
        }
    }
    eprintln!(
        "kill -9: the survivors answered every call through the kill and the restart ({:.1} s)",
        killed_at.elapsed().as_secs_f64()
    );

    let mut survivor = Rpc::new(daemons[1].addr);
    let mut other = Rpc::new(daemons[2].addr);
    let mut restarted = Rpc::new(daemons[0].addr);
    for (r, &token) in tokens.iter().enumerate() {
        let name = format!("held{r}");
        let refused = survivor.call("lock", &[&name, "thief"]).unwrap();
        assert_eq!(
            refused,
            Outcome::Fault(
                1,
                "<type 'exceptions.Exception'>:Resource already locked by 'victim'".into()
            )
        );
        let status = restarted.call("status", &[&name]).unwrap();
        let Outcome::Value(status) = status else {
            panic!("{status:?}")
        };
        assert_eq!(
            status.member("client").and_then(Value::as_str),
            Some("victim")
        );
        let name = format!("fenced{r}");
        let params = vec![
            Value::Str(name.clone()),
            Value::Str("victim".into()),
            Value::Int(token),
        ];
        let checked = other.call_values("check", params.clone()).unwrap();
        assert_eq!(checked, Outcome::Value(Value::Bool(true)), "{name}");
        assert!(other.call_values("release", params).unwrap().is_nil());
        let again = survivor.call("acquire", &[&name, "next"]).unwrap();
        let token = fencing::token_of(&again).unwrap_or_else(|| panic!("{again:?}"));
        assert!(
            token > tokens[r],
            "{name}: token {token} after {}",
            tokens[r]
        );
    }
    let Outcome::Value(Value::Array(locks)) = restarted.call("locks", &[]).unwrap() else {
        panic!("locks()")
    };
    let victims = locks
        .iter()
        .filter(|l| l.member("client").and_then(Value::as_str) == Some("victim"))
        .count();
    assert_eq!(victims, 3, "{locks:?}");
}

/// Lock and unlock a resource of its own until `stop`: how many calls were
/// answered, how many were not, and how many answered in the second half
/// (after the kill in [`kill_9_of_one_daemon_leaves_the_others_serving`]).
fn busy_client(addr: SocketAddr, c: usize, stop: &AtomicBool) -> (usize, usize, usize) {
    let mut rpc = Rpc::new(addr);
    rpc.guard = Duration::from_secs(15);
    let (mut answered, mut failed, mut late) = (0, 0, 0);
    let start = Instant::now();
    let (name, me) = (format!("busy{c}"), format!("client{c}"));
    while !stop.load(Ordering::Relaxed) {
        for method in ["lock", "unlock"] {
            match rpc.call(method, &[&name, &me]) {
                Ok(Outcome::Value(_)) => {
                    answered += 1;
                    if start.elapsed() > Duration::from_millis(800) {
                        late += 1;
                    }
                }
                Ok(Outcome::Fault(code, text)) => {
                    // The killed lockd may have made a change it did not
                    // answer: then the next call is refused, as it should be.
                    assert_eq!(code, 1, "client {c}: {text}");
                    answered += 1;
                }
                Err(_) => {
                    failed += 1;
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
    (answered, failed, late)
}

/// A lockd stopped with SIGSTOP in the middle of a change: it holds
/// `lockd.lock` (shared, as every lockd's lock and unlock) and the byte of
/// `lockd.ranges` of the resource it is changing. The lockd on the other
/// mount goes on serving every other resource at once; a call on that
/// resource, and a `fence` (which takes `lockd.lock` exclusively), fail
/// after the bounded wait (10 s) with a fault that says another process
/// holds the file and nothing was changed, instead of hanging; after
/// SIGCONT, service resumes by itself.
///
/// The stopped lockd holds both for real: it is stopped while busy
/// (clients lock and unlock through it without pause) until, seen from the
/// other mount, an `flock -n` finds `lockd.lock` taken and a byte-range
/// lock finds the byte of one of its resources taken, i.e. the stop fell
/// inside an unlock. Otherwise it is resumed and stopped again; no
/// stand-in process holds the locks.
#[test]
fn a_stopped_daemon_holding_the_directory_lock_fails_calls_then_service_resumes() {
    let test = "a_stopped_daemon_holding_the_directory_lock_fails_calls_then_service_resumes";
    let Some(volume) = Volume::up(test, 2) else {
        return;
    };
    let stopped = volume.daemon(0);
    let other = volume.daemon(1);
    let stop = Arc::new(AtomicBool::new(false));
    // Every call is answered. A call that waited out the stop behind the
    // one holding the locks has waited longer than the bounded wait, and
    // may fail as the other lockd's calls do; then the next is refused.
    let clients = keep_busy(stopped.addr, &stop, |text| text.contains("still held"));
    let lock_file = volume.lock_dir(1).join("lockd.lock");
    let ranges = volume.lock_dir(1).join("lockd.ranges");
    let mut held = None;
    let tries = stop_until(&stopped, || {
        if !is_locked(&lock_file) {
            return false;
        }
        held = (0..4).find(|c| byte_is_locked(&ranges, &format!("busy{c}")));
        held.is_some()
    });
    let Some(c) = held else {
        unreachable!("stop_until returns once a byte is held")
    };
    let (name, holder) = (format!("busy{c}"), format!("client{c}"));
    eprintln!("stopped lockd caught in a change of {name} at stop {tries}");

    // The resource it holds, and a fence, fail on the other mount, not hang.
    let started = Instant::now();
    let callers: Vec<_> = [
        ("unlock", vec![name.clone(), holder.clone()], "lockd.ranges"),
        (
            "fence",
            vec!["nobody".to_owned(), "test".to_owned()],
            "lockd.lock",
        ),
    ]
    .into_iter()
    .map(|(method, params, file)| {
        let addr = other.addr;
        thread::spawn(move || {
            let mut rpc = Rpc::new(addr);
            let params: Vec<&str> = params.iter().map(String::as_str).collect();
            let outcome = rpc.call(method, &params).unwrap();
            (method, file, outcome, Instant::now())
        })
    })
    .collect();
    // Meanwhile every other resource is served at once, changes included.
    thread::sleep(Duration::from_millis(500));
    let served = Instant::now();
    let mut rpc = Rpc::new(other.addr);
    assert!(rpc.call("lock", &["vm1", "node1"]).unwrap().is_nil());
    assert!(rpc.call("unlock", &["vm1", "node1"]).unwrap().is_nil());
    let status = rpc.call("status", &["vm3"]).unwrap();
    let served_in = served.elapsed();
    assert!(
        matches!(&status, Outcome::Value(s) if s.member("locked") == Some(&Value::Bool(false))),
        "{status:?}"
    );
    assert!(
        served_in < Duration::from_secs(3),
        "other resources waited {served_in:?}"
    );
    eprintln!(
        "while stopped, a lock, an unlock and a status of other resources on the other lockd took {:.2} s",
        served_in.as_secs_f64()
    );
    let health = support::curl(&["-i", &format!("{}/health", other.url())]);
    for caller in callers {
        let (method, file, outcome, at) = caller.join().expect("caller");
        let waited = at - started;
        let Outcome::Fault(code, text) = &outcome else {
            panic!("{method} succeeded while {file} was held: {outcome:?}")
        };
        assert_eq!(*code, -32603, "{text}");
        assert!(
            text.contains(file)
                && text.contains("still held by another process")
                && text.contains("nothing was changed"),
            "{method}: {text}"
        );
        assert!(
            waited >= Duration::from_secs(9) && waited < Duration::from_secs(15),
            "{method} failed after {waited:?}"
        );
        eprintln!(
            "while stopped, {method} failed after {:.1} s: {text}",
            waited.as_secs_f64()
        );
    }
    eprintln!(
        "/health of the other lockd meanwhile: {}",
        health.lines().next().unwrap_or_default()
    );

    lockd::sys::kill(stopped.pid(), libc::SIGCONT).unwrap();
    let resumed = Instant::now();
    let mut rpc = Rpc::new(other.addr);
    rpc.guard = Duration::from_secs(15);
    let fenced = rpc.call("fence", &["nobody", "test"]).unwrap();
    assert!(
        matches!(&fenced, Outcome::Value(Value::Array(l)) if l.is_empty()),
        "{fenced:?}"
    );
    let took = resumed.elapsed();
    assert!(took < Duration::from_secs(5), "resumed after {took:?}");
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("client thread");
    }
    eprintln!(
        "after SIGCONT the other lockd fenced in {:.3} s; the stopped one's clients finished",
        took.as_secs_f64()
    );
}

/// Whether the byte of `lockd.ranges` (at `path`) that stands for the
/// resource `name` is locked by another open file: a byte-range lock tried
/// through a description of its own.
fn byte_is_locked(path: &Path, name: &str) -> bool {
    use std::os::fd::AsFd;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let offset = lockd::store::name_offset(name.as_bytes());
    let taken = lockd::sys::ofd_try_lock(file.as_fd(), offset).unwrap();
    !taken
}

/// Four clients locking and unlocking resources of their own through the
/// lockd at `addr` without pause, until `stop`. Every call must be answered:
/// with a value, a refusal, or a lock directory failure that `failure_ok`
/// accepts.
fn keep_busy(
    addr: SocketAddr,
    stop: &Arc<AtomicBool>,
    failure_ok: fn(&str) -> bool,
) -> Vec<thread::JoinHandle<()>> {
    (0..4usize)
        .map(|c| {
            let stop = Arc::clone(stop);
            thread::spawn(move || {
                let mut rpc = Rpc::new(addr);
                rpc.guard = Duration::from_secs(60);
                let (name, me) = (format!("busy{c}"), format!("client{c}"));
                while !stop.load(Ordering::Relaxed) {
                    for method in ["lock", "unlock"] {
                        match rpc.call(method, &[&name, &me]).unwrap() {
                            Outcome::Value(_) | Outcome::Fault(1, _) => {}
                            Outcome::Fault(code, text) => assert!(
                                code == -32603 && failure_ok(&text),
                                "client {c}: {code} {text}"
                            ),
                        }
                    }
                }
            })
        })
        .collect()
}

/// Stop the busy `daemon` (SIGSTOP) at random moments until it is stopped
/// while it holds `lockd.lock` (`lock_file`, as another mount shows it):
/// how many stops it took.
fn stop_while_holding(daemon: &Daemon, lock_file: &Path) -> usize {
    stop_until(daemon, || is_locked(lock_file))
}

/// Stop the busy `daemon` (SIGSTOP) at random moments until `caught` says
/// it was stopped in the state wanted: how many stops it took.
fn stop_until(daemon: &Daemon, mut caught: impl FnMut() -> bool) -> usize {
    let mut rng = Prng::new(proof::seed("cluster-stop"));
    for tries in 1..=200 {
        thread::sleep(Duration::from_millis(20 + rng.below(80)));
        lockd::sys::kill(daemon.pid(), libc::SIGSTOP).unwrap();
        if caught() {
            return tries;
        }
        lockd::sys::kill(daemon.pid(), libc::SIGCONT).unwrap();
    }
    panic!("in 200 stops the busy lockd was never caught as wanted");
}

/// A node's Gluster client dies (SIGKILL of its FUSE process) while that
/// node's lockd holds `lockd.lock` (stopped in a check-and-change, as
/// above): the brick sees the connection close and releases the `flock` at
/// once, so the lockd on the other mount goes on without waiting for it;
/// the node's lockd, resumed, fails its calls with a lock directory failure
/// (its mount is gone) and grants nothing. A node that dies whole (power)
/// is noticed by the bricks' TCP timeouts instead, about 42 s (not tested).
#[test]
fn a_node_whose_gluster_client_dies_releases_the_directory_lock() {
    let test = "a_node_whose_gluster_client_dies_releases_the_directory_lock";
    let Some(volume) = Volume::up(test, 2) else {
        return;
    };
    let orphan = volume.daemon(0);
    let other = volume.daemon(1);
    let mut rpc = Rpc::new(orphan.addr);
    assert!(rpc.call("lock", &["held", "node1"]).unwrap().is_nil());
    let stop = Arc::new(AtomicBool::new(false));
    let clients = keep_busy(orphan.addr, &stop, |text| {
        text.contains("still held") || text.contains("not connected")
    });
    let tries = stop_while_holding(&orphan, &volume.lock_dir(1).join("lockd.lock"));
    lockd::sys::kill(volume.fuse_client(0), libc::SIGKILL).unwrap();
    let killed = Instant::now();
    let mut rpc = Rpc::new(other.addr);
    assert!(rpc.call("lock", &["vm1", "node2"]).unwrap().is_nil());
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(5), "granted after {took:?}");
    eprintln!(
        "the lockd caught holding lockd.lock at stop {tries}; its Gluster client killed; the other lockd granted after {:.3} s",
        took.as_secs_f64()
    );

    lockd::sys::kill(orphan.pid(), libc::SIGCONT).unwrap();
    let mut rpc = Rpc::new(orphan.addr);
    rpc.guard = Duration::from_secs(15);
    let outcome = rpc.call("lock", &["vm2", "node1"]).unwrap();
    let Outcome::Fault(-32603, text) = &outcome else {
        panic!("the lockd without its mount answered {outcome:?}")
    };
    assert!(text.contains("lock directory failure"), "{text}");
    eprintln!("the lockd without its mount: {text}");
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("client thread");
    }
    let mut rpc = Rpc::new(other.addr);
    let Outcome::Value(Value::Array(locks)) = rpc.call("locks", &[]).unwrap() else {
        panic!("locks()")
    };
    let held: Vec<(&str, &str)> = locks
        .iter()
        .filter_map(|l| {
            let field = |n| l.member(n).and_then(Value::as_str);
            Some((field("resource")?, field("client")?))
        })
        .filter(|(r, _)| !r.starts_with("busy"))
        .collect();
    assert_eq!(held, [("held", "node1"), ("vm1", "node2")]);
}

/// Whether `lockd.lock` at `path` is held by someone: `flock -n` from a
/// process of its own (exit status 75 when it is).
fn is_locked(path: &Path) -> bool {
    let output = support::run(
        Command::new("flock")
            .args(["-n", "-E", "75"])
            .arg(path)
            .arg("true"),
    );
    match output.status.code() {
        Some(0) => false,
        Some(75) => true,
        _ => panic!(
            "flock {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// Without `--cluster-fs`, lockd does not start on a GlusterFS mount: it
/// exits with status 1 and says which filesystem it found and where to read
/// how to set it up.
#[test]
fn lockd_refuses_an_unmarked_gluster_mount() {
    let Some(volume) = Volume::up("lockd_refuses_an_unmarked_gluster_mount", 1) else {
        return;
    };
    let mut process = Process::spawn(
        support::clean_command(LOCKD)
            .arg("--dir")
            .arg(volume.lock_dir(0))
            .args(["--listen", "127.0.0.1:0"]),
    );
    let status = process.wait_exit();
    let log = process.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("fuse.glusterfs")
            && log.contains("docs/cluster.md")
            && log.contains("--cluster-fs"),
        "{log}"
    );
    assert!(!log.contains("listening"), "{log}");
}

/// With `--cluster-fs`, lockd still refuses a GlusterFS mount whose client
/// caches, as its `.meta` shows: a mount made without the kernel cache
/// timeouts at 0, and (on a coherent mount) a volume whose caching
/// translators are switched on; each refusal names the setting and
/// docs/cluster.md. Set back, the same mount is accepted.
#[test]
fn lockd_refuses_an_incoherent_gluster_mount() {
    let test = "lockd_refuses_an_incoherent_gluster_mount";
    let Some(volume) = Volume::up(test, 1) else {
        return;
    };
    let start = |dir: &Path| {
        let mut process = Process::spawn(
            support::clean_command(LOCKD)
                .arg("--cluster-fs")
                .arg("--dir")
                .arg(dir)
                .args(["--listen", "127.0.0.1:0"]),
        );
        let status = process.wait_exit();
        (status.code(), process.log())
    };
    let refused = |dir: &Path, setting: &str| {
        let (code, log) = start(dir);
        assert_eq!(code, Some(1), "{log}");
        assert!(
            log.contains(setting) && log.contains("docs/cluster.md"),
            "{setting}: {log}"
        );
        assert!(!log.contains("listening"), "{log}");
        eprintln!("{}", log.lines().last().unwrap_or_default());
    };
    // A mount with Gluster's default kernel caching (1 s each).
    let plain = volume.work.path().join("m9");
    std::fs::create_dir(&plain).unwrap();
    let mounted = support::run(
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", volume.namespace()))
            .args(["mount", "-t", "glusterfs", "127.0.0.2:/lockd"])
            .arg(&plain),
    );
    assert!(mounted.status.success(), "{mounted:?}");
    refused(&plain.join("locks"), "runs without attribute-timeout=0");
    // The volume's caches, switched on while the coherent mount is mounted.
    for (option, translator) in [
        ("performance.quick-read", "quick-read"),
        ("performance.stat-prefetch", "md-cache"),
    ] {
        volume.set(option, "on");
        refused(
            &volume.lock_dir(0),
            &format!("has the {translator} translator"),
        );
        volume.set(option, "off");
    }
    let daemon = volume.daemon(0);
    let mut rpc = Rpc::new(daemon.addr);
    assert!(rpc.call("lock", &["vm1", "node1"]).unwrap().is_nil());
}

/// Two lockd with the same process id on two nodes (each the first process
/// of its container, or started in the same order on identical hosts):
/// each in a PID namespace of its own here, so both are pid 1. Clients on
/// both take and release locks, each call with a client string of its own
/// (a new content file for every grant); every call must be answered with
/// a grant or a release, none fail because the other lockd's content file
/// has the same name.
#[test]
fn two_daemons_with_one_pid_on_two_mounts_do_not_collide() {
    let test = "two_daemons_with_one_pid_on_two_mounts_do_not_collide";
    let Some(volume) = Volume::up(test, 2) else {
        return;
    };
    let daemons: Vec<Daemon> = (0..2)
        .map(|i| {
            Daemon::start_with(Options {
                dir: Some(volume.lock_dir(i)),
                args: vec!["--cluster-fs".into()],
                shell_prelude: Some("exec unshare --pid --fork --kill-child \"$0\" \"$@\"".into()),
                ..Options::default()
            })
        })
        .collect();
    let end = Instant::now() + Duration::from_secs(3);
    let clients: Vec<_> = (0..4usize)
        .map(|c| {
            let addr = daemons[c % 2].addr;
            thread::spawn(move || {
                let mut rpc = Rpc::new(addr);
                let mut failures = Vec::new();
                let mut n = 0;
                while Instant::now() < end {
                    let (name, me) = (format!("vm{c}"), format!("client{c}-{n}"));
                    n += 1;
                    for method in ["lock", "unlock"] {
                        let outcome = rpc.call(method, &[&name, &me]).unwrap();
                        if !outcome.is_nil() {
                            failures.push(format!("{method}: {outcome:?}"));
                        }
                    }
                }
                (n, failures)
            })
        })
        .collect();
    let mut failures = Vec::new();
    let mut cycles = 0;
    for client in clients {
        let (n, failed) = client.join().expect("client thread");
        cycles += n;
        failures.extend(failed);
    }
    assert!(
        failures.is_empty(),
        "{} of {cycles} cycles failed, the first: {}",
        failures.len(),
        failures[0]
    );
    eprintln!("two lockd with pid 1: {cycles} cycles, none failed");
}

/// One data brick of a replica 3 arbiter 1 volume dies (SIGKILL of its
/// glusterfsd) while clients on two lockd, on two mounts, contend as in the
/// history run: the other brick and the arbiter keep quorum, every call is
/// answered, and the history checker finds nothing wrong. Then the second
/// data brick dies too: a lock call fails with a lock directory failure
/// (`Transport endpoint is not connected`), nothing is granted.
#[test]
fn a_dead_brick_of_a_replica_3_arbiter_volume_changes_nothing() {
    let test = "a_dead_brick_of_a_replica_3_arbiter_volume_changes_nothing";
    let Some(volume) = Volume::up_as(test, 2, "arbiter") else {
        return;
    };
    let daemons: Vec<Daemon> = (0..2).map(|i| volume.daemon(i)).collect();
    let brick = volume.brick_process("b1");
    let killer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(1500));
        lockd::sys::kill(brick, libc::SIGKILL).unwrap();
    });
    let names = history::plain_names();
    let seconds = proof::knob("CLUSTER_BRICK_SECONDS", 5);
    let (events, locks) =
        history::run_history_for(&servers(&daemons), &names, Duration::from_secs(seconds));
    killer.join().expect("killer");
    let after = events
        .iter()
        .filter(|e| e.invoked > Duration::from_millis(1600))
        .count();
    history::passes(&events, &locks, &names);
    assert!(after > 50, "only {after} calls after the brick died");
    eprintln!("a dead brick: {after} calls after it died, all answered and justified");

    // With the second data brick dead too, quorum is lost: no grant.
    lockd::sys::kill(volume.brick_process("b2"), libc::SIGKILL).unwrap();
    let mut rpc = Rpc::new(daemons[1].addr);
    let outcome = rpc.call("lock", &["vm9", "node1"]).unwrap();
    eprintln!("two bricks dead: {outcome:?}");
    assert!(matches!(outcome, Outcome::Fault(-32603, _)), "{outcome:?}");
}
