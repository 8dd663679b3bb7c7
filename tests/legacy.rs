//! lockd and gocept.lockd 0.1 on one lock directory: after a migration
//! (the legacy daemon stopped, lockd started on its directory), after a
//! downgrade, and with both serving the directory at once.
//!
//! The legacy daemon is the real gocept.lockd 0.1, fetched from the package
//! index with pip into the target directory and run under Python 2.7
//! (`PYENV_VERSION=2.7.18 python2.7`, or a `python2.7` on the PATH). Where
//! there is no Python 2.7, `tests/legacy/standin.py` runs instead: a Python 3
//! program that writes, reads and refuses byte for byte as gocept.lockd
//! does (`LOCKD_TEST_LEGACY=standin` picks it anyway). Each test says on
//! stderr which one it ran; with `CI` set, a failed gocept.lockd download
//! fails the test instead.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::history::{self, Server};
use crate::support::{self, Daemon, PATIENCE, Process};

/// Names gocept.lockd stores as they are: spaces, `%`, `+`, `=`, `#`,
/// `@`, `~`, quotes, a leading `.`, non-ASCII letters, upper case, and
/// names that look percent-encoded.
const NAMES: &[&str] = &[
    "my vm",
    "caf\u{e9}",
    "a%20b",
    "100%",
    "%",
    "%2F",
    "a+b",
    "k=v",
    "#1",
    "@host",
    "~user",
    "it's",
    "say \"hi\"",
    ".hidden",
    ".",
    "..",
    "UPPER",
    "MiXeD.Case",
    "tab\there",
    "\u{fc}n\u{ef}c\u{f6}d\u{e9}",
    "\u{65e5}\u{672c}",
    "back\\slash",
    "semi;colon (and) [more] {braces}",
    "<lt>&amp;",
    "*?!$`",
    "line\nbreak",
    "vm1",
];

/// Which legacy daemon a test runs.
enum Legacy {
    /// gocept.lockd 0.1 under Python 2.7: the interpreter and the sources.
    Real { python: Python27, sources: PathBuf },
    /// tests/legacy/standin.py under Python 3.
    StandIn,
}

impl Legacy {
    /// The real one where Python 2.7 runs, else the stand-in; says which.
    fn pick() -> Legacy {
        if std::env::var_os("LOCKD_TEST_LEGACY").is_some_and(|v| v == "standin") {
            eprintln!("legacy: running tests/legacy/standin.py (LOCKD_TEST_LEGACY=standin)");
            return Legacy::StandIn;
        }
        let Some(python) = python27() else {
            eprintln!(
                "legacy: SKIPPED the real gocept.lockd 0.1: no Python 2.7 (tried `PYENV_VERSION=2.7.18 python2.7` and `python2.7`); running tests/legacy/standin.py, which writes the legacy files byte for byte, instead"
            );
            return Legacy::StandIn;
        };
        match gocept_sources() {
            Ok(sources) => {
                eprintln!("legacy: running the real gocept.lockd 0.1 under Python 2.7");
                Legacy::Real { python, sources }
            }
            Err(why) if std::env::var_os("CI").is_some() => {
                panic!("legacy: cannot fetch gocept.lockd 0.1 with pip: {why}")
            }
            Err(why) => {
                eprintln!(
                    "legacy: SKIPPED the real gocept.lockd 0.1: cannot fetch it with pip ({why}); running tests/legacy/standin.py instead"
                );
                Legacy::StandIn
            }
        }
    }

    /// Start it on `dir`, as its own working directory: gocept.lockd opens
    /// `lockd.lock` relative to it, and shares lockd's only from there.
    fn start(&self, dir: &Path) -> LegacyDaemon {
        let port = free_port();
        let mut command = match self {
            Legacy::Real { python, sources } => {
                let mut command = python.command();
                command.arg("-c").arg(GOCEPT_MAIN).arg(sources);
                command
            }
            Legacy::StandIn => {
                let mut command = Command::new("python3");
                command.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/legacy/standin.py"));
                command
            }
        };
        command
            .arg("127.0.0.1")
            .arg(port.to_string())
            .arg(dir)
            .current_dir(dir)
            .env("LANG", "C.UTF-8")
            .env("LC_ALL", "C.UTF-8");
        let process = Process::spawn(&mut command);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "the legacy daemon did not listen; its log:\n{}",
                process.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        LegacyDaemon { process, addr }
    }
}

/// gocept.lockd's `main(host, port, directory)`, which its console script
/// cannot call with arguments.
const GOCEPT_MAIN: &str = "import sys\n\
    src = sys.argv[1]\n\
    sys.path[:0] = [src + '/gocept.lockd-0.1', src + '/zc.lockfile-1.2.1/src']\n\
    from gocept.lockd.lockd import main\n\
    main(sys.argv[2], int(sys.argv[3]), sys.argv[4])\n";

struct LegacyDaemon {
    process: Process,
    addr: SocketAddr,
}

impl LegacyDaemon {
    fn url(&self) -> String {
        format!("http://{}/RPC2", self.addr)
    }

    fn py(&self, calls: &str) -> String {
        support::python(&self.url(), calls)
    }

    fn stop(mut self) {
        self.process.kill9();
    }
}

/// A Python 2.7 interpreter: the program, and the pyenv version it needs.
#[derive(Clone, Copy)]
struct Python27 {
    program: &'static str,
    pyenv: Option<&'static str>,
}

impl Python27 {
    fn command(self) -> Command {
        let mut command = Command::new(self.program);
        if let Some(version) = self.pyenv {
            command.env("PYENV_VERSION", version);
        }
        command
    }
}

fn python27() -> Option<Python27> {
    let candidates = [
        Python27 {
            program: "python2.7",
            pyenv: Some("2.7.18"),
        },
        Python27 {
            program: "python2.7",
            pyenv: None,
        },
        Python27 {
            program: "python2",
            pyenv: None,
        },
    ];
    candidates.into_iter().find(|python| {
        python
            .command()
            .args(["-c", "import sys; print(sys.version_info[:2])"])
            .output()
            .is_ok_and(|out| out.status.success() && out.stdout.starts_with(b"(2, 7)"))
    })
}

/// gocept.lockd 0.1 and zc.lockfile 1.2.1, unpacked under the target
/// directory (fetched once, then reused).
fn gocept_sources() -> Result<PathBuf, String> {
    static FETCHED: OnceLock<Mutex<Option<PathBuf>>> = OnceLock::new();
    let mut fetched = FETCHED
        .get_or_init(|| Mutex::new(None))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = fetched.as_ref() {
        return Ok(dir.clone());
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gocept.lockd-0.1");
    let marker = dir.join("gocept.lockd-0.1/gocept/lockd/lockd.py");
    if !marker.exists() {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // (A `\` line continuation eats the next line's indentation, so
        // the loop body is one line.)
        let script = "import glob, sys, subprocess, tarfile\n\
            d = sys.argv[1]\n\
            subprocess.check_call([sys.executable, '-m', 'pip', 'download', '-q', '--no-deps', \
            '--no-binary', ':all:', '-d', d, 'gocept.lockd==0.1', 'zc.lockfile==1.2.1'])\n\
            for archive in glob.glob(d + '/*.tar.gz'): tarfile.open(archive).extractall(d)\n";
        let out = Command::new("python3")
            .args(["-c", script])
            .arg(&dir)
            .output()
            .map_err(|e| format!("python3: {e}"))?;
        if !out.status.success() || !marker.exists() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
    }
    *fetched = Some(dir.clone());
    Ok(dir)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A Python list literal of `names`.
fn py_list(names: &[&str]) -> String {
    let items: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    // Rust's {:?} of these names is valid Python too (no \u{..} escapes
    // arise: every name is printable or a tab or newline).
    format!("[{}]", items.join(", "))
}

fn holder_of(i: usize) -> &'static str {
    if i.is_multiple_of(3) {
        "node1"
    } else {
        "node2"
    }
}

fn refusal(holder: &str) -> String {
    format!("FAULT 1 <type 'exceptions.Exception'>:Resource already locked by '{holder}'")
}

#[test]
fn a_legacy_directory_migrates_with_every_lock_held() {
    let legacy = Legacy::pick();
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("locks");
    std::fs::create_dir(&dir).unwrap();
    let names = py_list(NAMES);

    // The legacy daemon takes every lock, node1 every third, node2 the rest.
    let old = legacy.start(&dir);
    let out = old.py(&format!(
        "for i, n in enumerate({names}): call(lambda: s.lock(n, 'node1' if i % 3 == 0 else 'node2'))"
    ));
    assert!(out.lines().all(|l| l == "None"), "{out}");
    old.stop();
    let files = support::files_in(&dir);
    for name in NAMES {
        assert!(
            files.contains(&format!("{name}.resource.lock")),
            "{name:?} is not where gocept.lockd keeps it: {files:?}"
        );
    }

    // lockd on its directory: every lock held, under its own name.
    let daemon = Daemon::start_in(&dir);
    assert!(
        daemon
            .log()
            .contains(&format!("({} locks held)", NAMES.len())),
        "{}",
        daemon.log()
    );
    assert!(!daemon.log().contains("WARN"), "{}", daemon.log());
    let out = daemon.py(&format!(
        "for n in {names}: call(lambda: s.lock(n, 'node3'))\n\
         for n in {names}: call(lambda: s.status(n)['client'])\n\
         call(lambda: sorted(l['resource'] for l in s.locks()) == sorted({names}))"
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2 * NAMES.len() + 1, "{out}");
    for (i, name) in NAMES.iter().enumerate() {
        assert_eq!(lines[i], refusal(holder_of(i)), "{name:?}");
        assert_eq!(
            lines[NAMES.len() + i],
            format!("'{}'", holder_of(i)),
            "{name:?}"
        );
    }
    assert_eq!(lines[2 * NAMES.len()], "True", "locks() lists every name");

    // Another client cannot release them; their holders can, and then no
    // file is left.
    let out = daemon.py(&format!(
        "for i, n in enumerate({names}): call(lambda: s.unlock(n, 'node3'))\n\
         for i, n in enumerate({names}): call(lambda: s.unlock(n, 'node1' if i % 3 == 0 else 'node2'))"
    ));
    let lines: Vec<&str> = out.lines().collect();
    for (i, name) in NAMES.iter().enumerate() {
        assert_eq!(
            lines[i],
            format!(
                "FAULT 1 <type 'exceptions.Exception'>:Resource locked by '{}' cannot be unlocked by 'node3'",
                holder_of(i)
            ),
            "{name:?}"
        );
        assert_eq!(lines[NAMES.len() + i], "None", "{name:?}");
    }
    assert_eq!(daemon.lock_files(), ["lockd.lock", "lockd.ranges"]);
}

#[test]
fn after_a_downgrade_the_legacy_daemon_honours_lockds_locks() {
    let legacy = Legacy::pick();
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("locks");
    let names = py_list(NAMES);
    let mut daemon = Daemon::start_in(&dir);
    let out = daemon.py(&format!(
        "for n in {names}: call(lambda: s.lock(n, 'node4'))"
    ));
    assert!(out.lines().all(|l| l == "None"), "{out}");
    assert_eq!(daemon.signal_and_wait(libc::SIGTERM).code(), Some(0));

    let old = legacy.start(&dir);
    let out = old.py(&format!(
        "for n in {names}: call(lambda: s.lock(n, 'node5'))\n\
         for n in {names}: call(lambda: s.unlock(n, 'node4'))\n\
         for n in {names}: call(lambda: s.lock(n, 'node5'))"
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3 * NAMES.len(), "{out}");
    for (i, name) in NAMES.iter().enumerate() {
        assert_eq!(lines[i], refusal("node4"), "{name:?}");
        assert_eq!(lines[NAMES.len() + i], "None", "{name:?}: released");
        assert_eq!(lines[2 * NAMES.len() + i], "None", "{name:?}: taken");
    }
    old.stop();
}

#[test]
fn lockd_and_the_legacy_daemon_on_one_directory_never_grant_twice() {
    let legacy = Legacy::pick();
    let daemon = Daemon::start();
    let old = legacy.start(&daemon.dir);
    let names: Vec<String> = ["my vm", "caf\u{e9}", ".dot", "x+y=z", "vm1"]
        .iter()
        .map(|n| n.to_string())
        .collect();
    let servers = [
        Server::lockd(daemon.addr),
        Server {
            addr: old.addr,
            one_call_per_connection: true,
        },
    ];
    let (events, locks) = history::run_history(&servers, &names);
    history::passes(&events, &locks, &names);
    // Clients alternate between the servers: odd ones call the legacy one.
    let legacy_grants = events
        .iter()
        .filter(|e| e.client % 2 == 1 && e.lock && e.outcome.is_nil())
        .count();
    assert!(legacy_grants > 0, "the legacy daemon granted nothing");
    let log = daemon.log();
    assert!(log.contains("granted"), "{log}");
    old.stop();
}

#[test]
fn names_with_a_slash_are_refused_where_the_legacy_daemon_kept_them() {
    let legacy = Legacy::pick();
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("locks");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    // gocept.lockd walks the path: "./x" is x.resource.lock, "sub/vm" is
    // sub/vm.resource.lock.
    let old = legacy.start(&dir);
    let out =
        old.py("call(lambda: s.lock('./x', 'node2'))\ncall(lambda: s.lock('sub/vm', 'node2'))");
    assert_eq!(out, "None\nNone\n");
    old.stop();
    assert!(dir.join("x.resource.lock").exists() && dir.join("sub/vm.resource.lock").exists());

    let daemon = Daemon::start_in(&dir);
    assert!(
        daemon
            .log()
            .contains("\"sub\" in the lock directory is a directory"),
        "{}",
        daemon.log()
    );
    let out = daemon.py("call(lambda: s.lock('./x', 'node3'))\n\
         call(lambda: s.lock('x', 'node3'))\n\
         call(lambda: s.lock('sub/vm', 'node3'))\n\
         call(lambda: s.lock('./y', 'node3'))");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], [refusal("node2"), refusal("node2")], "{out}");
    assert!(
        lines[2].starts_with(
            "FAULT -32602 gocept.lockd would keep the lock on this name in the subdirectory \"sub\""
        ),
        "{out}"
    );
    assert_eq!(lines[3], "None");
    // lockd keeps "./y" where the legacy daemon looks for it.
    drop(daemon);
    let old = legacy.start(&dir);
    let out = old.py("call(lambda: s.lock('./y', 'node4'))\ncall(lambda: s.lock('y', 'node4'))");
    assert!(
        out.lines().all(|l| l.starts_with(
            "FAULT 1 <type 'exceptions.Exception'>:Resource already locked by 'node3"
        )),
        "{out}"
    );
    old.stop();
}
