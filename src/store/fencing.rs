//! Fencing: grants with a token that only grows, the checks and releases
//! that name it, and the operator's ways out (break a lock, fence a client).
//!
//! A grant's token is written into its lock file (the named form, see
//! [`grant_text`]). When a lock with a token ends (`unlock`,
//! `release`, `break_lock`, `fence`) its lock file is not removed but renamed
//! to `<stem>.resource.last`, replacing the one before: the resource's last
//! token stays on disk, and the next grant takes the larger of it and
//! nothing else, plus one. A rename is a change of the directory, made
//! durable by the same group commit as the lock itself, so a token costs no
//! fsync of its own; and every process sharing the directory reads the same
//! file under the same `flock`.
//!
//! `acquire_many` writes every lock file with the id of its batch and, once
//! all are linked, creates the empty marker `lockd.batch.<id>`. A lock file
//! of a batch counts only while its marker exists, so a crash half-way
//! leaves none of the batch held. Metadata changes in one directory reach
//! stable storage in the order they were made (ext4's and XFS's journals,
//! NFS's synchronous metadata operations), so a durable marker means every
//! link before it is durable too.
//!
//! Every `break_lock` and `fence` appends a line of JSON to
//! `lockd.audit.jsonl`, fsync'd before the reply.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use super::record::{Grant, grant_text};
use super::{
    Error, Found, Guard, Linked, Lock, Observed, Refusal, Scope, Store, file_name, name_offset,
    name_offsets,
};
use crate::clock::Utc;
use crate::names::{self, LOCK_SUFFIX, NameError};

/// The largest token: XML-RPC's `<int>` is 32 bits, signed.
pub const MAX_TOKEN: u32 = i32::MAX as u32;

/// The most resources one `acquire_many` takes.
pub const MAX_BATCH: usize = 1024;

/// The suffix of the file that keeps a resource's last token.
const LAST_SUFFIX: &str = ".resource.last";

/// The audit trail of `break_lock` and `fence`.
pub const AUDIT_FILE: &str = "lockd.audit.jsonl";

/// The prefix of a batch's marker file.
const BATCH_PREFIX: &str = "lockd.batch.";

/// Who asked for a break or a fence, and why: for the audit trail.
#[derive(Debug, Clone)]
pub struct Reason<'a> {
    pub reason: &'a str,
    /// The caller's address, as the server saw it.
    pub caller: &'a str,
}

/// One resource of a grant being prepared: its stems and content file.
struct Prepared {
    resource: String,
    stems: Vec<String>,
    token: u32,
    since: SystemTime,
    content: PathBuf,
}

impl Store {
    /// Take the lock on `resource` for `client`, with a fencing token.
    pub fn acquire(&self, resource: &str, client: &str) -> Observed<Lock> {
        let resources = [resource.to_owned()];
        let observed = self.acquire_all(&resources, client, None);
        Observed {
            result: observed
                .result
                .map(|mut locks| locks.remove(0))
                .map_err(|e| match e {
                    // One resource: the legacy refusal, without the name.
                    Error::Refused(Refusal::ManyAlreadyLocked { holder, .. }) => {
                        Error::Refused(Refusal::AlreadyLocked { holder })
                    }
                    other => other,
                }),
            seq: observed.seq,
        }
    }

    /// Take the locks on all `resources` for `client`, or none of them.
    pub fn acquire_many(&self, resources: &[String], client: &str) -> Observed<Vec<Lock>> {
        if resources.is_empty() || resources.len() > MAX_BATCH {
            return Observed::failed(Error::Name(NameError::BatchSize {
                len: resources.len(),
                max: MAX_BATCH,
            }));
        }
        for (i, resource) in resources.iter().enumerate() {
            if resources[..i].contains(resource) {
                return Observed::failed(Error::Name(NameError::Duplicate {
                    resource: resource.clone(),
                }));
            }
        }
        let batch = (resources.len() > 1).then(|| self.batch_id());
        self.acquire_all(resources, client, batch)
    }

    fn acquire_all(
        &self,
        resources: &[String],
        client: &str,
        batch: Option<String>,
    ) -> Observed<Vec<Lock>> {
        if let Err(error) = names::check_client(client) {
            return Observed::failed(Error::Name(error));
        }
        let mut checked = Vec::with_capacity(resources.len());
        let mut offsets = Vec::new();
        for resource in resources {
            let stems = names::stems(resource)
                .map_err(Error::Name)
                .and_then(|stems| self.check_subdirectory(resource, stems));
            match stems {
                Ok(stems) => {
                    offsets.extend(name_offsets(resource, &stems));
                    checked.push((resource.clone(), stems));
                }
                Err(error) => return Observed::failed(error),
            }
        }
        if let Err(error) = self.current_directory() {
            return Observed::failed(error);
        }
        // Tokens are read and content files written outside the guard (no
        // fsync under it); a release that comes in between is seen under the
        // guard, and the grant is prepared again.
        for _ in 0..100 {
            let prepared = match self.prepare(&checked, client, batch.as_deref()) {
                Ok(prepared) => prepared,
                Err(error) => return Observed::failed(error),
            };
            let guard = match self.guard(Scope::Names(offsets.clone())) {
                Ok(guard) => guard,
                Err(error) => {
                    self.remove_contents(&prepared);
                    return Observed::failed(error);
                }
            };
            let outcome = self.commit(guard, &prepared, client, batch.as_deref());
            self.remove_contents(&prepared);
            match outcome {
                Some(observed) => return observed,
                None => continue,
            }
        }
        Observed::failed(Error::Refused(Refusal::Contended))
    }

    /// Read each resource's last token and write its content file.
    fn prepare(
        &self,
        checked: &[(String, Vec<String>)],
        client: &str,
        batch: Option<&str>,
    ) -> Result<Vec<Prepared>, Error> {
        let mut prepared: Vec<Prepared> = Vec::with_capacity(checked.len());
        for (resource, stems) in checked {
            let next = self.last_token(&stems[0]).and_then(|last| {
                last.checked_add(1)
                    .filter(|&t| t <= MAX_TOKEN)
                    .ok_or_else(|| {
                        Error::Refused(Refusal::TokensExhausted {
                            resource: resource.clone(),
                        })
                    })
            });
            let token = match next {
                Ok(token) => token,
                Err(error) => {
                    self.remove_contents(&prepared);
                    return Err(error);
                }
            };
            let since = SystemTime::now();
            let grant = Grant {
                token,
                batch: batch.map(str::to_owned),
            };
            let content = self.temp_path("");
            let text = grant_text(client, since, resource, &grant);
            if let Err(error) = self.at().create(&content, text.as_bytes(), None) {
                self.remove_contents(&prepared);
                return Err(error);
            }
            prepared.push(Prepared {
                resource: resource.clone(),
                stems: stems.clone(),
                token,
                since,
                content,
            });
        }
        Ok(prepared)
    }

    /// Under the guard: link every prepared lock file, or none. `None`
    /// means prepare again (a token moved on, or a content file went).
    fn commit(
        &self,
        mut guard: Guard<'_>,
        prepared: &[Prepared],
        client: &str,
        batch: Option<&str>,
    ) -> Option<Observed<Vec<Lock>>> {
        let failed = |error| {
            Some(Observed {
                result: Err(error),
                seq: 0,
            })
        };
        for p in prepared {
            match self.last_token(&p.stems[0]) {
                Ok(last) if last >= p.token => return None,
                Ok(_) => {}
                Err(error) => return failed(error),
            }
        }
        let mut linked: Vec<PathBuf> = Vec::with_capacity(prepared.len());
        for p in prepared {
            let refusal = match self.link_if_free(&p.resource, &p.stems, &p.content, true) {
                Ok(Linked::Done) => {
                    linked.push(self.lock_path(&p.stems[0]));
                    continue;
                }
                Ok(Linked::InTheWay(record)) => Error::Refused(Refusal::ManyAlreadyLocked {
                    resource: p.resource.clone(),
                    holder: record.holder,
                }),
                Ok(Linked::ContentGone | Linked::NeedNames) => {
                    self.unlink_all(&linked);
                    return None;
                }
                Err(error) => error,
            };
            self.unlink_all(&linked);
            return failed(refusal);
        }
        if let Some(batch) = batch {
            let marker = self.batch_marker(batch);
            let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
            if let Err(e) = crate::sys::open_at(self.at().fd(), file_name(&marker), flags, 0o644) {
                self.unlink_all(&linked);
                return failed(Error::io("create", &marker, e));
            }
        }
        guard.core.changes += 1;
        let locks = prepared
            .iter()
            .map(|p| Lock {
                resource: p.resource.clone(),
                client: client.to_owned(),
                since: p.since,
                token: p.token,
            })
            .collect();
        Some(Observed {
            result: Ok(locks),
            seq: guard.core.changes,
        })
    }

    fn remove_contents(&self, prepared: &[Prepared]) {
        self.unlink_all(prepared.iter().map(|p| &p.content));
    }

    /// Remove each of `paths` from the lock directory, ignoring failures:
    /// the caller is already undoing a change that failed.
    fn unlink_all<'p>(&self, paths: impl IntoIterator<Item = &'p PathBuf>) {
        let at = self.at();
        for path in paths {
            let _ = at.remove(path);
        }
    }

    /// Whether `resource` is held by `client` under `token` right now.
    pub fn check(&self, resource: &str, client: &str, token: u32) -> Observed<bool> {
        let stems = match names::stems(resource) {
            Ok(stems) => stems,
            Err(error) => return Observed::failed(Error::Name(error)),
        };
        if let Err(error) = self.current_directory() {
            return Observed::failed(error);
        }
        let result = self.find(resource, &stems).map(|found| {
            found.is_some_and(|f| {
                f.own && f.record.holder == client && token != 0 && f.record.grant.token == token
            })
        });
        Observed {
            result,
            seq: self.current_seq(),
        }
    }

    /// Release the lock on `resource` that `client` holds under `token`.
    pub fn release(&self, resource: &str, client: &str, token: u32) -> Observed<()> {
        self.end_grant(
            resource,
            |found| {
                let record = &found.record;
                if record.holder != client {
                    Err(Refusal::NotHolder {
                        holder: record.holder.clone(),
                        client: client.to_owned(),
                    })
                } else if record.grant.token != token {
                    Err(Refusal::OtherGrant {
                        holder: record.holder.clone(),
                        held: record.grant.token,
                        given: token,
                    })
                } else {
                    Ok(())
                }
            },
            |_| Ok(()),
            false,
        )
        .map_result(|_| ())
    }

    /// Remove the lock on `resource` if `holder` holds it under `token`
    /// (0: a lock without a token), and record why.
    pub fn break_lock(
        &self,
        resource: &str,
        holder: &str,
        token: u32,
        why: &Reason<'_>,
    ) -> Observed<Lock> {
        if why.reason.trim().is_empty() {
            return Observed::failed(Error::Name(NameError::NoReason));
        }
        self.end_grant(
            resource,
            |found| {
                let record = &found.record;
                if record.holder == holder && record.grant.token == token {
                    Ok(())
                } else {
                    Err(Refusal::NotThatGrant {
                        holder: record.holder.clone(),
                        token: record.grant.token,
                        given_holder: holder.to_owned(),
                        given_token: token,
                    })
                }
            },
            |lock| self.audit("break_lock", lock, why),
            true,
        )
    }

    /// End the lock on `resource` if `allowed` says so, then run `after`
    /// on it, all under the guard: the common part of `release` and
    /// `break_lock`.
    fn end_grant(
        &self,
        resource: &str,
        allowed: impl Fn(&Found) -> Result<(), Refusal>,
        after: impl FnOnce(&Lock) -> Result<(), Error>,
        audited: bool,
    ) -> Observed<Lock> {
        let stems = match names::stems(resource) {
            Ok(stems) => stems,
            Err(error) => return Observed::failed(Error::Name(error)),
        };
        if let Err(error) = self.current_directory() {
            return Observed::failed(error);
        }
        let mut offsets = name_offsets(resource, &stems);
        if audited {
            // Appends to the audit trail from several nodes take turns.
            offsets.push(name_offset(AUDIT_FILE.as_bytes()));
        }
        let mut guard = match self.guard(Scope::Names(offsets)) {
            Ok(guard) => guard,
            Err(error) => return Observed::failed(error),
        };
        let result = match self.find(resource, &stems) {
            Err(error) => Err(error),
            Ok(Some(found)) if found.own => match allowed(&found) {
                Ok(()) => self.retire(&found).and_then(|()| {
                    guard.core.changes += 1;
                    let lock = lock_of(resource, &found);
                    after(&lock)?;
                    Ok(lock)
                }),
                Err(refusal) => Err(Error::Refused(refusal)),
            },
            Ok(_) => Err(Error::Refused(Refusal::NotLocked)),
        };
        Observed {
            result,
            seq: guard.core.changes,
        }
    }

    /// Release every lock `client` holds, and record why.
    pub fn fence(&self, client: &str, why: &Reason<'_>) -> Observed<Vec<Lock>> {
        if why.reason.trim().is_empty() {
            return Observed::failed(Error::Name(NameError::NoReason));
        }
        if let Err(error) = self.current_directory() {
            return Observed::failed(error);
        }
        let mut guard = match self.guard(Scope::Directory) {
            Ok(guard) => guard,
            Err(error) => return Observed::failed(error),
        };
        let result = self.held_by(client).and_then(|held| {
            let mut released = Vec::with_capacity(held.len());
            for (resource, found) in held {
                self.retire(&found)?;
                guard.core.changes += 1;
                let lock = lock_of(&resource, &found);
                self.audit("fence", &lock, why)?;
                released.push(lock);
            }
            Ok(released)
        });
        Observed {
            result,
            seq: guard.core.changes,
        }
    }

    /// Every lock file `client` holds, by resource (under the guard).
    fn held_by(&self, client: &str) -> Result<Vec<(String, Found)>, Error> {
        let mut held = self.held()?;
        held.retain(|(_, found)| found.record.holder == client);
        held.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(held)
    }

    /// End a lock (under the guard): a lock with a token becomes its
    /// resource's last token; one without is removed.
    pub(super) fn retire(&self, found: &Found) -> Result<(), Error> {
        let at = self.at();
        if found.record.grant.token == 0 {
            return at
                .remove(&found.path)
                .map_err(|e| Error::io("remove", &found.path, e));
        }
        let last = last_path(&found.path);
        at.rename(&found.path, &last)
            .map_err(|e| Error::io("rename", &found.path, e))
    }

    /// The last token granted under `stem`: that of its `.resource.last`
    /// file, 0 if there is none.
    fn last_token(&self, stem: &str) -> Result<u32, Error> {
        let path = self.dir.join(format!("{stem}{LAST_SUFFIX}"));
        match self.at().read_lock_file(&path) {
            Ok(record) => Ok(record.grant.token),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(Error::io("read", &path, e)),
        }
    }

    /// A batch id no process sharing the directory uses: time, pid and a
    /// counter.
    fn batch_id(&self) -> String {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let n = super::TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        format!("{nanos:x}-{}-{n}", self.instance)
    }

    pub(super) fn batch_marker(&self, batch: &str) -> PathBuf {
        self.dir.join(format!("{BATCH_PREFIX}{batch}"))
    }

    /// Append a break or a fence to the audit trail, durably.
    fn audit(&self, method: &str, lock: &Lock, why: &Reason<'_>) -> Result<(), Error> {
        let path = self.dir.join(AUDIT_FILE);
        let line = format!(
            "{{\"time\":{},\"method\":{},\"resource\":{},\"holder\":{},\"token\":{},\"since\":{},\"reason\":{},\"caller\":{}}}\n",
            crate::json::string(&Utc::from_system(SystemTime::now()).rfc3339()),
            crate::json::string(method),
            crate::json::string(&lock.resource),
            crate::json::string(&lock.client),
            lock.token,
            crate::json::string(&Utc::from_system(lock.since).rfc3339()),
            crate::json::string(why.reason),
            crate::json::string(why.caller),
        );
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        file.write_all(line.as_bytes())
            .map_err(|e| Error::io("write", &path, e))?;
        file.sync_data().map_err(|e| Error::io("fsync", &path, e))?;
        log::warn!(
            "{method} by {}: released {:?} held by {:?} (token {}): {}",
            why.caller,
            lock.resource,
            lock.client,
            lock.token,
            why.reason
        );
        Ok(())
    }

    /// The batch a file name is the marker of, if it is one.
    pub(super) fn batch_of_marker(name: &str) -> Option<&str> {
        name.strip_prefix(BATCH_PREFIX)
    }

    /// At start-up (under the guard): remove the markers of `markers` that
    /// no lock file still `needed`.
    pub(super) fn remove_unused_markers(
        &self,
        markers: &[String],
        needed: &std::collections::HashSet<String>,
    ) -> Result<(), Error> {
        for batch in markers.iter().filter(|b| !needed.contains(*b)) {
            let marker = self.batch_marker(batch);
            fs::remove_file(&marker).map_err(|e| Error::io("remove", &marker, e))?;
        }
        Ok(())
    }
}

impl<T> Observed<T> {
    fn map_result<U>(self, f: impl FnOnce(T) -> U) -> Observed<U> {
        Observed {
            result: self.result.map(f),
            seq: self.seq,
        }
    }
}

fn lock_of(resource: &str, found: &Found) -> Lock {
    Lock {
        resource: resource.to_owned(),
        client: found.record.holder.clone(),
        since: found.record.since,
        token: found.record.grant.token,
    }
}

/// `<stem>.resource.last` beside `<stem>.resource.lock`.
fn last_path(lock_file: &Path) -> PathBuf {
    let name = lock_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(LOCK_SUFFIX).unwrap_or(&name);
    lock_file.with_file_name(format!("{stem}{LAST_SUFFIX}"))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::store::tests::{open, refusal};

    pub(in crate::store) fn why(reason: &str) -> Reason<'_> {
        Reason {
            reason,
            caller: "127.0.0.1:4242",
        }
    }

    fn token(store: &Store, resource: &str, client: &str) -> u32 {
        store.acquire(resource, client).result.unwrap().token
    }

    fn audit_lines(dir: &Path) -> Vec<String> {
        fs::read_to_string(dir.join(AUDIT_FILE))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn tokens_only_grow_whatever_ends_a_grant() {
        let temp = tempfile::tempdir().unwrap();
        let (store, _) = open(temp.path());
        let mut last = 0;
        let mut next = |store: &Store| {
            let t = token(store, "vm1", "node1");
            assert!(t > last, "{t} after {last}");
            last = t;
            t
        };
        let t = next(&store);
        assert_eq!(t, 1);
        store.unlock("vm1", "node1").result.unwrap();
        let t = next(&store);
        store.release("vm1", "node1", t).result.unwrap();
        let t = next(&store);
        store
            .break_lock("vm1", "node1", t, &why("test"))
            .result
            .unwrap();
        next(&store);
        store.fence("node1", &why("test")).result.unwrap();
        // A lock without a token in between changes nothing.
        store.lock("vm1", "node2").result.unwrap();
        assert_eq!(store.status("vm1").result.unwrap().unwrap().token, 0);
        store.unlock("vm1", "node2").result.unwrap();
        next(&store);
        store.unlock("vm1", "node1").result.unwrap();
        drop(store);
        let (store, report) = open(temp.path());
        assert_eq!(report.locks, 0, "a last token is no lock");
        assert_eq!(next(&store), 6);
    }

    #[test]
    fn check_is_true_exactly_for_the_current_grant() {
        let temp = tempfile::tempdir().unwrap();
        let (store, _) = open(temp.path());
        let t = token(&store, "vm1", "node1");
        let check = |r, c, t| store.check(r, c, t).result.unwrap();
        assert!(check("vm1", "node1", t));
        assert!(!check("vm1", "node1", t + 1));
        assert!(!check("vm1", "node2", t));
        assert!(!check("vm2", "node1", t));
        store.release("vm1", "node1", t).result.unwrap();
        assert!(!check("vm1", "node1", t));
        store.lock("vm1", "node1").result.unwrap();
        assert!(!check("vm1", "node1", 0), "a lock without a token");
        assert!(!check("vm1", "node1", t));
    }

    #[test]
    fn release_refuses_every_other_grant() {
        let temp = tempfile::tempdir().unwrap();
        let (store, _) = open(temp.path());
        assert_eq!(
            refusal(store.release("vm1", "node1", 1)),
            Refusal::NotLocked
        );
        let t = token(&store, "vm1", "node1");
        assert!(matches!(
            refusal(store.release("vm1", "node2", t)),
            Refusal::NotHolder { .. }
        ));
        let old = refusal(store.release("vm1", "node1", t + 7));
        assert_eq!(
            old.to_string(),
            format!(
                "Resource locked by 'node1' under token {t}, not {}: that grant has ended",
                t + 7
            )
        );
        assert!(store.check("vm1", "node1", t).result.unwrap());
    }

    #[test]
    fn break_lock_is_compare_and_break_and_audited() {
        let temp = tempfile::tempdir().unwrap();
        let (store, _) = open(temp.path());
        let t = token(&store, "vm1", "node1");
        assert!(matches!(
            store.break_lock("vm1", "node1", t, &why(" ")).result,
            Err(Error::Name(NameError::NoReason))
        ));
        let wrong = refusal(store.break_lock("vm1", "node2", t, &why("x")));
        assert_eq!(
            wrong.to_string(),
            format!("Resource locked by 'node1' under token {t}, not by 'node2' under token {t}")
        );
        assert!(audit_lines(temp.path()).is_empty());
        let broken = store
            .break_lock("vm1", "node1", t, &why("node1 powered off"))
            .result
            .unwrap();
        assert_eq!((broken.client.as_str(), broken.token), ("node1", t));
        assert!(!store.check("vm1", "node1", t).result.unwrap());
        assert!(token(&store, "vm1", "node2") > t);
        let lines = audit_lines(temp.path());
        assert_eq!(lines.len(), 1);
        for part in [
            "\"method\":\"break_lock\"",
            "\"resource\":\"vm1\"",
            "\"holder\":\"node1\"",
            &format!("\"token\":{t}"),
            "\"reason\":\"node1 powered off\"",
            "\"caller\":\"127.0.0.1:4242\"",
        ] {
            assert!(lines[0].contains(part), "{part} in {}", lines[0]);
        }
        // A lock without a token breaks with token 0.
        store.lock("gocept", "node3").result.unwrap();
        store
            .break_lock("gocept", "node3", 0, &why("x"))
            .result
            .unwrap();
    }

    #[test]
    fn fence_releases_everything_a_client_holds() {
        let temp = tempfile::tempdir().unwrap();
        let (store, _) = open(temp.path());
        token(&store, "vm1", "node3");
        token(&store, "a/b", "node3");
        store.lock("legacy", "node3").result.unwrap();
        token(&store, "vm2", "node4");
        assert!(
            store
                .fence("node5", &why("gone"))
                .result
                .unwrap()
                .is_empty()
        );
        let released = store.fence("node3", &why("powered off")).result.unwrap();
        let names: Vec<&str> = released.iter().map(|l| l.resource.as_str()).collect();
        assert_eq!(names, ["a/b", "legacy", "vm1"]);
        assert_eq!(audit_lines(temp.path()).len(), 3);
        let held: Vec<String> = store
            .locks()
            .result
            .unwrap()
            .into_iter()
            .map(|l| l.client)
            .collect();
        assert_eq!(held, ["node4"]);
        assert!(token(&store, "vm1", "node4") > released[2].token);
    }

    #[test]
    fn acquire_many_takes_all_or_none() {
        let temp = tempfile::tempdir().unwrap();
        let (store, _) = open(temp.path());
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        token(&store, "vm2", "node1");
        let refused = refusal(store.acquire_many(&names(&["vm1", "vm2", "vm3"]), "node2"));
        assert_eq!(
            refused.to_string(),
            "Resource 'vm2' already locked by 'node1'"
        );
        assert_eq!(store.locks().result.unwrap().len(), 1, "nothing taken");
        assert!(matches!(
            store.acquire_many(&names(&["a", "a"]), "node2").result,
            Err(Error::Name(NameError::Duplicate { .. }))
        ));
        assert!(matches!(
            store.acquire_many(&[], "node2").result,
            Err(Error::Name(NameError::BatchSize { .. }))
        ));
        let many: Vec<String> = (0..64).map(|i| format!("disk{i}")).collect();
        let locks = store.acquire_many(&many, "node2").result.unwrap();
        assert_eq!(locks.len(), 64);
        assert!(
            locks
                .iter()
                .zip(&many)
                .all(|(l, r)| &l.resource == r && l.token == 1)
        );
        assert_eq!(store.locks().result.unwrap().len(), 65);
        // Released one by one, the batch's marker stays until start-up
        // finds it unused.
        for resource in &many {
            store.unlock(resource, "node2").result.unwrap();
        }
        drop(store);
        open(temp.path());
        let markers = fs::read_dir(temp.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(BATCH_PREFIX)
            })
            .count();
        assert_eq!(markers, 0);
    }

    #[test]
    fn a_batch_without_its_marker_holds_nothing() {
        let temp = tempfile::tempdir().unwrap();
        let (store, _) = open(temp.path());
        let list = vec!["vm1".to_owned(), "vm2".to_owned()];
        store.acquire_many(&list, "node1").result.unwrap();
        // As if lockd died after linking, before the marker was made.
        for entry in fs::read_dir(temp.path()).unwrap() {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(BATCH_PREFIX)
            {
                fs::remove_file(path).unwrap();
            }
        }
        assert!(store.status("vm1").result.unwrap().is_none());
        assert!(store.locks().result.unwrap().is_empty());
        store.lock("vm1", "node2").result.unwrap();
        drop(store);
        let (store, report) = open(temp.path());
        // The dead vm2, and the content file of node2's lock.
        assert_eq!((report.locks, report.removed_leftovers), (1, 2));
        assert!(!temp.path().join("vm2.resource.lock").exists());
        assert_eq!(store.status("vm1").result.unwrap().unwrap().client, "node2");
    }

    #[test]
    fn tokens_never_pass_the_largest_int() {
        let temp = tempfile::tempdir().unwrap();
        let (store, _) = open(temp.path());
        let t = token(&store, "vm1", "node1");
        store.release("vm1", "node1", t).result.unwrap();
        let last = temp.path().join("vm1.resource.last");
        let text = fs::read_to_string(&last).unwrap();
        fs::write(
            &last,
            text.replace("token=1", &format!("token={}", MAX_TOKEN - 1)),
        )
        .unwrap();
        assert_eq!(token(&store, "vm1", "node1"), MAX_TOKEN);
        store.unlock("vm1", "node1").result.unwrap();
        assert!(matches!(
            refusal(store.acquire("vm1", "node1")),
            Refusal::TokensExhausted { .. }
        ));
        fs::write(
            &last,
            "node1\n2026-01-01T00:00:00Z\nresource=vm1\ntoken=x\n",
        )
        .unwrap();
        assert!(matches!(
            refusal(store.acquire("vm1", "node1")),
            Refusal::TokensExhausted { .. }
        ));
    }

    #[test]
    fn two_processes_on_one_directory_keep_tokens_growing() {
        let temp = tempfile::tempdir().unwrap();
        let (a, _) = open(temp.path());
        let (b, _) = open(temp.path());
        let mut last = 0;
        for i in 0..20 {
            let store = if i % 3 == 0 { &a } else { &b };
            let t = token(store, "vm1", "node1");
            assert!(t > last);
            last = t;
            let other = if i % 2 == 0 { &a } else { &b };
            other.release("vm1", "node1", t).result.unwrap();
        }
    }
}
