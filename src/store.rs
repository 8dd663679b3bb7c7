//! The lock core: one file per held lock in the lock directory.
//!
//! A held lock is the file `<dir>/<encoded resource>.resource.lock`; its first
//! line is the client, its second the UTC time the lock was taken. Taking a
//! lock hard-links a fully written, fsync'd content file to that name: `link`
//! fails if the name exists, so the check and the change are one atomic step,
//! and a lock file can never be seen half-written. Releasing unlinks it.
//!
//! Every check-and-change runs under the process-wide mutex and an `flock` on
//! `<dir>/lockd.lock` (as gocept.lockd did), so threads and other processes
//! sharing the directory never grant a resource twice. Neither is held across
//! an fsync: the directory is fsync'd afterwards by [`Store::sync`], once for
//! every change made since the last sync (group commit). Each result carries
//! the change number it observed; a reply may be sent once
//! [`Store::is_durable`] says that change is on stable storage.
//!
//! Content files are named `.lockd-<pid>-<n>.tmp`. One is written per client
//! and second and shared by hard links, so a burst of locks costs one data
//! fsync, not one each. They are removed when their second has passed, and at
//! start-up whatever an earlier run left behind is removed.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::SystemTime;

use crate::clock::{self, Utc};
use crate::names::{self, LOCK_SUFFIX, NameError};

/// The file locked around every check-and-change, shared with gocept.lockd.
pub const GLOBAL_LOCK_FILE: &str = "lockd.lock";

const TEMP_PREFIX: &str = ".lockd-";
const TEMP_SUFFIX: &str = ".tmp";

/// The most of a lock file that is read: a client string and a time.
const MAX_LOCK_FILE: u64 = 4096;

/// A held lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    pub resource: String,
    pub client: String,
    pub since: SystemTime,
}

/// The three refusals of the seed contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    AlreadyLocked { holder: String },
    NotHolder { holder: String, client: String },
    NotLocked,
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
        }
    }
}

/// Why an operation did not happen.
#[derive(Debug)]
pub enum Error {
    /// The seed contract says no.
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
    /// Lock files whose names lockd cannot map back to a resource name.
    pub foreign: Vec<String>,
}

/// The lock directory.
pub struct Store {
    dir: PathBuf,
    /// The directory, open for fsync; replaced if the directory is.
    dir_file: RwLock<Arc<File>>,
    core: Mutex<Core>,
    synced: AtomicU64,
    contents: Mutex<HashMap<String, Content>>,
    temp_counter: AtomicU64,
}

struct Core {
    global_lock: File,
    /// Device and inode of the directory `dir_file` and `global_lock` are in.
    dir_id: (u64, u64),
    changes: u64,
}

/// A durable content file that new lock files of one client link to.
struct Content {
    second: i64,
    path: PathBuf,
}

/// The process mutex and the directory's flock, released on drop.
struct Guard<'a> {
    core: MutexGuard<'a, Core>,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        // SAFETY: flock on a file descriptor this Core owns.
        unsafe { libc::flock(self.core.global_lock.as_raw_fd(), libc::LOCK_UN) };
    }
}

impl Store {
    /// Open (and create) the lock directory, and remove leftovers of writes
    /// an earlier run did not finish.
    pub fn open(dir: &Path) -> Result<(Store, OpenReport), Error> {
        fs::create_dir_all(dir).map_err(|e| {
            // EEXIST: something that is not a directory has the name.
            let e = match e.kind() {
                io::ErrorKind::AlreadyExists => io::Error::new(
                    io::ErrorKind::NotADirectory,
                    "it exists and is not a directory",
                ),
                _ => e,
            };
            Error::io("create the lock directory", dir, e)
        })?;
        let dir = fs::canonicalize(dir).map_err(|e| Error::io("resolve", dir, e))?;
        let (dir_file, global_lock, dir_id) = open_dir(&dir)?;
        let store = Store {
            dir,
            dir_file: RwLock::new(Arc::new(dir_file)),
            core: Mutex::new(Core {
                global_lock,
                dir_id,
                changes: 0,
            }),
            synced: AtomicU64::new(0),
            contents: Mutex::new(HashMap::new()),
            temp_counter: AtomicU64::new(0),
        };
        let report = store.recover()?;
        Ok((store, report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn recover(&self) -> Result<OpenReport, Error> {
        let mut report = OpenReport::default();
        let _guard = self.guard()?;
        let entries = fs::read_dir(&self.dir).map_err(|e| Error::io("list", &self.dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", &self.dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX) {
                let path = entry.path();
                match fs::remove_file(&path) {
                    Ok(()) => report.removed_leftovers += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("remove the leftover", &path, e)),
                }
            } else if name.ends_with(LOCK_SUFFIX) {
                match names::resource_of_file(&name) {
                    Some(_) => report.locks += 1,
                    None => report.foreign.push(name.into_owned()),
                }
            }
        }
        if report.removed_leftovers > 0 {
            self.dir_file()
                .sync_all()
                .map_err(|e| Error::io("fsync", &self.dir, e))?;
        }
        report.foreign.sort();
        Ok(report)
    }

    fn guard(&self) -> Result<Guard<'_>, Error> {
        let core = self.core.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            // SAFETY: flock on a file descriptor this Core owns.
            if unsafe { libc::flock(core.global_lock.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Guard { core });
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(Error::io("lock", &self.dir.join(GLOBAL_LOCK_FILE), error));
            }
        }
    }

    /// If the lock directory was removed and made anew (by hand, or by a
    /// tool), reopen it: otherwise fsyncs and the flock would go to the old,
    /// deleted directory, and acknowledged changes would not be durable.
    /// Checked before every fsync, and when a file is not found (so that a
    /// directory that has gone is a failure, not "Resource not locked").
    /// Returns whether it was replaced.
    fn follow_directory(&self, core: &mut Core) -> Result<bool, Error> {
        let meta = fs::metadata(&self.dir)
            .map_err(|e| Error::io("open the lock directory", &self.dir, e))?;
        if (meta.dev(), meta.ino()) == core.dir_id {
            return Ok(false);
        }
        let (dir_file, global_lock, dir_id) = open_dir(&self.dir)?;
        log::warn!(
            "the lock directory {} was replaced; lockd now uses the new one",
            self.dir.display()
        );
        core.global_lock = global_lock;
        core.dir_id = dir_id;
        *self
            .dir_file
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(dir_file);
        Ok(true)
    }

    fn dir_file(&self) -> Arc<File> {
        Arc::clone(&self.dir_file.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The number of the last change, read after the observation it covers.
    fn current_seq(&self) -> u64 {
        self.core
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .changes
    }

    fn lock_path(&self, resource: &str) -> Result<PathBuf, Error> {
        let stem = names::encode(resource).map_err(Error::Name)?;
        Ok(self.dir.join(stem + LOCK_SUFFIX))
    }

    /// Take the lock on `resource` for `client`.
    pub fn lock(&self, resource: &str, client: &str) -> Observed<()> {
        let checked = self.lock_path(resource).and_then(|path| {
            names::check_client(client).map_err(Error::Name)?;
            Ok(path)
        });
        let path = match checked {
            Ok(path) => path,
            Err(error) => return Observed::failed(error),
        };
        let now = SystemTime::now();
        let mut fresh = false;
        loop {
            let content = match self.content_file(client, now, fresh) {
                Ok(content) => content,
                Err(error) => return Observed::failed(error),
            };
            let mut guard = match self.guard() {
                Ok(guard) => guard,
                Err(error) => return Observed::failed(error),
            };
            let result = match fs::hard_link(&content, &path) {
                Ok(()) => {
                    guard.core.changes += 1;
                    Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match read_lock_file(&path) {
                    Ok((holder, _)) => Err(Error::Refused(Refusal::AlreadyLocked { holder })),
                    Err(e) => Err(Error::io("read", &path, e)),
                },
                // Another process's start-up may have removed our content file.
                Err(e) if e.kind() == io::ErrorKind::NotFound && !fresh && !content.exists() => {
                    fresh = true;
                    continue;
                }
                Err(e) => Err(Error::io("link", &path, e)),
            };
            return Observed {
                result,
                seq: guard.core.changes,
            };
        }
    }

    /// Release the lock on `resource` held by `client`.
    pub fn unlock(&self, resource: &str, client: &str) -> Observed<()> {
        let path = match self.lock_path(resource) {
            Ok(path) => path,
            Err(error) => return Observed::failed(error),
        };
        let mut followed = false;
        loop {
            let mut guard = match self.guard() {
                Ok(guard) => guard,
                Err(error) => return Observed::failed(error),
            };
            let result = match read_lock_file(&path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    match self.follow_directory(&mut guard.core) {
                        Ok(true) if !followed => {
                            followed = true;
                            continue;
                        }
                        Ok(_) => Err(Error::Refused(Refusal::NotLocked)),
                        Err(error) => Err(error),
                    }
                }
                Err(e) => Err(Error::io("read", &path, e)),
                Ok((holder, _)) if holder != client => Err(Error::Refused(Refusal::NotHolder {
                    holder,
                    client: client.to_owned(),
                })),
                Ok(_) => match fs::remove_file(&path) {
                    Ok(()) => {
                        guard.core.changes += 1;
                        Ok(())
                    }
                    Err(e) => Err(Error::io("remove", &path, e)),
                },
            };
            return Observed {
                result,
                seq: guard.core.changes,
            };
        }
    }

    /// Who holds `resource`, if anyone.
    pub fn status(&self, resource: &str) -> Observed<Option<Lock>> {
        let path = match self.lock_path(resource) {
            Ok(path) => path,
            Err(error) => return Observed::failed(error),
        };
        let result = match read_lock_file(&path) {
            Ok((client, since)) => Ok(Some(Lock {
                resource: resource.to_owned(),
                client,
                since,
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
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
            Err(e) => Err(Error::io("read", &path, e)),
        };
        Observed {
            result,
            seq: self.current_seq(),
        }
    }

    /// Every held lock, sorted by resource name.
    pub fn locks(&self) -> Observed<Vec<Lock>> {
        let result = self.scan();
        Observed {
            result,
            seq: self.current_seq(),
        }
    }

    fn scan(&self) -> Result<Vec<Lock>, Error> {
        let entries = fs::read_dir(&self.dir).map_err(|e| Error::io("list", &self.dir, e))?;
        let mut locks = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", &self.dir, e))?;
            let name = entry.file_name();
            let Some(resource) = name.to_str().and_then(names::resource_of_file) else {
                continue;
            };
            let path = entry.path();
            match read_lock_file(&path) {
                Ok((client, since)) => locks.push(Lock {
                    resource,
                    client,
                    since,
                }),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("read", &path, e)),
            }
        }
        locks.sort_unstable_by(|a, b| a.resource.cmp(&b.resource));
        Ok(locks)
    }

    /// Make every change made so far durable: fsync the lock directory.
    /// Returns the number of the last change it covers.
    pub fn sync(&self) -> Result<u64, Error> {
        let target = {
            let mut core = self.core.lock().unwrap_or_else(PoisonError::into_inner);
            self.follow_directory(&mut core)?;
            core.changes
        };
        self.dir_file()
            .sync_all()
            .map_err(|e| Error::io("fsync", &self.dir, e))?;
        self.synced.fetch_max(target, Ordering::AcqRel);
        Ok(target)
    }

    /// Whether change `seq` (and every one before it) is on stable storage.
    pub fn is_durable(&self, seq: u64) -> bool {
        self.synced.load(Ordering::Acquire) >= seq
    }

    /// Exercise the write path: create, write, fsync and remove a probe file,
    /// and fsync the directory. Used by health checks and the watchdog.
    pub fn probe(&self) -> Result<(), Error> {
        let path = self.temp_path("probe-");
        let written = create_durable(&path, b"probe\n");
        let removed = match fs::remove_file(&path) {
            // Another process's start-up removes leftover `.lockd-*.tmp`
            // files, the probe file included.
            Err(e) if e.kind() == io::ErrorKind::NotFound && written.is_ok() => Ok(()),
            other => other,
        };
        written?;
        removed.map_err(|e| Error::io("remove", &path, e))?;
        self.dir_file()
            .sync_all()
            .map_err(|e| Error::io("fsync", &self.dir, e))
    }

    /// When the oldest held lock was taken, for the metrics. Reads only the
    /// directory and each lock file's modification time (one `stat` each,
    /// no open): a lock file shares the inode of the content file written
    /// when it was taken, and gocept.lockd's files have no other time.
    pub fn oldest_lock(&self) -> Result<Option<SystemTime>, Error> {
        let entries = fs::read_dir(&self.dir).map_err(|e| Error::io("list", &self.dir, e))?;
        let mut oldest: Option<SystemTime> = None;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", &self.dir, e))?;
            let name = entry.file_name();
            if !name.to_str().is_some_and(|n| n.ends_with(LOCK_SUFFIX)) {
                continue;
            }
            match entry.metadata().and_then(|m| m.modified()) {
                Ok(time) => oldest = Some(oldest.map_or(time, |o| o.min(time))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("stat", &entry.path(), e)),
            }
        }
        Ok(oldest)
    }

    /// `.lockd-<kind><pid>-<n>.tmp`: content files have no kind, self-test
    /// files `probe-`. Start-up removes them all.
    fn temp_path(&self, kind: &str) -> PathBuf {
        let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!(
            "{TEMP_PREFIX}{kind}{}-{n}{TEMP_SUFFIX}",
            std::process::id()
        ))
    }

    /// A durable content file for `client` locking at `now`.
    fn content_file(&self, client: &str, now: SystemTime, fresh: bool) -> Result<PathBuf, Error> {
        let second = clock::unix_seconds(now);
        if !fresh {
            let contents = self.contents.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(content) = contents.get(client).filter(|c| c.second == second) {
                return Ok(content.path.clone());
            }
        }
        let path = self.temp_path("");
        let text = format!("{client}\n{}\n", Utc::from_system(now).rfc3339());
        create_durable(&path, text.as_bytes())?;
        let mut contents = self.contents.lock().unwrap_or_else(PoisonError::into_inner);
        let replaced = contents.insert(
            client.to_owned(),
            Content {
                second,
                path: path.clone(),
            },
        );
        if let Some(old) = replaced {
            // Lock files linked to it keep their content; a link racing with
            // this removal fails with NotFound and is retried.
            let _ = fs::remove_file(old.path);
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

/// Open the lock directory (for fsync) and its `lockd.lock`, and say which
/// directory they are in.
fn open_dir(dir: &Path) -> Result<(File, File, (u64, u64)), Error> {
    let dir_file = File::open(dir).map_err(|e| Error::io("open the lock directory", dir, e))?;
    let meta = dir_file
        .metadata()
        .map_err(|e| Error::io("open the lock directory", dir, e))?;
    let lock_path = dir.join(GLOBAL_LOCK_FILE);
    let global_lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(&lock_path)
        .map_err(|e| Error::io("open", &lock_path, e))?;
    Ok((dir_file, global_lock, (meta.dev(), meta.ino())))
}

fn create_durable(path: &Path, data: &[u8]) -> Result<(), Error> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| Error::io("create", path, e))?;
    file.write_all(data)
        .map_err(|e| Error::io("write", path, e))?;
    file.sync_all().map_err(|e| Error::io("fsync", path, e))
}

/// The holder and lock time recorded in a lock file. gocept.lockd wrote the
/// bare client string and read it back stripped; lockd adds a line with the
/// time, and falls back to the file's modification time without one.
fn read_lock_file(path: &Path) -> io::Result<(String, SystemTime)> {
    // Without O_NONBLOCK, opening a FIFO put there by hand would block with
    // the mutex and the flock held, and hang every lockd on the directory.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    (&file).take(MAX_LOCK_FILE).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines = text.split('\n');
    let holder = lines.next().unwrap_or_default().trim().to_owned();
    let since = match lines
        .next()
        .and_then(|line| Utc::parse_rfc3339(line.trim()))
    {
        Some(utc) => utc.to_system(),
        None => file.metadata()?.modified()?,
    };
    Ok((holder, since))
}
