//! Disk faults: a read-only lock directory, a full filesystem, lock files
//! edited, emptied, removed or made unreadable by hand, and the directory
//! removed under a running daemon. Each gives a clear answer (a -32603
//! fault naming the file and the reason, with an error in the log, or the
//! refusal the files justify), never a crash, and lockd recovers once the
//! cause is fixed.
//!
//! Read-only and full filesystems are real: a small tmpfs mounted for the
//! test (remounted read-only, or filled). Mounting needs root with
//! CAP_SYS_ADMIN; where that is missing these two tests fail in CI and
//! elsewhere say so and skip.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::proof::{Outcome, Rpc};
use crate::support::{self, Daemon};

const INTERNAL: i32 = -32603;

/// A tmpfs mounted on a temporary directory, unmounted on drop.
struct Tmpfs {
    path: PathBuf,
    _temp: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        mount(
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"],
            &path,
        )?;
        Ok(Tmpfs { path, _temp: temp })
    }

    /// Make it read-only: a read-only bind mount on top (a plain remount
    /// is refused while lockd has lockd.lock open for writing).
    fn read_only(&self) {
        let path = self.path.to_string_lossy();
        mount(&["--bind", &path], &self.path).unwrap();
        mount(&["-o", "remount,bind,ro"], &self.path).unwrap();
    }

    /// Undo [`Tmpfs::read_only`]. Lazily: lockd, which follows its
    /// directory onto the read-only mount, has files open there until its
    /// next call sees the writable one again.
    fn read_write(&self) {
        let status = Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success(), "umount {}", self.path.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // The tmpfs, and a read-only bind mount on it if one is left.
        for _ in 0..2 {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.path)
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

fn mount(args: &[&str], path: &Path) -> Result<(), String> {
    let out = Command::new("mount")
        .args(args)
        .arg(path)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn skip(what: &str, why: &str) {
    support::cannot_run(
        &format!("disk: {what}"),
        &format!(
            "a tmpfs cannot be mounted here (root with CAP_SYS_ADMIN needed): {}",
            why.trim()
        ),
    );
}

fn call(rpc: &mut Rpc, method: &str, params: &[&str]) -> Outcome {
    rpc.call(method, params)
        .unwrap_or_else(|e| panic!("{method} {params:?}: no reply: {e}"))
}

/// Assert a -32603 fault that names `file` and contains `reason`.
fn assert_internal(outcome: &Outcome, file: &str, reason: &str) {
    match outcome {
        Outcome::Fault(INTERNAL, message) => assert!(
            message.contains(file) && message.contains(reason),
            "the fault does not say {file:?} and {reason:?}: {message}"
        ),
        other => panic!("expected a -32603 fault about {file}, got {other:?}"),
    }
}

fn refused(outcome: &Outcome, text: &str) -> bool {
    matches!(outcome, Outcome::Fault(1, s) if s.ends_with(text))
}

#[test]
fn a_read_only_directory_faults_and_recovers() {
    let fs = match Tmpfs::mount("1m") {
        Ok(fs) => fs,
        Err(why) => return skip("read-only directory", &why),
    };
    let daemon = Daemon::start_in(&fs.path.join("locks"));
    let mut rpc = Rpc::new(daemon.addr);
    assert!(call(&mut rpc, "lock", &["a", "n1"]).is_nil());
    fs.read_only();
    let fault = call(&mut rpc, "lock", &["b", "n1"]);
    assert_internal(&fault, "/locks/", "Read-only file system");
    // The read-only mount is seen at the directory's path: lockd opens the
    // directory there again and fails to lock lockd.lock or lockd.ranges, or
    // fails to remove a.resource.lock there; either way the fault names the
    // file and says why.
    let unlock = call(&mut rpc, "unlock", &["a", "n1"]);
    let names = |file: &str| matches!(&unlock, Outcome::Fault(_, m) if m.contains(file));
    assert!(
        ["lockd.lock", "lockd.ranges", "a.resource.lock"]
            .iter()
            .any(|file| names(&format!("/locks/{file}"))),
        "the fault names none of lockd.lock, lockd.ranges, a.resource.lock: {unlock:?}"
    );
    assert_internal(&unlock, "/locks/", "Read-only file system");
    assert!(daemon.wait_for_log("ERROR"), "no error in the log");
    // Reading still works.
    assert!(matches!(
        call(&mut rpc, "status", &["a"]),
        Outcome::Value(_)
    ));
    fs.read_write();
    assert!(call(&mut rpc, "lock", &["b", "n1"]).is_nil());
    assert!(call(&mut rpc, "unlock", &["a", "n1"]).is_nil());
    assert_eq!(
        daemon.lock_files(),
        ["b.resource.lock", "lockd.lock", "lockd.ranges"]
    );
}

#[test]
fn a_full_filesystem_faults_and_recovers() {
    let fs = match Tmpfs::mount("256k") {
        Ok(fs) => fs,
        Err(why) => return skip("full filesystem", &why),
    };
    let daemon = Daemon::start_in(&fs.path.join("locks"));
    let mut rpc = Rpc::new(daemon.addr);
    assert!(call(&mut rpc, "lock", &["a", "n1"]).is_nil());
    // Fill it up.
    let filler = fs.path.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 4096];
    while std::io::Write::write_all(&mut file, &block).is_ok() {}
    drop(file);
    let fault = call(&mut rpc, "lock", &["b", "n2"]);
    assert_internal(&fault, "/locks/.lockd-", "No space left on device");
    assert!(daemon.wait_for_log("ERROR"), "no error in the log");
    // A held lock can still be released: unlink needs no space.
    assert!(call(&mut rpc, "unlock", &["a", "n1"]).is_nil());
    std::fs::remove_file(&filler).unwrap();
    assert!(call(&mut rpc, "lock", &["b", "n2"]).is_nil());
    assert_eq!(
        daemon.lock_files(),
        ["b.resource.lock", "lockd.lock", "lockd.ranges"]
    );
}

/// Lock files are the truth: one edited by hand names its new holder, one
/// removed by hand frees the resource, an empty one is held by the empty
/// string, and one that cannot be read is a -32603 fault naming it.
#[test]
fn lock_files_changed_by_hand() {
    let daemon = Daemon::start();
    let mut rpc = Rpc::new(daemon.addr);
    let file = |name: &str| daemon.dir.join(format!("{name}.resource.lock"));
    for name in ["edited", "removed", "emptied", "unreadable"] {
        assert!(call(&mut rpc, "lock", &[name, "n1"]).is_nil());
    }
    // Edited: replaced, as an operator would with an editor.
    std::fs::remove_file(file("edited")).unwrap();
    std::fs::write(file("edited"), "intruder\n").unwrap();
    assert!(refused(
        &call(&mut rpc, "lock", &["edited", "n2"]),
        "already locked by 'intruder'"
    ));
    assert!(refused(
        &call(&mut rpc, "unlock", &["edited", "n1"]),
        "locked by 'intruder' cannot be unlocked by 'n1'"
    ));
    // Removed.
    std::fs::remove_file(file("removed")).unwrap();
    assert!(refused(
        &call(&mut rpc, "unlock", &["removed", "n1"]),
        "Resource not locked"
    ));
    assert!(call(&mut rpc, "lock", &["removed", "n2"]).is_nil());
    // Emptied.
    std::fs::remove_file(file("emptied")).unwrap();
    std::fs::write(file("emptied"), "").unwrap();
    assert!(refused(
        &call(&mut rpc, "lock", &["emptied", "n2"]),
        "already locked by ''"
    ));
    // Unreadable: a directory in its place (root may read any file).
    std::fs::remove_file(file("unreadable")).unwrap();
    std::fs::create_dir(file("unreadable")).unwrap();
    for method in ["lock", "unlock", "status"] {
        let params: &[&str] = if method == "status" {
            &["unreadable"]
        } else {
            &["unreadable", "n2"]
        };
        assert_internal(
            &call(&mut rpc, method, params),
            "unreadable.resource.lock",
            "not a regular file",
        );
    }
    assert_internal(
        &call(&mut rpc, "locks", &[]),
        "unreadable.resource.lock",
        "not a regular file",
    );
    assert!(daemon.wait_for_log("ERROR"), "no error in the log");
    // Fixed by hand.
    std::fs::remove_dir(file("unreadable")).unwrap();
    std::fs::remove_file(file("emptied")).unwrap();
    assert!(call(&mut rpc, "lock", &["unreadable", "n2"]).is_nil());
    assert!(call(&mut rpc, "lock", &["emptied", "n2"]).is_nil());
    assert!(matches!(call(&mut rpc, "locks", &[]), Outcome::Value(_)));
}

/// A FIFO in place of a lock file must not hang the daemon: opening one
/// for reading blocks until a writer comes.
#[test]
fn a_fifo_in_place_of_a_lock_file_does_not_hang() {
    let daemon = Daemon::start();
    let fifo = daemon.dir.join("pipe.resource.lock");
    let c_path = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).unwrap();
    // SAFETY: mkfifo with a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
    let mut rpc = Rpc::new(daemon.addr);
    assert_internal(
        &call(&mut rpc, "unlock", &["pipe", "n1"]),
        "pipe.resource.lock",
        "not a regular file",
    );
    assert_internal(
        &call(&mut rpc, "lock", &["pipe", "n1"]),
        "pipe.resource.lock",
        "not a regular file",
    );
    // Others are still served.
    assert!(call(&mut rpc, "lock", &["other", "n1"]).is_nil());
    std::fs::remove_file(&fifo).unwrap();
    assert!(call(&mut rpc, "lock", &["pipe", "n1"]).is_nil());
}

/// The lock directory removed under a running daemon: clear faults, and
/// once it is back, locks work again and are durable in the new directory.
#[test]
fn the_directory_removed_under_a_running_daemon() {
    let daemon = Daemon::start();
    let mut rpc = Rpc::new(daemon.addr);
    assert!(call(&mut rpc, "lock", &["a", "n1"]).is_nil());
    std::fs::remove_dir_all(&daemon.dir).unwrap();
    assert_internal(
        &call(&mut rpc, "lock", &["b", "n1"]),
        "/locks",
        "No such file or directory",
    );
    assert_internal(
        &call(&mut rpc, "locks", &[]),
        "/locks",
        "No such file or directory",
    );
    assert_internal(
        &call(&mut rpc, "unlock", &["a", "n1"]),
        "/locks",
        "No such file or directory",
    );
    assert!(daemon.wait_for_log("ERROR"), "no error in the log");
    std::fs::create_dir(&daemon.dir).unwrap();
    assert!(call(&mut rpc, "lock", &["b", "n1"]).is_nil());
    assert!(daemon.wait_for_log("was replaced"), "no warning in the log");
    // lockd.lock is made anew in the new directory, so other daemons on it
    // are excluded again, and fsyncs go to the new directory.
    assert_eq!(
        daemon.lock_files(),
        ["b.resource.lock", "lockd.lock", "lockd.ranges"]
    );
    assert!(call(&mut rpc, "unlock", &["b", "n1"]).is_nil());
}
