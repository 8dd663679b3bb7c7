//! The lock core: one file per held lock in the lock directory.
//!
//! A held lock is the file `<dir>/<stem>.resource.lock` ([`names::stem`]:
//! the resource name itself, as gocept.lockd wrote it, unless it has a `/`).
//! Under the name itself it holds the bare client string, as gocept.lockd
//! wrote it, and the lock time is its modification time; under an encoded
//! name (a name with a `/`), three lines: the client, the UTC time and
//! `resource=` with the percent-encoded resource name. lockd 0.1's files
//! (client and time, under the encoded name) are honoured too, and moved to
//! the name itself at start-up. A file name may so spell a name as it is or
//! encoded: a resource is refused while a lock file stands under any of its
//! [`names::stems`], and only the file that is really its own is released
//! by `unlock` and shown by `locks` ([`owner`]).
//!
//! Taking a lock hard-links a fully written, fsync'd content file to its
//! name: `link` fails if the name exists, so the check and the change are one
//! atomic step, and a lock file can never be seen half-written. Releasing
//! unlinks it.
//!
//! Every check-and-change runs under the process-wide mutex and an `flock` on
//! `<dir>/lockd.lock`, so threads and other processes sharing the directory
//! never grant a resource twice: exclusive for gocept.lockd (each of its
//! calls) and for lockd's start-up and `fence`, shared for lockd's other
//! changes, which exclude each other per resource with byte-range locks on
//! `<dir>/lockd.ranges`, one byte per file name the change touches
//! ([`name_offset`]; a [`single_name`] `lock` needs none, `link` decides).
//! Neither the mutex nor the bytes are held across an fsync: the directory
//! is fsync'd afterwards by [`Store::sync`], once for every change made
//! since the last sync (group commit). Each result carries the change
//! number it observed; a reply may be sent once [`Store::is_durable`] says
//! that change is on stable storage. Files are reached through the
//! directory's descriptor (`openat`, `linkat`, …), which saves a lookup of
//! the directory per file operation on a cluster filesystem.
//!
//! Content files are named `.lockd-<pid>-<random>-<n>.tmp` (the random part
//! tells apart lockd on two nodes of a cluster filesystem that have the same
//! pid). One is written per client, resource and second and shared by hard
//! links, so a client that takes and releases a lock many times a second
//! costs one data fsync a second, not one a call. They are removed when
//! their second has passed, and at start-up whatever an earlier run left
//! behind is removed.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fmt;
use std::fs::TryLockError;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use crate::clock;
use crate::names::{self, LOCK_SUFFIX, NameError};

mod fencing;
mod health;
mod record;

pub use fencing::{MAX_BATCH, MAX_TOKEN, Reason};

use record::{Kind, Record, content_text, owner, read_lock_file};

/// What linking a lock file came to.
enum Linked {
    Done,
    /// A lock file stands under one of the resource's stems.
    InTheWay(Record),
    /// The content file is gone: another process's start-up removed it.
    ContentGone,
    /// Taken without the resource's bytes of `lockd.ranges`, the name was
    /// found taken by a lock file that may be going (half of an
    /// `acquire_many`, or being released): take them and look again.
    NeedNames,
}

/// A lock file that stands in the way of a resource.
struct Found {
    path: PathBuf,
    record: Record,
    /// Whether it is that resource's own lock file (see [`owner`]).
    own: bool,
}

/// How long a call waits for another process's hold on `lockd.lock`.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(10);

/// The file locked around every check-and-change, shared with gocept.lockd:
/// exclusively by gocept.lockd and by lockd's start-up and `fence`, shared by
/// every other change of lockd.
pub const GLOBAL_LOCK_FILE: &str = "lockd.lock";

/// The file whose bytes lockd processes lock (OFD byte-range locks) for the
/// file names a change touches, one byte per name ([`name_offset`]): lockd
/// processes sharing the directory exclude each other per resource, not
/// per directory. Always empty; a separate file from `lockd.lock` because
/// NFS emulates `flock` with a whole-file byte-range lock, which would
/// conflict with these.
pub const RANGES_FILE: &str = "lockd.ranges";

/// How many bytes of [`RANGES_FILE`] names are spread over.
const RANGE_SPACE: u64 = 1 << 32;

/// How long a change gives way to an exclusive guard of its own process
/// that waits for `lockd.lock` (held by another process), before it goes
/// on anyway.
const GIVE_WAY: Duration = Duration::from_millis(200);

const TEMP_PREFIX: &str = ".lockd-";

/// Numbers the temporary files of this process (of all its stores, so that
/// two stores on one directory in one process never pick the same name).
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);
const TEMP_SUFFIX: &str = ".tmp";

/// A held lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    pub resource: String,
    pub client: String,
    pub since: SystemTime,
    /// The fencing token; 0 for a lock without one (taken with `lock`, or
    /// by gocept.lockd).
    pub token: u32,
}

/// Why a lock was not granted or released: the three refusals of the
/// gocept.lockd contract, then fencing's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    AlreadyLocked {
        holder: String,
    },
    NotHolder {
        holder: String,
        client: String,
    },
    NotLocked,
    /// `acquire_many`: the first resource in the way.
    ManyAlreadyLocked {
        resource: String,
        holder: String,
    },
    /// `release` of a grant that has ended: the client holds a newer one.
    OtherGrant {
        holder: String,
        held: u32,
        given: u32,
    },
    /// `break_lock` of a grant that is not the one held.
    NotThatGrant {
        holder: String,
        token: u32,
        given_holder: String,
        given_token: u32,
    },
    /// The resource's token would pass [`fencing::MAX_TOKEN`].
    TokensExhausted {
        resource: String,
    },
    /// The resource's last token kept moving while a grant was prepared.
    Contended,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::AlreadyLocked { holder } => {
                write!(f, "Resource already locked by {}", names::py2repr(holder))
            }
            Refusal::NotHolder { holder, client } => write!(
                f,
                "Resource locked by {} cannot be unlocked by {}",
                names::py2repr(holder),
                names::py2repr(client)
            ),
            Refusal::NotLocked => f.write_str("Resource not locked"),
            Refusal::ManyAlreadyLocked { resource, holder } => write!(
                f,
                "Resource {} already locked by {}",
                names::py2repr(resource),
                names::py2repr(holder)
            ),
            Refusal::OtherGrant {
                holder,
                held,
                given,
            } => write!(
                f,
                "Resource locked by {} under token {held}, not {given}: that grant has ended",
                names::py2repr(holder)
            ),
            Refusal::NotThatGrant {
                holder,
                token,
                given_holder,
                given_token,
            } => write!(
                f,
                "Resource locked by {} under token {token}, not by {} under token {given_token}",
                names::py2repr(holder),
                names::py2repr(given_holder)
            ),
            Refusal::TokensExhausted { resource } => write!(
                f,
                "Resource {} has used every fencing token up to {} (or its last token is unreadable): lock it under another name",
                names::py2repr(resource),
                fencing::MAX_TOKEN
            ),
            Refusal::Contended => f.write_str(
                "Resource could not be granted: other processes kept taking and releasing it; call again",
            ),
        }
    }
}

/// Why an operation did not happen.
#[derive(Debug)]
pub enum Error {
    /// The lock contract says no.
    Refused(Refusal),
    /// The resource name or client string cannot be stored.
    Name(NameError),
    /// The lock directory failed.
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl Error {
    fn io(action: &'static str, path: &Path, source: io::Error) -> Error {
        Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Refused(refusal) => refusal.fmt(f),
            Error::Name(error) => error.fmt(f),
            Error::Io {
                action,
                path,
                source,
            } => {
                let hint = match source.kind() {
                    io::ErrorKind::PermissionDenied => {
                        "check that lockd's user may write to the lock directory"
                    }
                    io::ErrorKind::ReadOnlyFilesystem => {
                        "the filesystem is read-only: remount it read-write"
                    }
                    io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                        "the filesystem is full: free space"
                    }
                    io::ErrorKind::NotFound => {
                        "the lock directory has gone: recreate it or restart lockd"
                    }
                    io::ErrorKind::NotADirectory => "give --dir the path of a directory",
                    io::ErrorKind::TimedOut => {
                        "another process sharing the lock directory (a lockd on another node, gocept.lockd) holds it, perhaps stopped or cut off; nothing was changed: call again, and look at that process"
                    }
                    _ => "check the lock directory's filesystem and the system log",
                };
                write!(f, "could not {action} {}: {source}; {hint}", path.display())
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Name(error) => Some(error),
            Error::Refused(_) => None,
        }
    }
}

/// An operation's result and the number of the last change it observed.
#[derive(Debug)]
pub struct Observed<T> {
    pub result: Result<T, Error>,
    pub seq: u64,
}

impl<T> Observed<T> {
    /// A failure before anything was observed: it may be answered at once.
    fn failed(error: Error) -> Observed<T> {
        Observed {
            result: Err(error),
            seq: 0,
        }
    }
}

/// What start-up found in the lock directory.
#[derive(Debug, Default)]
pub struct OpenReport {
    pub locks: usize,
    pub removed_leftovers: usize,
    /// lockd 0.1's lock files moved to the name gocept.lockd looks at.
    pub moved: usize,
    /// Lock files no resource name maps to (see [`owner`]): they still
    /// stop every resource they could stand for from being granted.
    pub foreign: Vec<String>,
    /// Subdirectories, where gocept.lockd kept locks on names with a `/`:
    /// such names are refused while they exist.
    pub subdirectories: Vec<String>,
}

/// The lock directory.
pub struct Store {
    dir: PathBuf,
    /// The directory, open for fsync and the `*at` calls, and its identity
    /// (device, inode, mount); replaced, under the core's mutex, if the
    /// directory is.
    dir_file: RwLock<(Arc<File>, DirId)>,
    core: Mutex<Core>,
    synced: AtomicU64,
    /// The numbers of the changes made in a lock directory that was
    /// replaced before their fsync: `(from, to]` (see
    /// [`Store::follow_directory`]).
    lost: RwLock<Option<(u64, u64)>>,
    /// Content files by client and resource.
    contents: Mutex<HashMap<(String, String), Content>>,
    /// This process among all sharing the directory, in its temporary
    /// files' names: `<pid>-<random>`. The pid alone is not enough on a
    /// cluster filesystem, where lockd on two nodes may have the same one.
    instance: String,
    lock_wait: RwLock<Duration>,
    /// Calls waiting for the mutex to take a guard: while there are any, a
    /// guard that ends keeps the shared `flock` for the next (see
    /// [`KEEP_SHARED`]).
    guard_waiters: AtomicU64,
    /// Calls of this process waiting for an exclusive guard: shared ones
    /// stay out of their way meanwhile.
    exclusive_waiters: AtomicU64,
    /// When the last check of the directory's identity that succeeded
    /// began (see [`Store::current_directory`]); held while one runs.
    dir_checked: Mutex<Option<Instant>>,
}

/// How long a busy lockd keeps its shared `flock` of `lockd.lock` from one
/// call to the next while calls are waiting, instead of letting go and
/// taking it again (two round trips to the server on a cluster
/// filesystem). It is then let go even if calls are waiting, so that
/// gocept.lockd, a starting lockd or a `fence` (which take it exclusively)
/// find it free now and then.
const KEEP_SHARED: Duration = Duration::from_millis(10);

struct Core {
    global_lock: File,
    /// [`RANGES_FILE`], open for writing (an exclusive byte-range lock
    /// needs it).
    ranges: File,
    changes: u64,
    /// Since when this process holds a shared `flock` of `global_lock`
    /// between guards, if it does.
    kept_shared: Option<Instant>,
}

/// A durable content file that new lock files of one client link to.
struct Content {
    second: i64,
    path: PathBuf,
}

/// The process mutex and the directory's flock (and, for a change of some
/// names, their bytes of `lockd.ranges`), released on drop; a shared flock
/// may be kept for a call waiting for the mutex ([`KEEP_SHARED`]).
struct Guard<'a> {
    core: MutexGuard<'a, Core>,
    /// Whether the flock is shared.
    shared: bool,
    /// Whether bytes of `lockd.ranges` may be held.
    names: bool,
    waiters: &'a AtomicU64,
}

/// How long a guard may still wait, and the pause before the next try.
struct Wait {
    start: Instant,
    wait: Duration,
    pause: Duration,
}

impl Wait {
    /// Pause before the next try, or fail with `timed_out(wait)` once the
    /// wait is over.
    fn pause_or_fail(&mut self, timed_out: impl FnOnce(Duration) -> Error) -> Result<(), Error> {
        if self.start.elapsed() >= self.wait {
            return Err(timed_out(self.wait));
        }
        std::thread::sleep(self.pause);
        self.pause = (self.pause * 2).min(Duration::from_millis(5));
        Ok(())
    }
}

/// Counts down on drop.
struct Decrement<'a>(&'a AtomicU64);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        // Closing the files would release them too; an error here leaves
        // nothing to do.
        let keep = self.shared
            && self.waiters.load(Ordering::Acquire) > 0
            && self
                .core
                .kept_shared
                .is_some_and(|since| since.elapsed() < KEEP_SHARED);
        if self.names {
            let _ = crate::sys::ofd_unlock_all(self.core.ranges.as_fd());
        }
        if !keep {
            self.core.kept_shared = None;
            let _ = self.core.global_lock.unlock();
        }
    }
}

/// What a check-and-change needs to exclude.
enum Scope {
    /// Everything: an exclusive `flock` of `lockd.lock` (start-up, `fence`),
    /// as gocept.lockd takes it for each of its calls.
    Directory,
    /// The file names with these offsets in `lockd.ranges`, exclusively,
    /// under a shared `flock` of `lockd.lock` (which keeps out gocept.lockd
    /// and the exclusive changes above, and lets lockd processes in
    /// together).
    Names(Vec<u64>),
}

/// The byte of [`RANGES_FILE`] that stands for the file name `stem` (a lock
/// file's name without `.resource.lock`, as bytes): FNV-1a, 64 bits, of the
/// bytes, modulo 2^32. Every lockd sharing a directory must compute the same
/// (docs/cluster.md); two names on one byte only wait for each other.
pub fn name_offset(stem: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in stem {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash % RANGE_SPACE
}

/// Whether `link` alone can decide a `lock` of `resource` among lockd
/// processes: its lock file has one name, which no other resource's lock
/// may stand under except as its own lock file. Every name other than a
/// resource's first stem is a percent-encoding (it has a `%`), and the
/// Latin-1 name has bytes beyond ASCII; a first stem without either can
/// only be some resource's first stem, and two lock files under one name
/// are one `link` against the other. Other changes of the name (unlock,
/// release, a batch) hold its byte of `lockd.ranges`, and a lock file they
/// may be changing sends `lock` to take the byte too.
fn single_name(resource: &str, stems: &[String]) -> bool {
    stems.len() == 1
        && stems[0].is_ascii()
        && !stems[0].contains('%')
        && names::latin1(resource).is_none()
}

/// The bytes of `lockd.ranges` a change of `resource` locks: one for each
/// file name the change reads or writes, that is each of its `stems` (its
/// lock file, its `.resource.last`) and the Latin-1 name it checks, so that
/// two changes that share a file always share a byte.
fn name_offsets(resource: &str, stems: &[String]) -> Vec<u64> {
    let mut offsets: Vec<u64> = stems.iter().map(|s| name_offset(s.as_bytes())).collect();
    if let Some(latin1) = names::latin1(resource) {
        offsets.push(name_offset(&latin1));
    }
    offsets
}

/// `fs::create_dir_all` for the lock directory. EEXIST means something that
/// is not a directory has the name, which "File exists" would not say.
fn create_dir(dir: &Path) -> Result<(), Error> {
    fs::create_dir_all(dir).map_err(|e| {
        let e = match e.kind() {
            io::ErrorKind::AlreadyExists => io::Error::new(
                io::ErrorKind::NotADirectory,
                "it exists and is not a directory",
            ),
            _ => e,
        };
        Error::io("create the lock directory", dir, e)
    })
}

impl Store {
    /// Create the lock directory if it is missing; its canonical path.
    pub fn make_dir(dir: &Path) -> Result<PathBuf, Error> {
        create_dir(dir)?;
        fs::canonicalize(dir).map_err(|e| Error::io("resolve", dir, e))
    }

    /// Open (and create) the lock directory, and remove leftovers of writes
    /// an earlier run did not finish.
    pub fn open(dir: &Path) -> Result<(Store, OpenReport), Error> {
        create_dir(dir)?;
        let dir = fs::canonicalize(dir).map_err(|e| Error::io("resolve", dir, e))?;
        let (dir_file, global_lock, ranges, dir_id) = open_dir(&dir)?;
        let store = Store {
            dir,
            dir_file: RwLock::new((Arc::new(dir_file), dir_id)),
            core: Mutex::new(Core {
                global_lock,
                ranges,
                changes: 0,
                kept_shared: None,
            }),
            synced: AtomicU64::new(0),
            lost: RwLock::new(None),
            contents: Mutex::new(HashMap::new()),
            instance: instance_name(),
            lock_wait: RwLock::new(DEFAULT_LOCK_WAIT),
            guard_waiters: AtomicU64::new(0),
            exclusive_waiters: AtomicU64::new(0),
            dir_checked: Mutex::new(None),
        };
        let report = store.recover()?;
        Ok((store, report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Remove leftover content files, count the locks, and move each lock
    /// file lockd 0.1 wrote under an encoded name to the name gocept.lockd
    /// looks at, so that a legacy daemon sharing the directory sees it.
    fn recover(&self) -> Result<OpenReport, Error> {
        let mut report = OpenReport::default();
        let _guard = self.guard(Scope::Directory)?;
        let entries = fs::read_dir(&self.dir).map_err(|e| Error::io("list", &self.dir, e))?;
        let mut removed = false;
        // acquire_many's markers, and those a lock file still needs.
        let mut markers = Vec::new();
        let mut needed = std::collections::HashSet::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", &self.dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = entry.path();
            if name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX) {
                match fs::remove_file(&path) {
                    Ok(()) => report.removed_leftovers += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("remove the leftover", &path, e)),
                }
                removed = true;
                continue;
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                report.subdirectories.push(name.into_owned());
                continue;
            }
            if let Some(batch) = Store::batch_of_marker(&name) {
                markers.push(batch.to_owned());
                continue;
            }
            let Some(stem) = name.strip_suffix(LOCK_SUFFIX) else {
                continue;
            };
            let record = match read_lock_file(&path) {
                Ok(record) => record,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("read", &path, e)),
            };
            if let Some(batch) = &record.grant.batch {
                if !self.is_live(&record)? {
                    // A lock file of an acquire_many that never committed.
                    fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
                    report.removed_leftovers += 1;
                    removed = true;
                    continue;
                }
                needed.insert(batch.clone());
            }
            let owner = entry.file_name().to_str().and(owner(stem, &record));
            match owner {
                None => report.foreign.push(name.into_owned()),
                Some(resource) => {
                    report.locks += 1;
                    if self.move_encoded(stem, &resource, &record)? {
                        report.moved += 1;
                    }
                }
            }
        }
        self.remove_unused_markers(&markers, &needed)?;
        if removed {
            self.dir_file()
                .sync_all()
                .map_err(|e| Error::io("fsync", &self.dir, e))?;
        }
        report.foreign.sort();
        report.subdirectories.sort();
        Ok(report)
    }

    /// Move a lock file lockd 0.1 wrote under the encoded `stem` of
    /// `resource` to `resource`'s own stem, rewritten in today's form. The
    /// new name is linked and made durable before the old one is removed,
    /// so the lock is held throughout; killed halfway, the next start
    /// finishes the move. Returns whether it moved.
    fn move_encoded(&self, stem: &str, resource: &str, record: &Record) -> Result<bool, Error> {
        if record.kind != Kind::Encoded {
            return Ok(false);
        }
        let target_stem = names::stem(resource).map_err(Error::Name)?;
        if target_stem == stem {
            return Ok(false);
        }
        let old = self.dir.join(format!("{stem}{LOCK_SUFFIX}"));
        let target = self.dir.join(format!("{target_stem}{LOCK_SUFFIX}"));
        let content = self.temp_path("");
        let text = content_text(&record.holder, record.since, resource);
        create_durable_at(&content, text.as_bytes(), record.since)?;
        let linked = fs::hard_link(&content, &target);
        let _ = fs::remove_file(&content);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let done = read_lock_file(&target).is_ok_and(|held| {
                    held.holder == record.holder
                        && owner(&target_stem, &held).as_deref() == Some(resource)
                });
                if !done {
                    // Both files stay, and each stops `resource` from
                    // being granted.
                    log::warn!(
                        "{old:?} and {target:?} both hold {resource:?}: lockd refuses it to everyone else; remove the file whose holder no longer runs"
                    );
                    return Ok(false);
                }
            }
            Err(e) => return Err(Error::io("link", &target, e)),
        }
        let dir = self.dir_file();
        dir.sync_all()
            .map_err(|e| Error::io("fsync", &self.dir, e))?;
        fs::remove_file(&old).map_err(|e| Error::io("remove", &old, e))?;
        dir.sync_all()
            .map_err(|e| Error::io("fsync", &self.dir, e))?;
        log::info!(
            "moved the lock on {resource:?} held by {:?} from {old:?} to {target:?}, where gocept.lockd looks for it",
            record.holder
        );
        Ok(true)
    }

    /// The process mutex and the directory's `flock`. The `flock` is
    /// waited for at most [`Store::set_lock_wait`]: a process that holds it
    /// and does not go on (a lockd stopped, or on a node cut off, on a
    /// cluster filesystem) fails calls, it does not hang them.
    fn guard(&self, scope: Scope) -> Result<Guard<'_>, Error> {
        let wait = *self
            .lock_wait
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        self.guard_within(wait, scope)
    }

    /// [`Store::guard`], waiting at most `wait` for the flock and the
    /// ranges together.
    fn guard_within(&self, wait: Duration, scope: Scope) -> Result<Guard<'_>, Error> {
        // The wait counts from here, and nobody waits holding the mutex:
        // each try is made under it, the pauses between tries outside, so
        // that a call waiting for a resource another node is changing (or
        // for the directory) holds up no call on other resources.
        let wait = Wait {
            start: Instant::now(),
            wait,
            pause: Duration::from_micros(50),
        };
        match scope {
            Scope::Directory => self.exclusive_guard(wait),
            Scope::Names(mut offsets) => {
                // In one order everywhere, so that two changes of several
                // names never each hold a byte the other waits for.
                offsets.sort_unstable();
                offsets.dedup();
                self.shared_guard(wait, &offsets)
            }
        }
    }

    /// A guard for a change of the names at `offsets`: the shared flock
    /// (kept from an earlier guard, or taken), then the names' bytes.
    fn shared_guard(&self, mut wait: Wait, offsets: &[u64]) -> Result<Guard<'_>, Error> {
        loop {
            // An exclusive guard of this process waits for the flock: let
            // it, for a while (it may wait long for another process).
            let busy = if self.exclusive_waiters.load(Ordering::Acquire) > 0
                && wait.start.elapsed() < GIVE_WAY
            {
                GLOBAL_LOCK_FILE
            } else {
                self.guard_waiters.fetch_add(1, Ordering::AcqRel);
                let core = self.core.lock().unwrap_or_else(PoisonError::into_inner);
                self.guard_waiters.fetch_sub(1, Ordering::AcqRel);
                let mut guard = Guard {
                    core,
                    shared: true,
                    names: !offsets.is_empty(),
                    waiters: &self.guard_waiters,
                };
                match self.try_shared(&mut guard, offsets)? {
                    None => return Ok(guard),
                    // Dropped: what was taken is let go (the flock may be
                    // kept for a call waiting for the mutex).
                    Some(file) => file,
                }
            };
            wait.pause_or_fail(|waited| self.timed_out(waited, busy))?;
        }
    }

    /// One try of everything a shared guard needs: `Some(file)` names the
    /// file another process holds.
    fn try_shared(
        &self,
        guard: &mut Guard<'_>,
        offsets: &[u64],
    ) -> Result<Option<&'static str>, Error> {
        if guard.core.kept_shared.is_none() {
            loop {
                match guard.core.global_lock.try_lock_shared() {
                    Ok(()) => break,
                    Err(TryLockError::WouldBlock) => return Ok(Some(GLOBAL_LOCK_FILE)),
                    Err(TryLockError::Error(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(TryLockError::Error(e)) => {
                        return Err(Error::io("lock", &self.dir.join(GLOBAL_LOCK_FILE), e));
                    }
                }
            }
            guard.core.kept_shared = Some(Instant::now());
        }
        for &offset in offsets {
            match crate::sys::ofd_try_lock(guard.core.ranges.as_fd(), offset) {
                Ok(true) => {}
                Ok(false) => return Ok(Some(RANGES_FILE)),
                Err(e) => {
                    // A write lock on a file opened for reading only: opened
                    // so because the filesystem is read-only (see
                    // [`open_dir_as`]).
                    let e = match e.raw_os_error() {
                        Some(libc::EBADF) => io::Error::from_raw_os_error(libc::EROFS),
                        _ => e,
                    };
                    return Err(Error::io("lock", &self.dir.join(RANGES_FILE), e));
                }
            }
        }
        Ok(None)
    }

    /// A guard of the whole directory: the flock, exclusively. The other
    /// calls of this process give way meanwhile ([`GIVE_WAY`]); lockd on
    /// other nodes do not know of it, and while they are busy without a
    /// pause their shared flocks may overlap for longer than the wait.
    fn exclusive_guard(&self, mut wait: Wait) -> Result<Guard<'_>, Error> {
        self.exclusive_waiters.fetch_add(1, Ordering::AcqRel);
        let _waiting = Decrement(&self.exclusive_waiters);
        loop {
            let mut core = self.core.lock().unwrap_or_else(PoisonError::into_inner);
            if core.kept_shared.take().is_some() {
                // flock(2) would convert it, but not atomically: let go first.
                let _ = core.global_lock.unlock();
            }
            match core.global_lock.try_lock() {
                Ok(()) => {
                    return Ok(Guard {
                        core,
                        shared: false,
                        names: false,
                        waiters: &self.guard_waiters,
                    });
                }
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(TryLockError::Error(e)) => {
                    return Err(Error::io("lock", &self.dir.join(GLOBAL_LOCK_FILE), e));
                }
            }
            drop(core);
            wait.pause_or_fail(|waited| self.timed_out(waited, GLOBAL_LOCK_FILE))?;
        }
    }

    fn timed_out(&self, wait: Duration, file: &str) -> Error {
        let waited = io::Error::new(
            io::ErrorKind::TimedOut,
            format!("still held by another process after {wait:?}"),
        );
        Error::io("lock", &self.dir.join(file), waited)
    }

    /// How long a call waits for another process's hold on `lockd.lock`
    /// (10 s unless set).
    pub fn set_lock_wait(&self, wait: Duration) {
        *self
            .lock_wait
            .write()
            .unwrap_or_else(PoisonError::into_inner) = wait;
    }

    /// If the lock directory was removed and made anew (by hand, or by a
    /// tool), reopen it: otherwise fsyncs and the flock would go to the old,
    /// deleted directory, and acknowledged changes would not be durable.
    /// The changes made in the old directory since its last fsync are lost:
    /// their calls fail ([`Store::is_durable`]). Checked at the start of
    /// every call ([`Store::current_directory`]), after every fsync
    /// ([`Store::sync`]), and when a file is not found (so that a directory
    /// that has gone is a failure, not "Resource not locked"). Returns
    /// whether it was replaced.
    fn follow_directory(&self, core: &mut Core) -> Result<bool, Error> {
        let id = crate::sys::directory_identity(&self.dir)
            .map_err(|e| Error::io("open the lock directory", &self.dir, e))?;
        // Written only here, under the core's mutex, which the caller holds.
        let known = self
            .dir_file
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .1;
        if id == known {
            return Ok(false);
        }
        let (dir_file, global_lock, ranges, dir_id) = open_dir_as(&self.dir, true)?;
        log::warn!(
            "the lock directory {} was replaced; lockd now uses the new one",
            self.dir.display()
        );
        let durable = self.synced.load(Ordering::Acquire);
        if core.changes > durable {
            let mut lost = self.lost.write().unwrap_or_else(PoisonError::into_inner);
            let from = lost.map_or(durable, |(from, _)| from.min(durable));
            *lost = Some((from, core.changes));
            log::warn!(
                "the changes made in the replaced lock directory since its last fsync are lost ({} of them): their calls fail",
                core.changes - durable
            );
        }
        // The old files are closed, and with them any lock on them.
        core.kept_shared = None;
        core.global_lock = global_lock;
        core.ranges = ranges;
        *self
            .dir_file
            .write()
            .unwrap_or_else(PoisonError::into_inner) = (Arc::new(dir_file), dir_id);
        Ok(true)
    }

    /// At the start of a call: follow a replaced directory (see
    /// [`Store::follow_directory`]), because the call reaches the files
    /// through the directory's descriptor, not its path. One `stat` of the
    /// directory, outside the mutex and the locks, shared by the calls that
    /// come in while it runs (as the fsync is): a call is content with a
    /// check that began after the call did.
    fn current_directory(&self) -> Result<(), Error> {
        let called = Instant::now();
        let mut last = self
            .dir_checked
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|began| began >= called) {
            return Ok(());
        }
        let began = Instant::now();
        let id = crate::sys::directory_identity(&self.dir)
            .map_err(|e| Error::io("open the lock directory", &self.dir, e))?;
        let known = self
            .dir_file
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .1;
        if id != known {
            let mut core = self.core.lock().unwrap_or_else(PoisonError::into_inner);
            self.follow_directory(&mut core)?;
        }
        *last = Some(began);
        Ok(())
    }

    fn dir_file(&self) -> Arc<File> {
        Arc::clone(
            &self
                .dir_file
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .0,
        )
    }

    /// File operations on names in the lock directory, through its
    /// descriptor (`openat`, `linkat`, …): on a FUSE or NFS mount without
    /// caches, a path is looked up again component by component, a round
    /// trip to the server each, and the directory's own name is one of
    /// them. Paths are kept for messages; only their file names are used.
    fn at(&self) -> At {
        At(self.dir_file())
    }

    /// The number of the last change, read after the observation it covers.
    fn current_seq(&self) -> u64 {
        self.core
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .changes
    }

    fn lock_path(&self, stem: &str) -> PathBuf {
        self.dir.join(format!("{stem}{LOCK_SUFFIX}"))
    }

    /// The lock file that stops `resource` from being granted, if any:
    /// `resource`'s own lock file if there is one, else the first file under
    /// one of `stems` that stands for another name.
    fn find(&self, resource: &str, stems: &[String]) -> Result<Option<Found>, Error> {
        let mut other = None;
        let at = self.at();
        for stem in stems {
            let path = self.lock_path(stem);
            match at.read_lock_file(&path) {
                Ok(record) if !self.is_live(&record)? => {}
                Ok(record) => {
                    let own = owner(stem, &record).as_deref() == Some(resource);
                    let found = Found { path, record, own };
                    if own {
                        return Ok(Some(found));
                    }
                    other.get_or_insert(found);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("read", &path, e)),
            }
        }
        Ok(other)
    }

    /// Refuse a name gocept.lockd would keep below a subdirectory of the
    /// lock directory while that subdirectory exists: lockd does not look
    /// into it, and a legacy daemon may hold the name there.
    fn check_subdirectory(&self, resource: &str, stems: Vec<String>) -> Result<Vec<String>, Error> {
        if let names::LegacyPath::Subdirectory(subdirectory) = names::legacy_path(resource)
            && fs::symlink_metadata(self.dir.join(&subdirectory)).is_ok()
        {
            return Err(Error::Name(NameError::LegacySubdirectory { subdirectory }));
        }
        Ok(stems)
    }

    /// [`Store::find`] under `stems`, then under the Latin-1 name: every lock
    /// file that stops `resource` from being granted.
    fn in_the_way(&self, resource: &str, stems: &[String]) -> Result<Option<Found>, Error> {
        match self.find(resource, stems)? {
            Some(found) => Ok(Some(found)),
            None => self.find_latin1(resource),
        }
    }

    /// gocept.lockd's lock on `resource` if it ran under a Latin-1 locale:
    /// Python 2 wrote a non-ASCII name in the locale's encoding. Such a
    /// file is no lock lockd can release (its name is not UTF-8), but it
    /// stops the name from being granted.
    fn find_latin1(&self, resource: &str) -> Result<Option<Found>, Error> {
        let Some(stem) = names::latin1(resource) else {
            return Ok(None);
        };
        let mut name = stem;
        name.extend_from_slice(LOCK_SUFFIX.as_bytes());
        let path = self.dir.join(OsStr::from_bytes(&name));
        match self.at().read_lock_file(&path) {
            Ok(record) => Ok(Some(Found {
                path,
                record,
                own: false,
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", &path, e)),
        }
    }

    /// Take the lock on `resource` for `client`.
    pub fn lock(&self, resource: &str, client: &str) -> Observed<()> {
        let checked = names::stems(resource)
            .map_err(Error::Name)
            .and_then(|stems| {
                names::check_client(client).map_err(Error::Name)?;
                Ok(stems)
            });
        let stems = match checked
            .and_then(|stems| self.check_subdirectory(resource, stems))
            .and_then(|stems| self.current_directory().map(|()| stems))
        {
            Ok(stems) => stems,
            Err(error) => return Observed::failed(error),
        };
        let path = self.lock_path(&stems[0]);
        let now = SystemTime::now();
        let mut fresh = false;
        let mut names_held = !single_name(resource, &stems);
        loop {
            let content = match self.content_file(client, resource, now, fresh) {
                Ok(content) => content,
                Err(error) => return Observed::failed(error),
            };
            let offsets = if names_held {
                name_offsets(resource, &stems)
            } else {
                Vec::new()
            };
            let mut guard = match self.guard(Scope::Names(offsets)) {
                Ok(guard) => guard,
                Err(error) => return Observed::failed(error),
            };
            let result = match self.link_if_free(resource, &stems, &content, names_held) {
                Ok(Linked::Done) => {
                    guard.core.changes += 1;
                    Ok(())
                }
                Ok(Linked::InTheWay(record)) => Err(Error::Refused(Refusal::AlreadyLocked {
                    holder: record.holder,
                })),
                Ok(Linked::ContentGone) if !fresh => {
                    fresh = true;
                    continue;
                }
                Ok(Linked::NeedNames) => {
                    names_held = true;
                    continue;
                }
                Ok(Linked::ContentGone) => Err(Error::io(
                    "link",
                    &path,
                    io::Error::from(io::ErrorKind::NotFound),
                )),
                Err(error) => Err(error),
            };
            return Observed {
                result,
                seq: guard.core.changes,
            };
        }
    }

    /// Under the guard: link `content` as `resource`'s lock file (under
    /// `stems[0]`) unless a lock file stands under any of its stems.
    /// `names_held`: the guard holds the resource's bytes of `lockd.ranges`
    /// (without them, only for a [`single_name`] resource, `link` alone
    /// decides, and a lock file in the way that is not plainly live is
    /// answered with [`Linked::NeedNames`]).
    fn link_if_free(
        &self,
        resource: &str,
        stems: &[String],
        content: &Path,
        names_held: bool,
    ) -> Result<Linked, Error> {
        // The first stem is checked by `link` itself.
        if let Some(found) = self.in_the_way(resource, &stems[1..])? {
            return Ok(Linked::InTheWay(found.record));
        }
        let path = self.lock_path(&stems[0]);
        let mut cleared = false;
        let at = self.at();
        loop {
            return match at.link(content, &path) {
                Ok(()) => Ok(Linked::Done),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let record = match at.read_lock_file(&path) {
                        Ok(record) => record,
                        // Released since the link failed.
                        Err(e) if e.kind() == io::ErrorKind::NotFound && !names_held => {
                            return Ok(Linked::NeedNames);
                        }
                        Err(e) => return Err(Error::io("read", &path, e)),
                    };
                    if cleared || self.is_live(&record)? {
                        return Ok(Linked::InTheWay(record));
                    }
                    if !names_held {
                        // A batch half-way on another node looks the same.
                        return Ok(Linked::NeedNames);
                    }
                    // What a batch that never committed left: under the
                    // guard no batch is half-way, so it is dead.
                    at.remove(&path)
                        .map_err(|e| Error::io("remove", &path, e))?;
                    cleared = true;
                    continue;
                }
                // Another process's start-up may have removed the content file.
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        && matches!(at.exists(content), Ok(false)) =>
                {
                    Ok(Linked::ContentGone)
                }
                Err(e) => Err(Error::io("link", &path, e)),
            };
        }
    }

    /// Whether a lock file counts: a grant of `acquire_many` counts only
    /// once its batch's marker exists (see [`fencing`]). A marker that
    /// cannot be looked up is an error, never "not there": a lock file that
    /// does not count may be removed.
    fn is_live(&self, record: &Record) -> Result<bool, Error> {
        let Some(batch) = &record.grant.batch else {
            return Ok(true);
        };
        let marker = self.batch_marker(batch);
        self.at()
            .exists(&marker)
            .map_err(|e| Error::io("look up", &marker, e))
    }

    /// Release the lock on `resource` held by `client`.
    pub fn unlock(&self, resource: &str, client: &str) -> Observed<()> {
        let stems = match names::stems(resource) {
            Ok(stems) => stems,
            Err(error) => return Observed::failed(Error::Name(error)),
        };
        if let Err(error) = self.current_directory() {
            return Observed::failed(error);
        }
        let mut followed = false;
        loop {
            let mut guard = match self.guard(Scope::Names(name_offsets(resource, &stems))) {
                Ok(guard) => guard,
                Err(error) => return Observed::failed(error),
            };
            let result = match self.find(resource, &stems) {
                Err(error) => Err(error),
                Ok(None) => match self.follow_directory(&mut guard.core) {
                    Ok(true) if !followed => {
                        followed = true;
                        continue;
                    }
                    Ok(_) => Err(Error::Refused(Refusal::NotLocked)),
                    Err(error) => Err(error),
                },
                // A lock file of another name that only looks like this
                // one's: `resource` is refused, but not held.
                Ok(Some(found)) if !found.own => Err(Error::Refused(Refusal::NotLocked)),
                Ok(Some(found)) if found.record.holder != client => {
                    Err(Error::Refused(Refusal::NotHolder {
                        holder: found.record.holder,
                        client: client.to_owned(),
                    }))
                }
                Ok(Some(found)) => self.retire(&found).map(|()| {
                    guard.core.changes += 1;
                }),
            };
            return Observed {
                result,
                seq: guard.core.changes,
            };
        }
    }

    /// Who holds `resource` (or, for a name another lock file stands in the
    /// way of, who holds that), if anyone: what `lock` would answer.
    pub fn status(&self, resource: &str) -> Observed<Option<Lock>> {
        let stems = match names::stems(resource) {
            Ok(stems) => stems,
            Err(error) => return Observed::failed(Error::Name(error)),
        };
        if let Err(error) = self.current_directory() {
            return Observed::failed(error);
        }
        let result = match self.in_the_way(resource, &stems) {
            Ok(Some(found)) => Ok(Some(Lock {
                resource: resource.to_owned(),
                client: found.record.holder,
                since: found.record.since,
                token: found.record.grant.token,
            })),
            Ok(None) => {
                let mut core = self.core.lock().unwrap_or_else(PoisonError::into_inner);
                match self.follow_directory(&mut core) {
                    // Replaced: the new directory has not been read yet.
                    Ok(true) => {
                        drop(core);
                        self.status(resource).result
                    }
                    Ok(false) => Ok(None),
                    Err(error) => Err(error),
                }
            }
            Err(error) => Err(error),
        };
        Observed {
            result,
            seq: self.current_seq(),
        }
    }

    /// Every held lock, sorted by resource name.
    pub fn locks(&self) -> Observed<Vec<Lock>> {
        let result = self.current_directory().and_then(|()| self.scan());
        Observed {
            result,
            seq: self.current_seq(),
        }
    }

    fn scan(&self) -> Result<Vec<Lock>, Error> {
        let mut locks = BTreeMap::new();
        for (resource, found) in self.held()? {
            locks.entry(resource).or_insert(found.record);
        }
        Ok(locks
            .into_iter()
            .map(|(resource, record)| Lock {
                resource,
                client: record.holder,
                since: record.since,
                token: record.grant.token,
            })
            .collect())
    }

    /// Every lock file that counts, with the resource it belongs to (see
    /// [`owner`]), in directory order.
    fn held(&self) -> Result<Vec<(String, Found)>, Error> {
        let entries = fs::read_dir(&self.dir).map_err(|e| Error::io("list", &self.dir, e))?;
        let mut held = Vec::new();
        let at = self.at();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", &self.dir, e))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(LOCK_SUFFIX)) else {
                continue;
            };
            let path = entry.path();
            let record = match at.read_lock_file(&path) {
                Ok(record) => record,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("read", &path, e)),
            };
            if !self.is_live(&record)? {
                continue;
            }
            if let Some(resource) = owner(stem, &record) {
                let own = true;
                held.push((resource, Found { path, record, own }));
            }
        }
        Ok(held)
    }

    /// Make every change made so far durable: fsync the lock directory.
    /// Returns the number of the last change it covers.
    ///
    /// The changes were made in the directory open now: they count only if
    /// it is still the lock directory once they are on disk. A call checks
    /// the directory when it starts, but it may be replaced between that
    /// check and the fsync: then lockd follows it, and the changes made in
    /// the old one are lost ([`Store::follow_directory`]) instead of
    /// acknowledged.
    pub fn sync(&self) -> Result<u64, Error> {
        let (target, dir, id) = {
            let core = self.core.lock().unwrap_or_else(PoisonError::into_inner);
            let (dir, id) = &*self.dir_file.read().unwrap_or_else(PoisonError::into_inner);
            (core.changes, Arc::clone(dir), *id)
        };
        dir.sync_all()
            .map_err(|e| Error::io("fsync", &self.dir, e))?;
        let now = crate::sys::directory_identity(&self.dir)
            .map_err(|e| Error::io("open the lock directory", &self.dir, e))?;
        if now != id {
            let mut core = self.core.lock().unwrap_or_else(PoisonError::into_inner);
            self.follow_directory(&mut core)?;
            return Err(Error::io(
                "fsync",
                &self.dir,
                io::Error::other("the lock directory was replaced before its changes were synced"),
            ));
        }
        self.synced.fetch_max(target, Ordering::AcqRel);
        Ok(target)
    }

    /// Whether change `seq` (and every one before it) is on stable storage;
    /// an error if it was made in a lock directory that was replaced before
    /// it was synced.
    pub fn is_durable(&self, seq: u64) -> Result<bool, Error> {
        let lost = *self.lost.read().unwrap_or_else(PoisonError::into_inner);
        if lost.is_some_and(|(from, to)| from < seq && seq <= to) {
            return Err(Error::io(
                "fsync",
                &self.dir,
                io::Error::other(
                    "the lock directory was replaced after this change and before it was synced: it was made in the old directory",
                ),
            ));
        }
        Ok(self.synced.load(Ordering::Acquire) >= seq)
    }

    /// `.lockd-<kind><pid>-<random>-<n>.tmp`: content files have no kind,
    /// self-test files `probe-`. Start-up removes them all.
    fn temp_path(&self, kind: &str) -> PathBuf {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!(
            "{TEMP_PREFIX}{kind}{}-{n}{TEMP_SUFFIX}",
            self.instance
        ))
    }

    /// A durable content file for `client` locking `resource` at `now`.
    fn content_file(
        &self,
        client: &str,
        resource: &str,
        now: SystemTime,
        fresh: bool,
    ) -> Result<PathBuf, Error> {
        let second = clock::unix_seconds(now);
        let key = (client.to_owned(), resource.to_owned());
        if !fresh {
            let contents = self.contents.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(content) = contents.get(&key).filter(|c| c.second == second) {
                return Ok(content.path.clone());
            }
        }
        let path = self.temp_path("");
        self.at()
            .create(&path, content_text(client, now, resource).as_bytes(), None)?;
        let mut contents = self.contents.lock().unwrap_or_else(PoisonError::into_inner);
        let replaced = contents.insert(
            key,
            Content {
                second,
                path: path.clone(),
            },
        );
        if let Some(old) = replaced {
            // Lock files linked to it keep their content; a link racing with
            // this removal fails with NotFound and is retried.
            let _ = self.at().remove(&old.path);
        }
        Ok(path)
    }

    /// Remove content files whose second has passed: new locks will not
    /// link to them, and held locks keep their own links.
    pub fn remove_stale_contents(&self) {
        self.remove_contents_before(clock::unix_seconds(SystemTime::now()));
    }

    /// Remove all of this process's content files (at a clean stop).
    pub fn remove_temporaries(&self) {
        self.remove_contents_before(i64::MAX);
    }

    fn remove_contents_before(&self, second: i64) {
        let mut contents = self.contents.lock().unwrap_or_else(PoisonError::into_inner);
        contents.retain(|_, content| {
            let keep = content.second >= second;
            if !keep {
                let _ = fs::remove_file(&content.path);
            }
            keep
        });
    }
}

/// `<pid>-<random>`: the pid, for people reading the directory, and 64
/// random bits (std's hash keys are seeded from the OS's randomness), for
/// lockd on another node that has the same pid (the first process of a
/// container, or started in the same order on identical hosts).
fn instance_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{}-{random:016x}", std::process::id())
}

/// Open the lock directory (for fsync) and its `lockd.lock`, and say which
/// directory they are in.
/// Device, inode and mount of the lock directory (see
/// [`crate::sys::directory_identity`]).
type DirId = (u64, u64, u64);

fn open_dir(dir: &Path) -> Result<(File, File, File, DirId), Error> {
    open_dir_as(dir, false)
}

/// [`open_dir`]; `read_only_ok`: on a read-only filesystem, open
/// `lockd.lock` and `lockd.ranges` for reading (when a running lockd
/// follows its directory onto a read-only mount: reads go on, and a change
/// fails saying the filesystem is read-only).
fn open_dir_as(dir: &Path, read_only_ok: bool) -> Result<(File, File, File, DirId), Error> {
    let dir_file = File::open(dir).map_err(|e| Error::io("open the lock directory", dir, e))?;
    let id = crate::sys::open_identity(dir_file.as_fd())
        .map_err(|e| Error::io("open the lock directory", dir, e))?;
    let open = |name: &str| {
        let path = dir.join(name);
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path);
        match opened {
            Err(e) if read_only_ok && e.kind() == io::ErrorKind::ReadOnlyFilesystem => {
                File::open(&path).map_err(|_| Error::io("open", &path, e))
            }
            other => other.map_err(|e| Error::io("open", &path, e)),
        }
    };
    let global_lock = open(GLOBAL_LOCK_FILE)?;
    let ranges = open(RANGES_FILE)?;
    Ok((dir_file, global_lock, ranges, id))
}

/// The lock directory's descriptor, for the `*at` calls (see [`Store::at`]).
struct At(Arc<File>);

/// The file name of a path in the lock directory.
fn file_name(path: &Path) -> &OsStr {
    // Every path here is the directory joined with a name; an absolute
    // path given to an `*at` call ignores the directory, which is right.
    path.file_name().unwrap_or(path.as_os_str())
}

impl At {
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }

    fn link(&self, from: &Path, to: &Path) -> io::Result<()> {
        crate::sys::link_at(self.fd(), file_name(from), file_name(to))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        crate::sys::unlink_at(self.fd(), file_name(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        crate::sys::rename_at(self.fd(), file_name(from), file_name(to))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        crate::sys::exists_at(self.fd(), file_name(path))
    }

    fn read_lock_file(&self, path: &Path) -> io::Result<Record> {
        record::read_lock_file_at(self.fd(), file_name(path))
    }

    /// Create `path` (it must not exist), write `data`, fsync it.
    fn create(&self, path: &Path, data: &[u8], since: Option<SystemTime>) -> Result<(), Error> {
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
        let file = crate::sys::open_at(self.fd(), file_name(path), flags, 0o644)
            .map_err(|e| Error::io("create", path, e))?;
        fill_durable(file, path, data, since)
    }
}

fn create_durable(path: &Path, data: &[u8]) -> Result<(), Error> {
    write_durable(path, data, None)
}

/// [`create_durable`] with the modification time set to `since`: the lock
/// time of a lock file without a time line.
fn create_durable_at(path: &Path, data: &[u8], since: SystemTime) -> Result<(), Error> {
    write_durable(path, data, Some(since))
}

fn write_durable(path: &Path, data: &[u8], since: Option<SystemTime>) -> Result<(), Error> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| Error::io("create", path, e))?;
    fill_durable(file, path, data, since)
}

/// Write `data` to the new, empty `file` (at `path`), set its modification
/// time to `since` if given, and fsync it.
fn fill_durable(
    mut file: File,
    path: &Path,
    data: &[u8],
    since: Option<SystemTime>,
) -> Result<(), Error> {
    file.write_all(data)
        .map_err(|e| Error::io("write", path, e))?;
    if let Some(since) = since {
        file.set_modified(since)
            .map_err(|e| Error::io("set the time of", path, e))?;
    }
    file.sync_all().map_err(|e| Error::io("fsync", path, e))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::clock::Utc;

    pub(super) fn open(dir: &Path) -> (Store, OpenReport) {
        Store::open(dir).unwrap()
    }

    fn write(dir: &Path, file: &str, content: &str) {
        fs::write(dir.join(file), content).unwrap();
    }

    /// The lock files in `dir`, sorted.
    fn lock_files(dir: &Path) -> Vec<String> {
        let mut files: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(LOCK_SUFFIX))
            .collect();
        files.sort();
        files
    }

    pub(super) fn refusal<T: fmt::Debug>(observed: Observed<T>) -> Refusal {
        match observed.result {
            Err(Error::Refused(refusal)) => refusal,
            other => panic!("not a refusal: {other:?}"),
        }
    }

    fn already(holder: &str) -> Refusal {
        Refusal::AlreadyLocked {
            holder: holder.to_owned(),
        }
    }

    fn holder(store: &Store, resource: &str) -> Option<String> {
        store.status(resource).result.unwrap().map(|l| l.client)
    }

    #[test]
    fn lock_unlock_and_each_refusal() {
        let temp = tempfile::tempdir().unwrap();
        let (store, _) = open(temp.path());
        let first = store.lock("vm1", "node1");
        assert!(first.result.is_ok() && first.seq == 1);
        assert!(!store.is_durable(1).unwrap());
        assert_eq!(store.sync().unwrap(), 1);
        assert!(store.is_durable(1).unwrap());
        assert_eq!(refusal(store.lock("vm1", "node2")), already("node1"));
        assert_eq!(refusal(store.lock("vm1", "node1")), already("node1"));
        assert_eq!(
            refusal(store.unlock("vm1", "node2")),
            Refusal::NotHolder {
                holder: "node1".into(),
                client: "node2".into()
            }
        );
        assert_eq!(holder(&store, "vm1").as_deref(), Some("node1"));
        assert!(store.unlock("vm1", "node1").result.is_ok());
        assert_eq!(refusal(store.unlock("vm1", "node1")), Refusal::NotLocked);
        assert_eq!(holder(&store, "vm1"), None);
        assert!(lock_files(temp.path()).is_empty());
    }

    #[test]
    fn bad_names_change_nothing() {
        let temp = tempfile::tempdir().unwrap();
        let (store, _) = open(temp.path());
        for (resource, client) in [("", "c"), ("r", ""), ("r", "a\nb"), ("r", " c")] {
            let observed = store.lock(resource, client);
            assert!(
                matches!(observed.result, Err(Error::Name(_))),
                "{resource:?}"
            );
            assert_eq!(observed.seq, 0);
        }
        let long = "x".repeat(names::MAX_STEM + 1);
        assert!(matches!(
            store.unlock(&long, "c").result,
            Err(Error::Name(_))
        ));
        assert!(
            fs::read_dir(temp.path()).unwrap().count() == 2,
            "only lockd.lock and lockd.ranges"
        );
    }

    #[test]
    fn a_lock_file_is_the_bare_client_or_names_its_resource() {
        let temp = tempfile::tempdir().unwrap();
        let (store, _) = open(temp.path());
        store.lock("my vm", "node1").result.unwrap();
        store.lock("a/b", "node1").result.unwrap();
        assert_eq!(
            lock_files(temp.path()),
            ["a%2Fb.resource.lock", "my vm.resource.lock"]
        );
        let bare = fs::read_to_string(temp.path().join("my vm.resource.lock")).unwrap();
        assert_eq!(bare, "node1", "as gocept.lockd writes it");
        let text = fs::read_to_string(temp.path().join("a%2Fb.resource.lock")).unwrap();
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines.len(), 4, "{text:?}");
        assert_eq!(lines[0], "node1");
        assert!(Utc::parse_rfc3339(lines[1]).is_some(), "{text:?}");
        assert_eq!(lines[2], "resource=a%2Fb");
    }

    #[test]
    fn gocept_lock_files_are_held_by_their_holders() {
        let temp = tempfile::tempdir().unwrap();
        // Byte for byte what gocept.lockd 0.1 writes: the bare client.
        for resource in [
            "my vm",
            "caf\u{e9}",
            ".hidden",
            "a%b",
            "UPPER",
            "x+y=z#@~'\"",
        ] {
            write(temp.path(), &format!("{resource}{LOCK_SUFFIX}"), "node2");
        }
        let (store, report) = open(temp.path());
        assert_eq!(report.locks, 6);
        assert!(report.foreign.is_empty(), "{:?}", report.foreign);
        assert_eq!(report.moved, 0);
        for resource in [
            "my vm",
            "caf\u{e9}",
            ".hidden",
            "a%b",
            "UPPER",
            "x+y=z#@~'\"",
        ] {
            assert_eq!(refusal(store.lock(resource, "node3")), already("node2"));
            assert_eq!(holder(&store, resource).as_deref(), Some("node2"));
        }
        let listed: Vec<String> = store
            .locks()
            .result
            .unwrap()
            .into_iter()
            .map(|l| l.resource)
            .collect();
        assert_eq!(
            listed,
            [
                ".hidden",
                "UPPER",
                "a%b",
                "caf\u{e9}",
                "my vm",
                "x+y=z#@~'\""
            ]
        );
        assert!(matches!(
            refusal(store.unlock("my vm", "node3")),
            Refusal::NotHolder { .. }
        ));
        store.unlock("my vm", "node2").result.unwrap();
        assert!(!temp.path().join("my vm.resource.lock").exists());
        store.lock("my vm", "node3").result.unwrap();
    }

    #[test]
    fn lockd_0_1_files_move_to_the_legacy_name_and_stay_held() {
        let temp = tempfile::tempdir().unwrap();
        write(
            temp.path(),
            "my%20vm.resource.lock",
            "node1\n2026-01-02T03:04:05Z\n",
        );
        write(
            temp.path(),
            "a%2520b.resource.lock",
            "node1\n2026-01-02T03:04:05Z\n",
        );
        write(
            temp.path(),
            "a%2Fb.resource.lock",
            "node1\n2026-01-02T03:04:05Z\n",
        );
        let (store, report) = open(temp.path());
        assert_eq!((report.locks, report.moved), (3, 2));
        assert_eq!(
            lock_files(temp.path()),
            [
                "a%20b.resource.lock",
                "a%2Fb.resource.lock",
                "my vm.resource.lock"
            ]
        );
        let moved = store.status("a%20b").result.unwrap().unwrap();
        assert_eq!(moved.client, "node1");
        assert_eq!(
            Utc::from_system(moved.since).rfc3339(),
            "2026-01-02T03:04:05Z"
        );
        // The literal name `a%20b` is held, and `a b` is refused because
        // of it, but not held.
        assert_eq!(refusal(store.lock("a b", "node2")), already("node1"));
        assert_eq!(refusal(store.unlock("a b", "node1")), Refusal::NotLocked);
        for resource in ["my vm", "a%20b", "a/b"] {
            assert_eq!(refusal(store.lock(resource, "node2")), already("node1"));
            store.unlock(resource, "node1").result.unwrap();
        }
        assert!(lock_files(temp.path()).is_empty());
    }

    #[test]
    fn a_move_killed_halfway_is_finished_at_the_next_start() {
        let temp = tempfile::tempdir().unwrap();
        let old = "node1\n2026-01-02T03:04:05Z\n";
        write(temp.path(), "my%20vm.resource.lock", old);
        // Linked under the new name, the old one not yet removed.
        let new = content_text("node1", SystemTime::UNIX_EPOCH, "my vm");
        write(temp.path(), "my vm.resource.lock", &new);
        let (store, report) = open(temp.path());
        assert_eq!(report.moved, 1);
        assert_eq!(lock_files(temp.path()), ["my vm.resource.lock"]);
        assert_eq!(holder(&store, "my vm").as_deref(), Some("node1"));
    }

    #[test]
    fn two_holders_of_one_name_are_both_kept_and_refuse() {
        let temp = tempfile::tempdir().unwrap();
        write(
            temp.path(),
            "my%20vm.resource.lock",
            "node1\n2026-01-02T03:04:05Z\n",
        );
        write(temp.path(), "my vm.resource.lock", "node2");
        let (store, report) = open(temp.path());
        assert_eq!(report.moved, 0);
        assert_eq!(lock_files(temp.path()).len(), 2);
        assert!(matches!(
            refusal(store.lock("my vm", "node3")),
            Refusal::AlreadyLocked { .. }
        ));
        // Each holder releases its own file; the name is free after both.
        store.unlock("my vm", "node2").result.unwrap();
        assert_eq!(refusal(store.lock("my vm", "node3")), already("node1"));
        store.unlock("my vm", "node1").result.unwrap();
        store.lock("my vm", "node3").result.unwrap();
    }

    #[test]
    fn names_that_could_share_a_file_refuse_each_other() {
        let temp = tempfile::tempdir().unwrap();
        let (store, _) = open(temp.path());
        store.lock("a/b", "node1").result.unwrap();
        assert_eq!(refusal(store.lock("a%2Fb", "node2")), already("node1"));
        assert_eq!(refusal(store.unlock("a%2Fb", "node1")), Refusal::NotLocked);
        assert_eq!(holder(&store, "a%2Fb").as_deref(), Some("node1"));
        store.unlock("a/b", "node1").result.unwrap();
        store.lock("a%2Fb", "node2").result.unwrap();
        assert_eq!(refusal(store.lock("a/b", "node1")), already("node2"));
        let listed: Vec<String> = store
            .locks()
            .result
            .unwrap()
            .into_iter()
            .map(|l| l.resource)
            .collect();
        assert_eq!(listed, ["a%2Fb"]);
    }

    #[test]
    fn names_with_a_slash_meet_gocepts_path_walk() {
        let temp = tempfile::tempdir().unwrap();
        // gocept.lockd's lock on "./x" is x.resource.lock; below "sub" it
        // kept locks on "sub/...".
        write(temp.path(), "x.resource.lock", "node1");
        fs::create_dir(temp.path().join("sub")).unwrap();
        write(temp.path(), "sub/y.resource.lock", "node1");
        let (store, report) = open(temp.path());
        assert_eq!(report.subdirectories, ["sub"]);
        assert_eq!(refusal(store.lock("./x", "node2")), already("node1"));
        assert!(matches!(
            store.lock("sub/y", "node2").result,
            Err(Error::Name(NameError::LegacySubdirectory { .. }))
        ));
        store.lock("other/y", "node2").result.unwrap();
        // lockd keeps "./z" where gocept.lockd would look for it.
        store.lock("./z", "node2").result.unwrap();
        assert_eq!(refusal(store.lock("z", "node3")), already("node2"));
        assert!(temp.path().join("z.resource.lock").exists());
        assert_eq!(holder(&store, "./z").as_deref(), Some("node2"));
        store.unlock("./z", "node2").result.unwrap();
    }

    #[test]
    fn a_latin1_file_name_refuses_its_name() {
        let temp = tempfile::tempdir().unwrap();
        let name = OsStr::from_bytes(b"caf\xe9.resource.lock");
        fs::write(temp.path().join(name), "node1").unwrap();
        let (store, report) = open(temp.path());
        assert_eq!(report.foreign, ["caf\u{fffd}.resource.lock"]);
        assert_eq!(refusal(store.lock("caf\u{e9}", "node2")), already("node1"));
        assert_eq!(holder(&store, "caf\u{e9}").as_deref(), Some("node1"));
        store.lock("caf\u{e8}", "node2").result.unwrap();
    }

    #[test]
    fn a_file_filed_under_another_name_is_foreign_and_refuses() {
        let temp = tempfile::tempdir().unwrap();
        let misplaced = content_text("node1", SystemTime::UNIX_EPOCH, "y/z");
        write(temp.path(), "x.resource.lock", &misplaced);
        let (store, report) = open(temp.path());
        assert_eq!(report.foreign, ["x.resource.lock"]);
        assert_eq!(refusal(store.lock("x", "node2")), already("node1"));
        assert!(store.locks().result.unwrap().is_empty());
        store.lock("y/z", "node2").result.unwrap();
    }

    #[test]
    fn content_files_are_shared_per_client_and_resource_then_removed() {
        let temp = tempfile::tempdir().unwrap();
        let (store, _) = open(temp.path());
        let contents = || {
            fs::read_dir(temp.path())
                .unwrap()
                .filter(|e| {
                    let name = e.as_ref().unwrap().file_name();
                    name.to_string_lossy().starts_with(TEMP_PREFIX)
                })
                .count()
        };
        let before = clock::unix_seconds(SystemTime::now());
        store.lock("a", "c").result.unwrap();
        store.unlock("a", "c").result.unwrap();
        store.lock("a", "c").result.unwrap();
        let same_second = clock::unix_seconds(SystemTime::now()) == before;
        if same_second {
            assert_eq!(contents(), 1, "one content file for a's relocks");
        }
        store.lock("b", "c").result.unwrap();
        assert!(contents() >= 2, "b has its own content file");
        store.remove_temporaries();
        assert_eq!(contents(), 0);
        assert_eq!(holder(&store, "a").as_deref(), Some("c"));
        assert_eq!(holder(&store, "b").as_deref(), Some("c"));
        // A leftover from a crash is removed at the next start.
        write(temp.path(), ".lockd-1-1.tmp", "c\n");
        drop(store);
        let (_, report) = open(temp.path());
        assert_eq!((report.removed_leftovers, report.locks), (1, 2));
    }

    /// `lockd.lock` of `dir` locked through a file of its own, as another
    /// process would hold it; unlocked when dropped.
    fn directory_lock_held_elsewhere(dir: &Path) -> File {
        let other = File::open(dir.join(GLOBAL_LOCK_FILE)).unwrap();
        other.lock().unwrap();
        other
    }

    #[test]
    fn a_process_that_keeps_the_directory_lock_fails_calls_it_does_not_hang_them() {
        let temp = tempfile::tempdir().unwrap();
        let (store, _) = open(temp.path());
        store.set_lock_wait(Duration::from_millis(200));
        let other = directory_lock_held_elsewhere(temp.path());
        let start = Instant::now();
        let error = store.lock("vm1", "node1").result.unwrap_err();
        assert!(start.elapsed() >= Duration::from_millis(200));
        assert!(
            error
                .to_string()
                .contains("still held by another process after 200ms"),
            "{error}"
        );
        assert!(lock_files(temp.path()).is_empty());
        // /health asks the same question, with a wait of its own.
        assert!(store.directory_lock(Duration::from_millis(50)).is_err());
        other.unlock().unwrap();
        store.directory_lock(Duration::from_millis(50)).unwrap();
        store.lock("vm1", "node1").result.unwrap();
    }

    /// Calls waiting at once each wait the bounded time, not one after
    /// another: the wait counts from the call, not from the moment the call
    /// gets its turn at the process mutex (which another waiting call holds).
    #[test]
    fn calls_waiting_together_for_the_directory_lock_fail_together() {
        let temp = tempfile::tempdir().unwrap();
        let (store, _) = open(temp.path());
        store.set_lock_wait(Duration::from_millis(300));
        let other = directory_lock_held_elsewhere(temp.path());
        let start = Instant::now();
        std::thread::scope(|scope| {
            let calls: Vec<_> = (0..4)
                .map(|i| {
                    let store = &store;
                    scope.spawn(move || {
                        let failed = store.lock(&format!("vm{i}"), "node1").result.is_err();
                        (failed, start.elapsed())
                    })
                })
                .collect();
            for call in calls {
                let (failed, after) = call.join().unwrap();
                assert!(failed);
                assert!(after < Duration::from_millis(550), "failed after {after:?}");
            }
        });
        other.unlock().unwrap();
    }

    /// Two stores on `dir`, as two lockd processes have: `a` holds vm1 for
    /// node1, and `b` waits `wait` for what another process holds.
    fn two_stores_vm1_held_by_a(dir: &Path, wait: Duration) -> (Store, Store) {
        let (a, _) = open(dir);
        let (b, _) = open(dir);
        b.set_lock_wait(wait);
        a.lock("vm1", "node1").result.unwrap();
        (a, b)
    }

    /// `store` in a change of `resource`: its bytes held until dropped.
    fn in_a_change_of<'a>(store: &'a Store, resource: &str) -> Guard<'a> {
        let stems = names::stems(resource).unwrap();
        store
            .guard(Scope::Names(name_offsets(resource, &stems)))
            .unwrap()
    }

    /// Two lockd processes (two stores: two open files, as two processes
    /// have) exclude each other per name, not per directory: while one is in
    /// a change of vm1, the other changes vm2 at once, and fails a change of
    /// vm1 (and a fence, which needs the whole directory) after its wait.
    #[test]
    fn stores_sharing_a_directory_exclude_each_other_per_name() {
        let temp = tempfile::tempdir().unwrap();
        let (a, b) = two_stores_vm1_held_by_a(temp.path(), Duration::from_millis(200));
        let held = in_a_change_of(&a, "vm1");
        let started = Instant::now();
        b.lock("vm2", "node2").result.unwrap();
        b.unlock("vm2", "node2").result.unwrap();
        assert!(started.elapsed() < Duration::from_millis(200));
        let error = b.unlock("vm1", "node1").result.unwrap_err();
        assert!(
            error
                .to_string()
                .contains("lockd.ranges: still held by another process"),
            "{error}"
        );
        // A lock of the held name is refused by `link` without waiting.
        assert_eq!(refusal(b.lock("vm1", "node2")), already("node1"));
        let why = fencing::tests::why("test");
        let error = b.fence("node1", &why).result.unwrap_err();
        assert!(error.to_string().contains("still held"), "{error}");
        drop(held);
        b.unlock("vm1", "node1").result.unwrap();
        assert!(b.fence("node1", &why).result.unwrap().is_empty());
        // gocept.lockd's exclusive flock keeps both out.
        let legacy = directory_lock_held_elsewhere(temp.path());
        a.set_lock_wait(Duration::from_millis(200));
        for store in [&a, &b] {
            let error = store.lock("vm3", "node2").result.unwrap_err();
            assert!(
                error
                    .to_string()
                    .contains("lockd.lock: still held by another process"),
                "{error}"
            );
        }
        drop(legacy);
        b.lock("vm3", "node2").result.unwrap();
    }

    /// Nobody waits holding the process mutex: while a call waits for a
    /// name another process is changing, or for the whole directory, other
    /// calls of the same process go on.
    #[test]
    fn a_call_waiting_for_another_process_holds_up_no_other_call() {
        let temp = tempfile::tempdir().unwrap();
        let (a, b) = two_stores_vm1_held_by_a(temp.path(), Duration::from_millis(1500));
        let held = in_a_change_of(&a, "vm1");
        let why = fencing::tests::why("test");
        // Each waits its whole 1.5 s, then fails saying why.
        let waited = |call: &dyn Fn() -> Result<(), Error>| {
            let started = Instant::now();
            let error = call().unwrap_err();
            (started.elapsed(), error.to_string())
        };
        std::thread::scope(|scope| {
            let unlock = scope.spawn(|| waited(&|| b.unlock("vm1", "node1").result));
            let fence = scope.spawn(|| waited(&|| b.fence("node9", &why).result.map(drop)));
            std::thread::sleep(Duration::from_millis(200));
            let started = Instant::now();
            b.lock("vm2", "node2").result.unwrap();
            b.unlock("vm2", "node2").result.unwrap();
            let took = started.elapsed();
            assert!(took < Duration::from_millis(700), "took {took:?}");
            for (took, error) in [unlock.join().unwrap(), fence.join().unwrap()] {
                assert!(
                    took >= Duration::from_millis(1400),
                    "failed after {took:?}: {error}"
                );
                assert!(error.contains("still held by another process"), "{error}");
            }
        });
        drop(held);
        b.unlock("vm1", "node1").result.unwrap();
    }

    #[test]
    fn name_offsets_are_fnv1a_and_cover_every_name_a_change_touches() {
        // The function every lockd sharing a directory must compute alike.
        assert_eq!(name_offset(b""), 0xcbf2_9ce4_8422_2325 % RANGE_SPACE);
        assert_eq!(name_offset(b"a"), 0xaf63_dc4c_8601_ec8c % RANGE_SPACE);
        let stems = names::stems("a b").unwrap();
        assert_eq!(stems.len(), 2);
        assert_eq!(
            name_offsets("a b", &stems),
            [name_offset(b"a b"), name_offset(b"a%20b")]
        );
        let stems = names::stems("caf\u{e9}").unwrap();
        assert!(name_offsets("caf\u{e9}", &stems).contains(&name_offset(b"caf\xe9")));
        assert!(single_name("vm1", &names::stems("vm1").unwrap()));
        for name in ["a b", "a%2Fb", "./x", "caf\u{e9}", ".hidden"] {
            assert!(!single_name(name, &names::stems(name).unwrap()), "{name}");
        }
    }

    #[test]
    fn a_replaced_directory_is_followed() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("locks");
        let (store, _) = open(&dir);
        store.lock("a", "c").result.unwrap();
        store.sync().unwrap();
        fs::rename(&dir, temp.path().join("old")).unwrap();
        fs::create_dir(&dir).unwrap();
        assert_eq!(holder(&store, "a"), None);
        let observed = store.lock("a", "c");
        observed.result.unwrap();
        store.sync().unwrap();
        assert!(store.is_durable(observed.seq).unwrap());
        assert_eq!(lock_files(&dir), ["a.resource.lock"]);
        fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            store.unlock("a", "c").result,
            Err(Error::Io { .. })
        ));
    }

    /// A lock file of a batch whose marker cannot be looked up counts as
    /// held, at start-up and for a lock: it is never removed as a leftover.
    #[test]
    fn a_batch_marker_that_cannot_be_looked_up_is_no_leftover() {
        let temp = tempfile::tempdir().unwrap();
        // A batch name longer than any file name: looking its marker up
        // fails with ENAMETOOLONG, where a missing marker gives ENOENT.
        let batch = "b".repeat(300);
        let text = format!("node1\n2026-11-30T09:00:00Z\nresource=vm1\ntoken=7\nbatch={batch}\n");
        write(temp.path(), "vm1.resource.lock", &text);
        let error = Store::open(temp.path()).err().expect("start-up must fail");
        assert!(error.to_string().contains("File name too long"), "{error}");
        assert!(temp.path().join("vm1.resource.lock").exists());
        let (store, _) = open(&temp.path().join("later"));
        fs::copy(
            temp.path().join("vm1.resource.lock"),
            temp.path().join("later/vm1.resource.lock"),
        )
        .unwrap();
        assert!(store.lock("vm1", "node2").result.is_err());
        assert!(temp.path().join("later/vm1.resource.lock").exists());
    }

    /// A change made in a directory that is replaced before its fsync is
    /// lost, not acknowledged; changes made after in the new directory are.
    #[test]
    fn changes_in_a_directory_replaced_before_their_fsync_are_lost() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("locks");
        let (store, _) = open(&dir);
        store.lock("held", "c1").result.unwrap();
        let synced = store.sync().unwrap();
        let made = store.lock("new", "c1");
        made.result.unwrap();
        fs::rename(&dir, temp.path().join("old")).unwrap();
        fs::create_dir(&dir).unwrap();
        assert!(matches!(store.sync(), Err(Error::Io { .. })));
        assert!(store.is_durable(made.seq).is_err());
        assert!(store.is_durable(synced).unwrap());
        // A later fsync does not make it durable: it is in the old directory.
        let again = store.lock("held", "c2");
        again.result.unwrap();
        assert_eq!(store.sync().unwrap(), again.seq);
        assert!(store.is_durable(made.seq).is_err());
        assert!(store.is_durable(again.seq).unwrap());
        assert_eq!(lock_files(&dir), ["held.resource.lock"]);
    }
}
