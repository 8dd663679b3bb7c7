//! The lock file format: what lockd writes into a lock file, how a lock
//! file is read back, and which resource a lock file belongs to.

use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::SystemTime;

use crate::clock::Utc;
use crate::names;

/// The most of a lock file that is read: a client string and a few lines.
const MAX_LOCK_FILE: u64 = 4096;

/// What lockd writes into a lock file. Under the name itself, the bare
/// client string, byte for byte as gocept.lockd wrote it, so that a legacy
/// daemon sharing the directory reads its holder right and its holder can
/// release it there too. Under an encoded name (a name with a `/`), the
/// client, the time and the resource name (percent-encoded, one line of
/// ASCII), so that it cannot be mistaken for the lock of the name its file
/// name spells.
pub(super) fn content_text(client: &str, since: SystemTime, resource: &str) -> String {
    if names::is_component(resource) {
        return client.to_owned();
    }
    let resource = names::encode_any(resource);
    format!(
        "{client}\n{}\n{RESOURCE_KEY}{resource}\n",
        Utc::from_system(since).rfc3339()
    )
}

/// What lockd writes into the lock file of a grant with a fencing token:
/// the named form with `token=` and, for a grant of `acquire_many`, the
/// batch it belongs to (see [`Grant`]).
pub(super) fn grant_text(client: &str, since: SystemTime, resource: &str, grant: &Grant) -> String {
    let mut text = format!(
        "{client}\n{}\n{RESOURCE_KEY}{}\n{TOKEN_KEY}{}\n",
        Utc::from_system(since).rfc3339(),
        names::encode_any(resource),
        grant.token
    );
    if let Some(batch) = &grant.batch {
        text.push_str(&format!("{BATCH_KEY}{batch}\n"));
    }
    text
}

/// The key of the line that names a lock file's resource.
pub(super) const RESOURCE_KEY: &str = "resource=";
const TOKEN_KEY: &str = "token=";
const BATCH_KEY: &str = "batch=";

/// The fencing token of a grant, and the `acquire_many` batch it belongs
/// to: such a grant counts only once the batch's marker file exists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Grant {
    /// 0 for a lock without a token (taken with `lock`, or by gocept.lockd).
    pub token: u32,
    pub batch: Option<String>,
}

/// What a lock file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Record {
    pub holder: String,
    pub since: SystemTime,
    pub kind: Kind,
    pub grant: Grant,
}

/// Who wrote a lock file, as far as its content tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind {
    /// The bare client string, under the name itself: gocept.lockd's, or
    /// lockd's for a name without a `/`.
    Legacy,
    /// lockd 0.1: client and time, under the encoded name.
    Encoded,
    /// lockd: client, time and the resource name, if it decodes.
    Named(Option<String>),
}

/// The resource a lock file under `stem` is the lock of, if any. A file
/// that names its resource is that resource's, if it sits under one of the
/// resource's stems; a file of lockd 0.1 is the decoded name's; any other
/// file (gocept.lockd's) is the lock of the name as it stands.
pub(super) fn owner(stem: &str, record: &Record) -> Option<String> {
    match &record.kind {
        Kind::Legacy => Some(stem.to_owned()),
        Kind::Encoded => Some(names::decode(stem).unwrap_or_else(|| stem.to_owned())),
        Kind::Named(Some(resource)) => names::stems(resource)
            .is_ok_and(|stems| stems.iter().any(|s| s == stem))
            .then(|| resource.clone()),
        Kind::Named(None) => None,
    }
}

/// Read a lock file. gocept.lockd wrote the bare client string and read it
/// back stripped; its lock time is the file's modification time.
pub(super) fn read_lock_file(path: &Path) -> io::Result<Record> {
    // Without O_NONBLOCK, opening a FIFO put there by hand would block with
    // the mutex and the flock held, and hang every lockd on the directory.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    read_open_lock_file(file)
}

/// [`read_lock_file`] of `name` in the directory `dir`.
pub(super) fn read_lock_file_at(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &std::ffi::OsStr,
) -> io::Result<Record> {
    let file = crate::sys::open_at(dir, name, libc::O_RDONLY | libc::O_NONBLOCK, 0)?;
    read_open_lock_file(file)
}

fn read_open_lock_file(file: std::fs::File) -> io::Result<Record> {
    let (is_file, modified) = crate::sys::cached_kind_and_mtime(file.as_fd())?;
    if !is_file {
        return Err(io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    (&file).take(MAX_LOCK_FILE).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.split('\n').collect();
    let since = lines
        .get(1)
        .and_then(|line| Utc::parse_rfc3339(line.trim()));
    let value = |key: &str| lines[1..].iter().find_map(|line| line.strip_prefix(key));
    let named = value(RESOURCE_KEY);
    let (holder, kind) = match (since, named) {
        (Some(_), Some(resource)) => (lines[0], Kind::Named(names::decode(resource))),
        (Some(_), None) => (lines[0], Kind::Encoded),
        (None, _) => (&*text, Kind::Legacy),
    };
    let since = match since {
        Some(utc) => utc.to_system(),
        None => modified,
    };
    let grant = match kind {
        Kind::Named(_) => Grant {
            // A token line that does not read counts as the largest
            // token: nothing matches it, and no later grant can go below
            // whatever it was.
            token: value(TOKEN_KEY).map_or(0, |t| t.trim().parse().unwrap_or(u32::MAX)),
            batch: value(BATCH_KEY).map(str::to_owned),
        },
        _ => Grant::default(),
    };
    Ok(Record {
        grant,
        // Python's strip(), as gocept.lockd read it.
        holder: holder
            .trim_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c'])
            .to_owned(),
        since,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, file: &str, content: &str) {
        std::fs::write(dir.join(file), content).unwrap();
    }

    #[test]
    fn the_kind_of_a_lock_file_decides_its_owner() {
        let record = |content: &str| {
            let temp = tempfile::tempdir().unwrap();
            write(temp.path(), "f", content);
            read_lock_file(&temp.path().join("f")).unwrap()
        };
        let legacy = record(" node1\n");
        assert_eq!(
            (legacy.holder.as_str(), &legacy.kind),
            ("node1", &Kind::Legacy)
        );
        assert_eq!(owner("a%20b", &legacy).as_deref(), Some("a%20b"));
        let old = record("node1\n2026-01-02T03:04:05Z\n");
        assert_eq!(old.kind, Kind::Encoded);
        assert_eq!(owner("a%20b", &old).as_deref(), Some("a b"));
        assert_eq!(owner("a b", &old).as_deref(), Some("a b"));
        let bare = record(&content_text("node1", SystemTime::UNIX_EPOCH, "a b"));
        assert_eq!((bare.holder.as_str(), &bare.kind), ("node1", &Kind::Legacy));
        let named = record(&content_text("node1", SystemTime::UNIX_EPOCH, "a/b"));
        assert_eq!(named.kind, Kind::Named(Some("a/b".into())));
        assert_eq!(owner("a%2Fb", &named).as_deref(), Some("a/b"));
        assert_eq!(owner("a/b", &named), None);
        assert_eq!(owner("c", &named), None);
        let broken = record("node1\n2026-01-02T03:04:05Z\nresource=%zz\n");
        assert_eq!(owner("x", &broken), None);
    }
}
