//! What the watchdog and the metrics ask of the lock directory: whether
//! its write path works, and how old the oldest lock is. Neither is part of
//! the lock rule; both run off the request path.

use std::fs;
use std::io;
use std::time::{Duration, SystemTime};

use super::{Error, Scope, Store, create_durable};
use crate::names::LOCK_SUFFIX;

impl Store {
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

    /// Whether `lockd.lock` can be taken within `wait`, shared, as every
    /// lock and unlock takes it: on a shared directory, another process
    /// (gocept.lockd, or a lockd starting or fencing, on another node,
    /// stopped or cut off) may keep it exclusively, and every call fails
    /// meanwhile. For `/health`; it says nothing of this process, so it
    /// does not stop the watchdog.
    pub fn directory_lock(&self, wait: Duration) -> Result<(), Error> {
        self.guard_within(wait, Scope::Names(Vec::new())).map(drop)
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
}
