//! Living under systemd, without linking libsystemd: the `sd_notify`
//! protocol (`READY=1`, `STOPPING=1`, `STATUS=`, `WATCHDOG=1` datagrams to
//! `$NOTIFY_SOCKET`), socket activation (`$LISTEN_FDS`/`$LISTEN_PID`: the
//! listening socket arrives as file descriptor 3), and the write-path
//! self-test that decides both the watchdog pings and `GET /health`.
//!
//! The self-test runs on one thread of its own every two seconds (or every
//! half watchdog interval, if that is shorter) and pings the watchdog only
//! after a test that passed. So a lock directory that fails, or hangs (a
//! dead NFS server leaves the test stuck in `fsync`), stops the pings, and
//! systemd restarts lockd; `/health` says why without touching the disk.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::net::TcpListener;
use std::os::fd::{BorrowedFd, FromRawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::metrics::Metrics;
use crate::store::{self, Store};
use crate::sys;

/// The first file descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// How long the self-test waits for `lockd.lock` before `/health` says
/// another process keeps it.
const LOCK_CHECK_WAIT: Duration = Duration::from_secs(5);

/// How often the write path is tested when no watchdog asks for more.
const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// The shortest pause between two self-tests, whatever the watchdog says.
const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(10);

/// A self-test that has not finished for this long (beyond its interval)
/// counts as failed: the filesystem hangs.
const PROBE_HANG: Duration = Duration::from_secs(10);

/// How often the lock directory is scanned for the oldest lock's age.
const SCAN_INTERVAL: Duration = Duration::from_secs(60);

/// Where to send `sd_notify` messages, and whether to ping a watchdog.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    target: Option<Target>,
    watchdog: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Path(PathBuf),
    /// An abstract socket name, without the leading `@`.
    Abstract(Vec<u8>),
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`; without
    /// them every notification is a no-op.
    pub fn from_env() -> Notifier {
        Notifier::from_vars(
            std::env::var_os("NOTIFY_SOCKET"),
            std::env::var("WATCHDOG_USEC").ok(),
            std::env::var("WATCHDOG_PID").ok(),
            std::process::id(),
        )
    }

    fn from_vars(
        socket: Option<OsString>,
        watchdog_usec: Option<String>,
        watchdog_pid: Option<String>,
        pid: u32,
    ) -> Notifier {
        let target = socket.map(OsString::into_vec).and_then(|bytes| {
            match bytes.first() {
                Some(b'/') => Some(Target::Path(PathBuf::from(OsString::from_vec(bytes)))),
                Some(b'@') => Some(Target::Abstract(bytes[1..].to_vec())),
                _ => {
                    log::warn!(
                        "NOTIFY_SOCKET={:?} is neither an absolute path nor an abstract name (@…); not notifying systemd",
                        String::from_utf8_lossy(&bytes)
                    );
                    None
                }
            }
        });
        // WATCHDOG_PID, when set, names the one process that must ping.
        let ours = watchdog_pid.is_none_or(|p| p.trim().parse::<u32>().ok() == Some(pid));
        let watchdog = watchdog_usec
            .and_then(|usec| usec.trim().parse::<u64>().ok())
            .filter(|&usec| usec > 0 && ours && target.is_some())
            .map(Duration::from_micros);
        Notifier { target, watchdog }
    }

    /// The watchdog interval systemd asked for, if any.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Send `state` (newline-separated `KEY=value` assignments). Does nothing
    /// outside systemd.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let socket = UnixDatagram::unbound()?;
        let sent = match target {
            Target::Path(path) => socket.send_to(state.as_bytes(), path)?,
            Target::Abstract(name) => {
                let addr = SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(state.as_bytes(), &addr)?
            }
        };
        if sent != state.len() {
            return Err(io::Error::other(format!(
                "sent {sent} of {} bytes",
                state.len()
            )));
        }
        Ok(())
    }

    /// [`Notifier::notify`], logging a failure instead of returning it: a
    /// lost notification must not stop lockd from serving.
    pub fn tell(&self, state: &str) {
        if let Err(error) = self.notify(state) {
            let first = state.lines().next().unwrap_or_default();
            log::warn!("could not send {first} to systemd: {error}");
        }
    }
}

/// The listening socket systemd passed, if it passed one to this process:
/// `$LISTEN_PID` is our pid and `$LISTEN_FDS` at least 1. The variables are
/// removed so that nothing started later mistakes them for its own.
///
/// # Safety
///
/// No other thread may exist yet: this changes the environment, which
/// another thread could be reading (through libc's `getenv`, which std
/// cannot guard). Call it first thing in `main`. It also takes ownership of
/// file descriptor 3 when systemd says it passed one, so nothing else in the
/// process may own that descriptor.
pub unsafe fn take_listener() -> io::Result<Option<TcpListener>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    if pid.is_none() && fds.is_none() {
        return Ok(None);
    }
    // SAFETY: our caller guarantees that no other thread runs yet, so
    // nothing reads the environment concurrently.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    if pid.and_then(|p| p.trim().parse::<u32>().ok()) != Some(std::process::id()) {
        return Ok(None);
    }
    let count = match fds.as_deref().map(str::trim).map(str::parse::<i32>) {
        Some(Ok(n)) if n >= 1 => n,
        _ => return Ok(None),
    };
    for fd in LISTEN_FDS_START..LISTEN_FDS_START.saturating_add(count) {
        sys::inode_of(fd).map_err(|error| {
            io::Error::other(format!(
                "file descriptor {fd} passed by systemd is not open: {error}"
            ))
        })?;
        // SAFETY: fd is open (fstat above), systemd passed it to this
        // process, and our caller guarantees that nothing else owns it.
        let passed = unsafe { BorrowedFd::borrow_raw(fd) };
        sys::set_cloexec(passed)?;
    }
    if count > 1 {
        log::warn!(
            "systemd passed {count} sockets; lockd serves on the first only: give lockd.socket one ListenStream="
        );
    }
    let fd = LISTEN_FDS_START;
    // SAFETY: as above: fd 3 is open and ours alone.
    let passed = unsafe { BorrowedFd::borrow_raw(fd) };
    let option = |option| {
        sys::socket_option(passed, option).map_err(|error| {
            io::Error::other(format!(
                "file descriptor {fd} passed by systemd is not a socket: {error}"
            ))
        })
    };
    let domain = option(libc::SO_DOMAIN)?;
    let kind = option(libc::SO_TYPE)?;
    let listening = option(libc::SO_ACCEPTCONN)?;
    if !matches!(domain, libc::AF_INET | libc::AF_INET6)
        || kind != libc::SOCK_STREAM
        || listening != 1
    {
        return Err(io::Error::other(
            "the socket systemd passed is not a listening TCP socket: use ListenStream=HOST:PORT in lockd.socket",
        ));
    }
    // SAFETY: fd 3 is an open listening TCP socket (checked above) that
    // systemd handed to this process, and our caller guarantees nothing
    // else owns it: the listener becomes its one owner.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    listener.set_nonblocking(false)?;
    Ok(Some(listener))
}

/// The result of the latest write-path self-test, shared by the self-test
/// thread (which writes it) and `GET /health` (which reads it).
pub struct Health {
    state: Mutex<Probe>,
    interval: Duration,
}

struct Probe {
    /// When the latest test finished.
    at: Instant,
    result: Result<(), Arc<store::Error>>,
}

/// Why lockd is not healthy.
#[derive(Debug, Clone)]
pub enum Unhealthy {
    /// The latest write-path self-test failed.
    Failed(Arc<store::Error>),
    /// The latest self-test has not finished for this long.
    Hangs(Duration),
}

impl fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unhealthy::Failed(error) => error.fmt(f),
            Unhealthy::Hangs(age) => write!(
                f,
                "the write-path self-test has not finished for {} s: the lock directory's filesystem hangs",
                age.as_secs()
            ),
        }
    }
}

impl std::error::Error for Unhealthy {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Unhealthy::Failed(error) => Some(&**error),
            Unhealthy::Hangs(_) => None,
        }
    }
}

impl Health {
    /// Health from a first self-test just run, with tests every `interval`.
    pub fn new(first: Result<(), store::Error>, interval: Duration) -> Health {
        Health {
            state: Mutex::new(Probe {
                at: Instant::now(),
                result: first.map_err(Arc::new),
            }),
            interval,
        }
    }

    /// `Ok` if the latest self-test passed and is recent, else why not.
    pub fn check(&self) -> Result<(), Unhealthy> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let age = state.at.elapsed();
        if age > self.interval + PROBE_HANG {
            return Err(Unhealthy::Hangs(age));
        }
        state.result.clone().map_err(Unhealthy::Failed)
    }

    /// Record a test's result; returns whether the verdict changed.
    fn record(&self, result: Result<(), Arc<store::Error>>) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = state.result.is_ok() != result.is_ok();
        *state = Probe {
            at: Instant::now(),
            result,
        };
        changed
    }
}

/// How often to test the write path, given the watchdog interval.
pub fn probe_interval(watchdog: Option<Duration>) -> Duration {
    match watchdog {
        Some(timeout) => (timeout / 2).clamp(MIN_PROBE_INTERVAL, PROBE_INTERVAL),
        None => PROBE_INTERVAL,
    }
}

/// The self-test thread; [`Monitor::stop`] ends it.
pub struct Monitor {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: thread::JoinHandle<()>,
}

impl Monitor {
    /// Test the write path every `health`'s interval, record the result,
    /// ping the watchdog after each test that passed, and scan for the
    /// oldest lock now and then.
    pub fn start(
        store: Arc<Store>,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
        notifier: Notifier,
    ) -> io::Result<Monitor> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread = {
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name("self-test".into())
                .spawn(move || monitor(&store, &health, &metrics, &notifier, &stop))?
        };
        Ok(Monitor { stop, thread })
    }

    /// Stop the thread; wait for it only briefly, since a test stuck on a
    /// hung filesystem would never return.
    pub fn stop(self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(PoisonError::into_inner) = true;
        wake.notify_all();
        let deadline = Instant::now() + Duration::from_secs(1);
        while !self.thread.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
    }
}

fn monitor(
    store: &Store,
    health: &Health,
    metrics: &Metrics,
    notifier: &Notifier,
    stop: &(Mutex<bool>, Condvar),
) {
    let mut scanned: Option<Instant> = None;
    loop {
        if scanned.is_none_or(|at| at.elapsed() >= SCAN_INTERVAL) {
            // The scan costs one stat per lock file; it runs before the next
            // test so that a slow scan delays a ping, never fakes one.
            match store.oldest_lock() {
                Ok(oldest) => metrics.set_oldest_lock(oldest),
                Err(error) => log::warn!("could not scan for the oldest lock: {error}"),
            }
            scanned = Some(Instant::now());
        }
        let result = store.probe().map_err(Arc::new);
        // The watchdog asks whether this process works: a directory lock
        // kept by another process is for /health to report, not a reason
        // for systemd to restart this one.
        let passed = result.is_ok();
        let result = result.and_then(|()| store.directory_lock(LOCK_CHECK_WAIT).map_err(Arc::new));
        let why = result.as_ref().err().map(Arc::clone);
        if health.record(result) {
            match &why {
                Some(why) => {
                    log::error!("the self-test failed: {why}");
                    notifier.tell(&format!("STATUS=unhealthy: {why}"));
                }
                None => {
                    log::info!("the self-test passes again");
                    notifier.tell("STATUS=healthy");
                }
            }
        }
        if passed && notifier.watchdog().is_some() {
            notifier.tell("WATCHDOG=1");
        }
        let (lock, wake) = stop;
        let stopped = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let (stopped, _) = wake
            .wait_timeout_while(stopped, health.interval, |stopped| !*stopped)
            .unwrap_or_else(PoisonError::into_inner);
        if *stopped {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_socket_forms() {
        let n = Notifier::from_vars(Some("/run/x".into()), Some("30000000".into()), None, 7);
        assert_eq!(n.target, Some(Target::Path("/run/x".into())));
        assert_eq!(n.watchdog(), Some(Duration::from_secs(30)));
        let n = Notifier::from_vars(Some("@abc".into()), None, None, 7);
        assert_eq!(n.target, Some(Target::Abstract(b"abc".to_vec())));
        assert_eq!(n.watchdog(), None);
        let n = Notifier::from_vars(Some("relative".into()), Some("1".into()), None, 7);
        assert_eq!(n.target, None);
        assert_eq!(n.watchdog(), None, "no socket, no watchdog");
        assert!(n.notify("READY=1").is_ok(), "a no-op outside systemd");
    }

    #[test]
    fn watchdog_pid_must_be_ours() {
        let socket = || Some(OsString::from("/run/x"));
        let usec = || Some("1000000".to_owned());
        let n = Notifier::from_vars(socket(), usec(), Some("7".into()), 7);
        assert_eq!(n.watchdog(), Some(Duration::from_secs(1)));
        let n = Notifier::from_vars(socket(), usec(), Some("8".into()), 7);
        assert_eq!(n.watchdog(), None);
        let n = Notifier::from_vars(socket(), Some("0".into()), None, 7);
        assert_eq!(n.watchdog(), None);
    }

    #[test]
    fn probes_keep_up_with_the_watchdog() {
        assert_eq!(probe_interval(None), PROBE_INTERVAL);
        assert_eq!(
            probe_interval(Some(Duration::from_secs(30))),
            PROBE_INTERVAL
        );
        assert_eq!(
            probe_interval(Some(Duration::from_secs(1))),
            Duration::from_millis(500)
        );
        assert_eq!(
            probe_interval(Some(Duration::from_micros(1))),
            MIN_PROBE_INTERVAL
        );
    }

    fn failure(why: &str) -> Arc<store::Error> {
        Arc::new(store::Error::Io {
            action: "write",
            path: "/locks/.lockd-probe".into(),
            source: io::Error::other(why.to_owned()),
        })
    }

    #[test]
    fn health_reports_failures_and_hangs() {
        let health = Health::new(Ok(()), Duration::ZERO);
        assert!(health.check().is_ok());
        assert!(health.record(Err(failure("disk gone"))));
        let why = health.check().unwrap_err().to_string();
        assert!(why.contains("disk gone"), "{why}");
        assert!(!health.record(Err(failure("still gone"))));
        assert!(health.record(Ok(())));
        let long_ago = Instant::now().checked_sub(PROBE_HANG + Duration::from_secs(1));
        health.state.lock().unwrap().at = long_ago.expect("the clock runs for 11 s");
        assert!(health.check().unwrap_err().to_string().contains("hangs"));
    }
}
