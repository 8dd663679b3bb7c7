//! The HTTP side: tiny_http, worker threads, the syncer, routing, and where
//! a call's typed error becomes its fault reply and a request's problems
//! become HTTP statuses. (Faults of the members of a `system.multicall` are
//! values inside its answer, made in api.rs.)
//!
//! Worker threads take requests from tiny_http and run them against the lock
//! core. They do not wait for the directory fsync: a reply that depends on a
//! change not yet on stable storage goes to the syncer thread, which fsyncs
//! the lock directory once for everything queued and then sends those
//! replies (group commit). They do write and fsync a lock's content file,
//! when no file for the same client and second exists yet (see store.rs).
//! A request whose body is not already in memory (large, chunked, or
//! `Expect: 100-continue`) is read on a thread of its own, so a slow client
//! holds up nobody else.
//!
//! tiny_http ends its accept loop at the first failed `accept`, and on Linux
//! `accept` times out with the listener's `SO_RCVTIMEO` (which lockd sets so
//! that accepted sockets inherit it): after one idle timeout without a new
//! connection, the server would accept no more. So a failed accept starts a
//! new tiny_http server on the same socket, and a thread of its own serves
//! the connections the old one still has until they have been quiet for an
//! idle timeout.

use std::fmt;
use std::io::{self, Cursor};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use tiny_http::{Header, Method, Request, Response, Server, StatusCode};

use crate::api::{self, CallError, Effect, Event, Kind, Reply};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::sys;
use crate::systemd::Health;
use crate::xmlrpc;

/// How the server behaves; see the command line for the defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Worker threads taking requests from tiny_http.
    pub threads: usize,
    /// The largest request body accepted.
    pub max_body: usize,
    /// How long a whole request body may take to arrive.
    pub body_timeout: Duration,
}

/// A declared body larger than this is never read or drained: tiny_http
/// 0.12 would allocate the declared size at once when the request is
/// dropped, which aborts the process for absurd sizes. Such a request is
/// abandoned instead (see [`Shared::abandon`]).
const ABSURD_BODY: usize = 1 << 30;

/// After this many abandoned requests lockd exits for a clean restart: each
/// one keeps a socket and a tiny_http thread (about 16 KiB) until the
/// process ends.
const MAX_ABANDONED: usize = 1024;

type Body = Response<Cursor<Vec<u8>>>;

/// A reply waiting to be sent (after the directory fsync, if it needs one).
struct Pending {
    request: Request,
    reply: Reply,
    started: Instant,
}

struct Shared {
    store: Arc<Store>,
    /// The tiny_http server whose accept loop runs; none once stopped.
    server: RwLock<Option<Accepting>>,
    /// The listening socket, to start a new server on when an accept loop
    /// ends; taken (and closed) at stop.
    listener: Mutex<Option<TcpListener>>,
    /// Threads serving the connections of servers whose accept loop ended.
    drainers: Mutex<Vec<thread::JoinHandle<()>>>,
    settings: Settings,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    queue: Mutex<Vec<Pending>>,
    queued: Condvar,
    stopping: AtomicBool,
    /// Set once no worker or slow-body thread can queue a reply any more.
    drained: AtomicBool,
    slow_in_flight: AtomicUsize,
    abandoned: AtomicUsize,
    fatal: Mutex<Option<Fatal>>,
}

/// Why the server cannot go on. lockd then exits, so that systemd starts a
/// fresh one.
#[derive(Debug, Clone)]
pub enum Fatal {
    /// An accept loop ended and no new one could be started: `None` when
    /// lockd was stopping anyway.
    CannotRestart(Option<Arc<io::Error>>),
    /// This many requests were abandoned, each keeping a socket.
    Abandoned(usize),
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fatal::CannotRestart(source) => {
                f.write_str(
                    "the HTTP server stopped accepting connections and cannot be restarted: ",
                )?;
                match source {
                    Some(error) => error.fmt(f)?,
                    None => f.write_str("lockd is stopping")?,
                }
                f.write_str("; exiting so that a restart serves again")
            }
            Fatal::Abandoned(n) => write!(
                f,
                "{n} requests abandoned; exiting so that a restart frees their sockets"
            ),
        }
    }
}

impl std::error::Error for Fatal {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Fatal::CannotRestart(Some(error)) => Some(&**error),
            _ => None,
        }
    }
}

/// A tiny_http server, and a watch on its copy of the listening socket.
#[derive(Clone)]
struct Accepting {
    server: Arc<Server>,
    watch: ListenerWatch,
}

/// A running server; [`Running::stop`] ends it gracefully.
pub struct Running {
    shared: Arc<Shared>,
    workers: Vec<thread::JoinHandle<()>>,
    syncer: thread::JoinHandle<()>,
}

/// tiny_http's copy of the listening socket, known by descriptor number and
/// inode. tiny_http ends its accept loop, closing that copy, when `accept`
/// fails (on Linux it times out with the listener's `SO_RCVTIMEO`, which
/// lockd sets so that accepted sockets inherit it) and when it panics (it
/// does when it cannot start a thread for a new connection, at the unit's
/// `TasksMax=`, say). Either way a new server must take over.
#[derive(Clone)]
struct ListenerWatch {
    fd: RawFd,
    dev: u64,
    ino: u64,
}

impl ListenerWatch {
    fn new(listener: &TcpListener) -> io::Result<ListenerWatch> {
        let fd = listener.as_raw_fd();
        let (dev, ino) = sys::inode_of(fd)?;
        Ok(ListenerWatch { fd, dev, ino })
    }

    /// Whether the descriptor still holds the same socket (a closed
    /// descriptor's number may have been reused for another file).
    fn is_open(&self) -> bool {
        sys::inode_of(self.fd).is_ok_and(|id| id == (self.dev, self.ino))
    }
}

/// A tiny_http server accepting on a copy of `listener`.
fn accepting(listener: &TcpListener) -> io::Result<Accepting> {
    let copy = listener.try_clone()?;
    let watch = ListenerWatch::new(&copy)?;
    let server = Server::from_listener(copy, None).map_err(io::Error::other)?;
    Ok(Accepting {
        server: Arc::new(server),
        watch,
    })
}

/// Start serving on `listener`, counting into `metrics` and answering
/// `GET /health` from `health`.
pub fn start(
    listener: TcpListener,
    store: Arc<Store>,
    settings: Settings,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> io::Result<Running> {
    let first = accepting(&listener)?;
    let threads = settings.threads.max(1);
    let shared = Arc::new(Shared {
        store,
        server: RwLock::new(Some(first)),
        listener: Mutex::new(Some(listener)),
        drainers: Mutex::new(Vec::new()),
        settings,
        metrics,
        health,
        queue: Mutex::new(Vec::new()),
        queued: Condvar::new(),
        stopping: AtomicBool::new(false),
        drained: AtomicBool::new(false),
        slow_in_flight: AtomicUsize::new(0),
        abandoned: AtomicUsize::new(0),
        fatal: Mutex::new(None),
    });
    let syncer = {
        let shared = Arc::clone(&shared);
        thread::Builder::new()
            .name("syncer".into())
            .spawn(move || syncer(&shared))?
    };
    let mut workers = Vec::with_capacity(threads);
    for i in 0..threads {
        let shared = Arc::clone(&shared);
        workers.push(
            thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || worker(&shared))?,
        );
    }
    Ok(Running {
        shared,
        workers,
        syncer,
    })
}

impl Running {
    /// Why the server cannot go on, once it cannot.
    pub fn fatal(&self) -> Option<Fatal> {
        self.shared
            .fatal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stop taking requests, let those in flight finish (up to `grace`),
    /// sync, and return whether everything finished in time.
    pub fn stop(self, grace: Duration) -> bool {
        let shared = &self.shared;
        shared.stopping.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + grace;
        let mut finished = true;
        // Workers and drainers answer what tiny_http has already read, then end.
        for worker in self.workers {
            finished &= join_by(worker, deadline);
        }
        let drainers = std::mem::take(
            &mut *shared
                .drainers
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for drainer in drainers {
            finished &= join_by(drainer, deadline);
        }
        // Closing every copy of the listening socket (tiny_http connects to
        // itself to end its accept loop) makes new callers be refused, or,
        // under socket activation, wait in the kernel's queue for the next
        // lockd, instead of being accepted and never answered. Requests
        // already taken keep their connections.
        drop(
            shared
                .listener
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        drop(
            shared
                .server
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        while shared.slow_in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        shared.drained.store(true, Ordering::SeqCst);
        shared.queued.notify_all();
        finished &= join_by(self.syncer, deadline);
        finished
    }
}

fn join_by(handle: thread::JoinHandle<()>, deadline: Instant) -> bool {
    while !handle.is_finished() {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
    handle.join().is_ok()
}

impl Shared {
    fn fail(&self, why: Fatal) {
        log::error!("{why}");
        self.fatal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(why);
    }

    /// Give up on a request without reading or answering it.
    fn abandon(&self, request: Request, why: &str) {
        log::warn!(
            "{why}; leaving it unanswered (tiny_http cannot drop it safely), its connection is freed at the next restart"
        );
        std::mem::forget(request);
        let n = self.abandoned.fetch_add(1, Ordering::SeqCst) + 1;
        if n >= MAX_ABANDONED {
            self.fail(Fatal::Abandoned(n));
        }
    }
}

/// How often waiting threads look at the stop flag and the current server.
const POLL: Duration = Duration::from_millis(200);

fn worker(shared: &Arc<Shared>) {
    let Some(mut current) = shared.current() else {
        return;
    };
    loop {
        let stopping = shared.stopping.load(Ordering::SeqCst);
        let wait = if stopping { Duration::ZERO } else { POLL };
        match current.server.recv_timeout(wait) {
            Ok(Some(request)) => serve(shared, request),
            Ok(None) | Err(_) if stopping => return,
            Ok(None) if current.watch.is_open() => match shared.current() {
                Some(next) => current = next,
                None => return,
            },
            Ok(None) => {
                let why = "its accept thread ended (it does when no thread can be started for a new connection: too many connections for TasksMax= or the process limit)";
                match shared.restart(&current, why, false) {
                    Ok(next) => current = next,
                    Err(why) => return shared.fail(why),
                }
            }
            Err(error) => {
                let quiet = matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                );
                match shared.restart(&current, &error.to_string(), quiet) {
                    Ok(next) => current = next,
                    Err(why) => return shared.fail(why),
                }
            }
        }
    }
}

impl Shared {
    fn current(&self) -> Option<Accepting> {
        self.server
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `old`'s accept loop ended (`why`; `quiet` if only because no one
    /// connected for an idle timeout): start a new server on the listening
    /// socket, and a thread that serves `old`'s open connections.
    fn restart(
        self: &Arc<Self>,
        old: &Accepting,
        why: &str,
        quiet: bool,
    ) -> Result<Accepting, Fatal> {
        let cannot = |e: io::Error| Fatal::CannotRestart(Some(Arc::new(e)));
        let mut current = self.server.write().unwrap_or_else(PoisonError::into_inner);
        match current.as_ref() {
            None => return Err(Fatal::CannotRestart(None)),
            Some(now) if !Arc::ptr_eq(&now.server, &old.server) => return Ok(now.clone()),
            Some(_) => {}
        }
        if quiet {
            log::debug!("no new connection for an idle timeout; restarting the accept loop");
        } else {
            // Out of file descriptors or threads, say: do not spin.
            log::warn!(
                "the HTTP server stopped accepting connections: {why}; starting a new one in a second"
            );
            thread::sleep(Duration::from_secs(1));
        }
        let next = {
            let listener = self.listener.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(listener) = listener.as_ref() else {
                return Err(Fatal::CannotRestart(None));
            };
            accepting(listener).map_err(cannot)?
        };
        *current = Some(next.clone());
        drop(current);
        let (shared, old) = (Arc::clone(self), old.server.clone());
        let drainer = thread::Builder::new()
            .name("drainer".into())
            .spawn(move || drain(&shared, &old))
            .map_err(cannot)?;
        let mut drainers = self.drainers.lock().unwrap_or_else(PoisonError::into_inner);
        drainers.retain(|d| !d.is_finished());
        drainers.push(drainer);
        Ok(next)
    }
}

/// Serve the requests of a server whose accept loop ended, until its
/// connections have been quiet for an idle timeout (by then they are closed).
fn drain(shared: &Arc<Shared>, server: &Server) {
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() <= shared.settings.body_timeout + POLL {
        let stopping = shared.stopping.load(Ordering::SeqCst);
        match server.recv_timeout(if stopping { Duration::ZERO } else { POLL }) {
            Ok(Some(request)) => {
                serve(shared, request);
                quiet_since = Instant::now();
            }
            _ if stopping => return,
            _ => {}
        }
    }
}

/// Handle a request here if its body is in memory, else on a thread of its own.
fn serve(shared: &Arc<Shared>, request: Request) {
    if body_in_memory(&request) {
        handle(shared, request);
    } else {
        let inner = Arc::clone(shared);
        shared.slow_in_flight.fetch_add(1, Ordering::SeqCst);
        let spawned = thread::Builder::new()
            .name("slow-body".into())
            .spawn(move || {
                handle(&inner, request);
                inner.slow_in_flight.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(error) = spawned {
            shared.slow_in_flight.fetch_sub(1, Ordering::SeqCst);
            log::error!("could not start a thread for a request: {error}");
        }
    }
}

/// Whether tiny_http has already read the whole body into memory: it does
/// for a Content-Length up to 1024 bytes without `Expect: 100-continue`.
fn body_in_memory(request: &Request) -> bool {
    let expects = request.headers().iter().any(|h| h.field.equiv("Expect"));
    let chunked = request
        .headers()
        .iter()
        .any(|h| h.field.equiv("Transfer-Encoding"));
    !chunked
        && (request.body_length().unwrap_or(0) == 0
            || (request.body_length().unwrap_or(0) <= 1024 && !expects))
}

fn handle(shared: &Shared, mut request: Request) {
    let started = Instant::now();
    let path = request.url().split('?').next().unwrap_or_default();
    if matches!(path, "/health" | "/metrics") {
        let response = observe(shared, request.method(), path);
        return send(request, response);
    }
    let rpc_path = matches!(path, "/" | "/RPC2");
    match (request.method(), rpc_path) {
        (Method::Post, true) => {}
        (_, true) => {
            let header = header("Allow", "POST");
            return send(
                request,
                plain(
                    405,
                    "lockd answers XML-RPC calls: POST them to / or /RPC2\n",
                )
                .with_header(header),
            );
        }
        (_, false) => {
            let message = format!(
                "no such path {path:?}: POST XML-RPC calls to / or /RPC2; GET /health or /metrics\n"
            );
            return send(request, plain(404, &message));
        }
    }
    let peer = peer_of(&request);
    let body = match read_body(&mut request, &shared.settings, started) {
        Ok(body) => body,
        Err(error) => return refuse_body(shared, request, &peer, error),
    };
    log::debug!("< {peer} {}", String::from_utf8_lossy(&body));
    let reply = match xmlrpc::parse_call(&body) {
        Ok(call) => api::dispatch(&shared.store, &call, &peer),
        // Logged once, with its code, after the reply is sent.
        Err(fault) => Reply::malformed(fault),
    };
    let pending = Pending {
        request,
        reply,
        started,
    };
    if shared.store.is_durable(pending.reply.seq) {
        finish(shared, pending);
    } else {
        let mut queue = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.push(pending);
        shared.queued.notify_one();
    }
}

/// Answer a request whose body could not be read, and log why.
fn refuse_body(shared: &Shared, request: Request, peer: &str, error: BodyError) {
    match error {
        BodyError::TooLarge(declared) => {
            let limit = shared.settings.max_body;
            log::warn!("request from {peer} refused: its body is larger than {limit} bytes");
            if declared > ABSURD_BODY {
                return shared.abandon(
                    request,
                    &format!("request from {peer} declares a {declared}-byte body"),
                );
            }
            let message = format!(
                "the request body is larger than {limit} bytes; lockd calls are a few hundred bytes\n"
            );
            send(request, plain(413, &message))
        }
        BodyError::Slow => {
            log::warn!(
                "request from {peer} refused: its body took longer than {:?}",
                shared.settings.body_timeout
            );
            send(
                request,
                plain(408, "the request body did not arrive in time\n"),
            )
        }
        BodyError::Io(error) => {
            log::warn!("request from {peer} dropped: reading its body failed: {error}");
            send(request, plain(400, "the request body could not be read\n"))
        }
    }
}

/// `GET /health` (the latest write-path self-test) and `GET /metrics`.
/// Neither touches the disk.
fn observe(shared: &Shared, method: &Method, path: &str) -> Body {
    if *method != Method::Get {
        let message = format!("{path} answers GET only\n");
        return plain(405, &message).with_header(header("Allow", "GET"));
    }
    if path == "/metrics" {
        let text = shared.metrics.render(SystemTime::now());
        return Response::from_data(text.into_bytes()).with_header(header(
            "Content-Type",
            "text/plain; version=0.0.4; charset=utf-8",
        ));
    }
    match shared.health.check() {
        Ok(()) => plain(200, "ok\n"),
        Err(unhealthy) => plain(503, &format!("{unhealthy}\n")),
    }
}

/// Sync the lock directory for every queued reply, then send them. Once a
/// second, also remove content files no new lock will link to.
fn syncer(shared: &Shared) {
    let mut swept = Instant::now();
    while let Some(batch) = next_batch(shared) {
        if swept.elapsed() >= Duration::from_secs(1) {
            shared.store.remove_stale_contents();
            swept = Instant::now();
        }
        if batch.is_empty() {
            continue;
        }
        let fsync_started = Instant::now();
        let synced = shared.store.sync();
        shared
            .metrics
            .fsync_duration
            .observe(fsync_started.elapsed());
        let failure = synced
            .err()
            .map(|error| CallError::NotSynced(Arc::new(error)));
        if let Some(error) = &failure {
            log::error!("{error}");
        }
        for mut pending in batch {
            if let Some(error) = &failure {
                pending.reply.value = Err(error.clone());
            }
            finish(shared, pending);
        }
    }
}

/// Everything queued, after waiting up to 200 ms for something; `None` once
/// the server stops and nothing is left.
fn next_batch(shared: &Shared) -> Option<Vec<Pending>> {
    let mut queue = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
    if queue.is_empty() {
        if shared.drained.load(Ordering::SeqCst) {
            return None;
        }
        queue = shared
            .queued
            .wait_timeout(queue, Duration::from_millis(200))
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    Some(std::mem::take(&mut *queue))
}

/// Send a reply, log what it did and count it.
fn finish(shared: &Shared, pending: Pending) {
    let Pending {
        request,
        reply,
        started,
    } = pending;
    let peer = peer_of(&request);
    let body = match &reply.value {
        Ok(value) => xmlrpc::write_response(value),
        Err(error) => xmlrpc::write_fault(&error.to_fault()),
    };
    log::debug!("> {peer} {}", String::from_utf8_lossy(&body));
    send(
        request,
        Response::from_data(body).with_header(header("Content-Type", "text/xml")),
    );
    let elapsed = started.elapsed();
    shared.metrics.record_call(&reply, elapsed);
    let ms = elapsed.as_secs_f64() * 1000.0;
    for event in &reply.events {
        log_event(event, &peer, ms);
    }
    if let (true, Err(error)) = (reply.events.is_empty(), &reply.value) {
        let fault = error.to_fault();
        log::warn!(
            "call from {peer} faulted ({}): {}",
            fault.code as i32,
            fault.message
        );
    }
}

fn log_event(event: &Event, peer: &str, ms: f64) {
    let who = match &event.client {
        Some(client) => format!(
            "{} {} by {} from {peer}",
            event.method.name(),
            api::shown(&event.resource),
            api::shown(client)
        ),
        None => format!(
            "{} {} from {peer}",
            event.method.name(),
            api::shown(&event.resource)
        ),
    };
    match &event.outcome {
        Ok(Effect::Granted) => log::info!("{who}: granted ({ms:.2} ms)"),
        Ok(Effect::Released) => log::info!("{who}: released ({ms:.2} ms)"),
        Err(why) => match why.kind() {
            Kind::Refused => log::info!("{who}: refused, {why} ({ms:.2} ms)"),
            Kind::Invalid => log::warn!("{who}: invalid, {why} ({ms:.2} ms)"),
            Kind::Failed => log::error!("{who}: failed, {why} ({ms:.2} ms)"),
        },
    }
}

fn send(request: Request, response: Body) {
    if let Err(error) = request.respond(response) {
        log::debug!("could not send a reply: {error}");
    }
}

fn peer_of(request: &Request) -> String {
    request
        .remote_addr()
        .map_or_else(|| "unknown".to_owned(), SocketAddr::to_string)
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes())
        .expect("static header names and values are ASCII")
}

fn plain(status: u16, text: &str) -> Body {
    Response::from_data(text.as_bytes().to_vec())
        .with_status_code(StatusCode(status))
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
}

enum BodyError {
    TooLarge(usize),
    Slow,
    Io(io::Error),
}

fn read_body(
    request: &mut Request,
    settings: &Settings,
    started: Instant,
) -> Result<Vec<u8>, BodyError> {
    let limit = settings.max_body;
    if let Some(declared) = request.body_length().filter(|&n| n > limit) {
        return Err(BodyError::TooLarge(declared));
    }
    let reader = request.as_reader();
    let mut body = Vec::with_capacity(1024);
    let mut chunk = [0u8; 8192];
    loop {
        if started.elapsed() > settings.body_timeout {
            return Err(BodyError::Slow);
        }
        match reader.read(&mut chunk) {
            Ok(0) => return Ok(body),
            Ok(n) => {
                body.extend_from_slice(&chunk[..n]);
                if body.len() > limit {
                    return Err(BodyError::TooLarge(body.len()));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(BodyError::Slow);
            }
            Err(e) => return Err(BodyError::Io(e)),
        }
    }
}
