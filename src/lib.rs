//! lockd: a lock daemon that cluster nodes call over XML-RPC to take and
//! release named locks, a drop-in successor of gocept.lockd.
//!
//! `lock(resource, client)` takes a lock or faults with code 1 and
//! `<type 'exceptions.Exception'>:Resource already locked by 'holder'`;
//! `unlock(resource, client)` releases it. Every held lock is one file in the
//! lock directory, on stable storage before the reply is sent. See README.md
//! for the protocol, the directory format and operation.
//!
//! Modules: [`cli`] (options), [`store`] (the lock core), [`names`] (resource
//! names to file names), [`xmlrpc`] (the codec), [`api`] (the methods),
//! [`server`] (HTTP), [`metrics`] (what `GET /metrics` shows), [`systemd`]
//! (readiness, watchdog, socket activation, the self-test behind
//! `GET /health`), [`sys`] (the OS calls std lacks), [`clock`] (UTC times),
//! [`client`] (the XML-RPC client `lockcmd` uses), [`http`] (the request
//! writer and reply reader of the client, the benchmark and the tests),
//! [`json`] (JSON strings for the tools' output).

pub mod api;
pub mod cli;
pub mod client;
pub mod clock;
pub mod filesystem;
pub mod http;
pub mod json;
pub mod metrics;
pub mod names;
pub mod server;
pub mod store;
pub mod sys;
pub mod systemd;
#[cfg(test)]
mod testing;
pub mod xmlrpc;

use std::fmt;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::cli::Config;
use crate::metrics::Metrics;
use crate::server::Fatal;
use crate::store::Store;
use crate::sys::{SignalSet, SocketTimeout};
use crate::systemd::{Health, Monitor, Notifier};

/// A reply that cannot be written for this long is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long requests in flight may take to finish at a stop.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Why lockd could not start or had to stop.
#[derive(Debug)]
pub enum RunError {
    Store(store::Error),
    Listen {
        address: String,
        source: io::Error,
    },
    Setup {
        what: &'static str,
        source: io::Error,
    },
    /// The server could not go on.
    Server(Fatal),
    /// The lock directory is on a filesystem lockd may not run on as asked.
    Filesystem(filesystem::Refusal),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Store(error) => write!(f, "the lock directory is not usable: {error}"),
            RunError::Listen { address, source } if source.kind() == io::ErrorKind::AddrInUse => {
                write!(
                    f,
                    "cannot listen on {address}: the port is in use (another lockd?); stop it or choose another with --listen"
                )
            }
            RunError::Listen { address, source } => {
                write!(
                    f,
                    "cannot listen on {address}: {source}; check the address given to --listen"
                )
            }
            RunError::Setup { what, source } => write!(f, "cannot {what}: {source}"),
            RunError::Filesystem(refusal) => refusal.fmt(f),
            RunError::Server(fatal) => fatal.fmt(f),
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RunError::Store(error) => Some(error),
            RunError::Listen { source, .. } | RunError::Setup { source, .. } => Some(source),
            RunError::Server(fatal) => Some(fatal),
            RunError::Filesystem(_) => None,
        }
    }
}

/// Set up logging: `--log-level`, else `RUST_LOG`, else info. When stderr is
/// the journal (`JOURNAL_STREAM` names its device and inode) lines carry
/// syslog priorities and no timestamps.
pub fn init_logging(level: Option<log::LevelFilter>) {
    let mut builder = env_logger::Builder::new();
    // RUST_LOG is a level, or a filter with `module=level` parts. Anything
    // else would be read as a module name and silence every line, so it
    // falls back to info with a warning.
    let mut bad_rust_log = None;
    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|f| !f.trim().is_empty());
    match (level, rust_log) {
        (Some(level), _) => builder.filter_level(level),
        (None, Some(filters)) if filters.trim().parse::<log::LevelFilter>().is_ok() => {
            builder.parse_filters(&filters)
        }
        (None, Some(filters)) if filters.contains('=') => builder.parse_filters(&filters),
        (None, Some(filters)) => {
            bad_rust_log = Some(filters);
            builder.filter_level(log::LevelFilter::Info)
        }
        (None, None) => builder.filter_level(log::LevelFilter::Info),
    };
    // Keep tiny_http's own chatter out of lockd's log unless asked for. Its
    // one error line ("Error accepting new client") is routine after an idle
    // timeout; lockd logs accept failures itself (see server.rs).
    if level.is_none_or(|l| l < log::LevelFilter::Trace) {
        builder.filter_module("tiny_http", log::LevelFilter::Off);
    }
    let journal = std::env::var("JOURNAL_STREAM").is_ok_and(|stream| stderr_is(&stream));
    builder.format(move |out, record| {
        if journal {
            let priority = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            writeln!(out, "<{priority}>{}", record.args())
        } else {
            let now = clock::Utc::from_system(SystemTime::now());
            writeln!(out, "{now} {:<5} {}", record.level(), record.args())
        }
    });
    builder.write_style(env_logger::WriteStyle::Never);
    let _ = builder.try_init();
    if let Some(filters) = bad_rust_log {
        log::warn!(
            "RUST_LOG={filters:?} is not a log level (error, warn, info, debug, trace, off): logging at info"
        );
    }
}

/// `n` and `noun`, in the plural unless `n` is 1: "1 lock", "2 locks".
fn counted(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Run the daemon until SIGTERM or SIGINT. `activated` is the socket
/// systemd passed, if any (see [`systemd::take_listener`], which must run
/// before any thread starts); without one lockd listens on `--listen`.
pub fn run(config: &Config, activated: Option<TcpListener>) -> Result<(), RunError> {
    // Block the stop signals before any thread starts, so every thread
    // inherits the mask and only the main thread receives them.
    let signals = SignalSet::of(&[libc::SIGTERM, libc::SIGINT]);
    signals.block().map_err(|source| RunError::Setup {
        what: "block SIGTERM and SIGINT",
        source,
    })?;
    if let Err(error) = sys::raise_file_limit() {
        log::debug!("could not raise the open file limit: {error}");
    }
    let notifier = Notifier::from_env();
    let (store, report) = open_store(&config.dir, config.cluster_fs)?;
    let activated_socket = activated.is_some();
    let listener = match activated {
        Some(listener) => listener,
        None => listen(&config.listen)?,
    };
    set_socket_timeouts(&listener, config.idle_timeout)?;
    let address = listener.local_addr().map_err(|source| RunError::Setup {
        what: "read the bound address",
        source,
    })?;
    let store = Arc::new(store);
    let settings = server::Settings {
        threads: config.threads,
        max_body: 1 << 20,
        body_timeout: config.idle_timeout,
    };
    let metrics = Arc::new(Metrics::new(report.locks));
    let health = Arc::new(Health::new(
        Ok(()),
        systemd::probe_interval(notifier.watchdog()),
    ));
    let threads_failed = |source| RunError::Setup {
        what: "start the server threads",
        source,
    };
    let running = server::start(
        listener,
        Arc::clone(&store),
        settings,
        Arc::clone(&metrics),
        Arc::clone(&health),
    )
    .map_err(threads_failed)?;
    let monitor = Monitor::start(Arc::clone(&store), health, metrics, notifier.clone())
        .map_err(threads_failed)?;
    log_started(&address, activated_socket, &store, &report);
    notifier.tell(&format!(
        "READY=1\nSTATUS=listening on http://{address}/ with lock directory {}",
        store.dir().display()
    ));

    let outcome = wait_for_stop(&signals, &running);
    notifier.tell("STOPPING=1");
    log::info!("stopping: no new requests; waiting up to {STOP_GRACE:?} for those in flight");
    let finished = running.stop(STOP_GRACE);
    monitor.stop();
    store.remove_temporaries();
    let signal = outcome.map_err(RunError::Server)?;
    if finished {
        log::info!("stopped on signal {signal}");
    } else {
        log::warn!(
            "stopped on signal {signal}; some requests did not finish within {STOP_GRACE:?}"
        );
    }
    Ok(())
}

/// Open the lock directory and test its write path: it must work before
/// lockd says it is ready.
fn open_store(
    dir: &std::path::Path,
    cluster_fs: bool,
) -> Result<(Store, store::OpenReport), RunError> {
    let canonical = Store::make_dir(dir).map_err(RunError::Store)?;
    let mount = filesystem::mount_of_dir(&canonical).map_err(|source| RunError::Setup {
        what: "tell which filesystem the lock directory is on",
        source,
    })?;
    if filesystem::check(&canonical, &mount, cluster_fs).map_err(RunError::Filesystem)? {
        log::info!(
            "the lock directory is on {} (mounted at {}), shared with other nodes (--cluster-fs)",
            mount.fs_type,
            mount.mount_point.display()
        );
        if mount.fs_type == "fuse.glusterfs" {
            match filesystem::gluster_incoherence(&mount.mount_point) {
                Ok(None) => {}
                Ok(Some(setting)) => {
                    return Err(RunError::Filesystem(filesystem::Refusal::Incoherent {
                        dir: canonical,
                        mount_point: mount.mount_point,
                        setting,
                    }));
                }
                Err(e) => log::warn!(
                    "cannot read {}/.meta to check that the GlusterFS mount does not cache ({e}); lockd relies on --cluster-fs: check it as docs/cluster.md says",
                    mount.mount_point.display()
                ),
            }
        }
    }
    let (store, report) = Store::open(&canonical).map_err(RunError::Store)?;
    store.probe().map_err(RunError::Store)?;
    for name in &report.subdirectories {
        log::warn!(
            "{name:?} in the lock directory is a directory: gocept.lockd kept locks on names beginning {:?} in it, which lockd does not look into, so lockd refuses such names while it exists; remove it once it holds no locks",
            format!("{name}/")
        );
    }
    for name in &report.foreign {
        log::warn!(
            "{name:?} in the lock directory is a lock file lockd cannot tie to a resource (it names a resource it is not filed under, or its name is not UTF-8, as gocept.lockd wrote under a Latin-1 locale); lockd refuses every resource its name could stand for (a name that is not UTF-8, read as Latin-1) but cannot release it: release it with the daemon that took it, or remove it once nobody holds it"
        );
    }
    Ok((store, report))
}

fn log_started(address: &SocketAddr, activated: bool, store: &Store, report: &store::OpenReport) {
    log::info!(
        "lockd {} listening on http://{address}/{} with lock directory {} ({} held{})",
        env!("CARGO_PKG_VERSION"),
        if activated {
            " (socket from systemd)"
        } else {
            ""
        },
        store.dir().display(),
        counted(report.locks as u64, "lock"),
        if report.removed_leftovers > 0 {
            format!(
                ", {} removed",
                counted(report.removed_leftovers as u64, "leftover temporary file")
            )
        } else {
            String::new()
        }
    );
}

/// Whether stderr is the file `device:inode` names, as systemd recommends
/// checking before trusting `JOURNAL_STREAM` (a shell started from a service
/// inherits the variable but may redirect stderr elsewhere).
fn stderr_is(device_inode: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some((device, inode)) = device_inode.split_once(':') else {
        return false;
    };
    let stderr = std::io::stderr();
    let Ok(file) = stderr.as_fd().try_clone_to_owned().map(std::fs::File::from) else {
        return false;
    };
    file.metadata()
        .is_ok_and(|m| Some(m.dev()) == device.parse().ok() && Some(m.ino()) == inode.parse().ok())
}

/// Wait for a stop signal (its number), or for the server to fail.
fn wait_for_stop(signals: &SignalSet, running: &server::Running) -> Result<i32, Fatal> {
    loop {
        if let Some(received) = signals.wait(Duration::from_millis(200)) {
            return Ok(received.signal);
        }
        if let Some(fatal) = running.fatal() {
            return Err(fatal);
        }
    }
}

fn listen(address: &str) -> Result<TcpListener, RunError> {
    let error = |source| RunError::Listen {
        address: address.to_owned(),
        source,
    };
    let addrs: Vec<_> = address.to_socket_addrs().map_err(error)?.collect();
    TcpListener::bind(addrs.as_slice()).map_err(error)
}

/// Accepted sockets inherit the listener's timeouts on Linux; tiny_http
/// sets none of its own. `idle` closes a connection silent for that long.
fn set_socket_timeouts(listener: &TcpListener, idle: Duration) -> Result<(), RunError> {
    let socket = listener.as_fd();
    sys::set_socket_timeout(socket, SocketTimeout::Receive, idle)
        .and_then(|()| sys::set_socket_timeout(socket, SocketTimeout::Send, WRITE_TIMEOUT))
        .map_err(|source| RunError::Setup {
            what: "set socket timeouts",
            source,
        })
}
