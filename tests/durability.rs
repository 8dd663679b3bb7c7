//! Durability discipline, seen from the kernel: lockd runs under
//! `strace -f`, takes one lock and releases it, and the traced system calls
//! must come in the order that makes an acknowledged change survive a power
//! cut:
//!
//! - lock: the content file is created, written and fsync'd, then linked to
//!   the lock file name, then the directory is fsync'd, and only then is the
//!   reply written to the socket;
//! - unlock: the lock file is unlinked, then the directory is fsync'd, then
//!   the reply is written.
//!
//! "Then" means the earlier call returned before the later one began
//! (strace prints an interrupted call's entry and its return on separate
//! lines, both are taken into account).

use std::path::Path;
use std::process::{Command, Stdio};

use crate::proof::{Outcome, Rpc};
use crate::support::{self, Process};

/// One traced system call: where its entry and its return are in the trace.
#[derive(Debug, Clone)]
struct Syscall {
    name: String,
    /// The text between the parentheses (possibly cut short by strace).
    args: String,
    /// What it returned, e.g. `0` or `9</tmp/x/.lockd-1-0.tmp>`.
    ret: String,
    entry: usize,
    exit: usize,
}

impl Syscall {
    /// The file a call's first argument is, as `strace -y` shows it.
    fn first_fd_path(&self) -> Option<&str> {
        let start = self.args.find('<')?;
        let end = self.args.find('>')?;
        let path = &self.args[start + 1..end];
        self.args[..start]
            .chars()
            .all(|c| c.is_ascii_digit())
            .then_some(path)
    }
}

const TRACED: &str = "openat,open,creat,write,writev,pwrite64,pwritev,sendto,sendmsg,\
    fsync,fdatasync,sync_file_range,syncfs,link,linkat,unlink,unlinkat,rename,renameat,renameat2";

/// Whether `strace -f` can trace here (ptrace may be forbidden), and if
/// not, what is missing.
fn strace_works() -> Result<(), String> {
    match Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "true"])
        .stderr(Stdio::piped())
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "strace -f cannot trace (ptrace forbidden? CAP_SYS_PTRACE and no seccomp filter needed): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!(
            "strace is not installed ({e}); .ci/run installs it"
        )),
    }
}

#[test]
fn replies_follow_data_fsync_link_and_directory_fsync() {
    if let Err(missing) = strace_works() {
        return support::cannot_run("durability", &missing);
    }
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("locks");
    std::fs::create_dir(&dir).unwrap();
    let dir = std::fs::canonicalize(&dir).unwrap();
    let trace_file = temp.path().join("trace");
    let mut strace = support::clean_command("strace");
    strace
        .args(["-f", "-qq", "-y", "-s", "64", "-e"])
        .arg(format!("trace={TRACED}"))
        .arg("-o")
        .arg(&trace_file)
        .arg(support::LOCKD)
        .arg("--dir")
        .arg(&dir)
        .args(["--listen", "127.0.0.1:0"]);
    let mut strace = Process::spawn(&mut strace);
    let addr = strace.listening_address();
    let mut rpc = Rpc::new(addr);
    let lock = rpc.call("lock", &["r1", "c1"]);
    let unlock = rpc.call("unlock", &["r1", "c1"]);
    drop(rpc);
    // Stop lockd (strace's child) and let strace write the whole trace.
    let children = format!("/proc/{0}/task/{0}/children", strace.pid());
    let lockd_pid = std::fs::read_to_string(children).unwrap_or_default();
    for pid in lockd_pid
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
    {
        let _ = lockd::sys::kill(pid, libc::SIGTERM);
    }
    strace.wait_exit();
    let calls = parse_trace(&std::fs::read_to_string(&trace_file).unwrap());
    assert!(lock.as_ref().is_ok_and(Outcome::is_nil), "{lock:?}");
    assert!(unlock.as_ref().is_ok_and(Outcome::is_nil), "{unlock:?}");
    let report = check_lock_order(&calls, &dir)
        .and_then(|lock| Ok(format!("{lock}; {}", check_unlock_order(&calls, &dir)?)));
    match report {
        Ok(summary) => eprintln!("durability: {summary}"),
        Err(why) => panic!(
            "durability: {why}\ntrace:\n{}",
            std::fs::read_to_string(&trace_file).unwrap_or_default()
        ),
    }
}

/// The checker refuses a trace in which the reply overtakes the directory
/// fsync, or the link overtakes the data fsync.
#[test]
fn the_order_checker_catches_early_replies() {
    let dir = Path::new("/d");
    let good = "\
1 openat(AT_FDCWD</>, \"/d/.lockd-1-0.tmp\", O_WRONLY|O_CREAT|O_EXCL|O_CLOEXEC, 0644) = 9</d/.lockd-1-0.tmp>
1 write(9</d/.lockd-1-0.tmp>, \"c1\", 2) = 2
1 fsync(9</d/.lockd-1-0.tmp>) = 0
1 linkat(AT_FDCWD</>, \"/d/.lockd-1-0.tmp\", AT_FDCWD</>, \"/d/r1.resource.lock\", 0) = 0
2 fsync(3</d> <unfinished ...>
1 unlink(\"/d/other\") = 0
2 <... fsync resumed>) = 0
2 sendto(6<socket:[1]>, \"HTTP/1.1 200 OK\\r\\n\"..., 259, MSG_NOSIGNAL, NULL, 0) = 259
";
    assert!(check_lock_order(&parse_trace(good), dir).is_ok());
    // The same through the directory's descriptor.
    let at = good
        .replace("openat(AT_FDCWD</>, \"/d/.lockd", "openat(3</d>, \".lockd")
        .replace(
            "linkat(AT_FDCWD</>, \"/d/.lockd-1-0.tmp\", AT_FDCWD</>, \"/d/r1",
            "linkat(3</d>, \".lockd-1-0.tmp\", 3</d>, \"r1",
        );
    assert!(at.contains("linkat(3</d>, \".lockd"), "{at}");
    assert!(check_lock_order(&parse_trace(&at), dir).is_ok());
    let lines: Vec<&str> = good.lines().collect();
    let early_reply = [&lines[..5], &lines[7..], &lines[5..7]].concat().join("\n");
    let error = check_lock_order(&parse_trace(&early_reply), dir).unwrap_err();
    assert!(error.contains("no fsync of /d"), "{error}");
    let early_link = [&lines[..2], &lines[3..4], &lines[2..3], &lines[4..]]
        .concat()
        .join("\n");
    let error = check_lock_order(&parse_trace(&early_link), dir).unwrap_err();
    assert!(error.contains("out of order"), "{error}");
}

/// The first reply written to a socket that begins after `after`.
fn reply_after(calls: &[Syscall], after: usize) -> Result<&Syscall, String> {
    calls
        .iter()
        .filter(|c| c.entry > after)
        .filter(|c| matches!(c.name.as_str(), "sendto" | "sendmsg" | "write" | "writev"))
        .filter(|c| c.first_fd_path().is_some_and(|p| p.starts_with("socket:")))
        .filter(|c| c.args.contains("HTTP/1.1 200"))
        .min_by_key(|c| c.entry)
        .ok_or_else(|| "no reply written after the change".to_owned())
}

/// A directory fsync that began after `after` and returned before `before`.
fn dir_fsync_between<'a>(
    calls: &'a [Syscall],
    dir: &Path,
    after: usize,
    before: usize,
) -> Result<&'a Syscall, String> {
    let dir = dir.to_string_lossy();
    calls
        .iter()
        .find(|c| {
            matches!(c.name.as_str(), "fsync" | "fdatasync")
                && c.first_fd_path() == Some(&*dir)
                && c.ret == "0"
                && c.entry > after
                && c.exit < before
        })
        .ok_or_else(|| {
            format!(
                "no fsync of {dir} between the change (line {after}) and the reply (line {before})"
            )
        })
}

fn check_lock_order(calls: &[Syscall], dir: &Path) -> Result<String, String> {
    let lock_file = format!("{}/r1.resource.lock\"", dir.display());
    let link = calls
        .iter()
        .find(|c| c.name.starts_with("link") && c.args.contains(&lock_file) && c.ret == "0")
        .ok_or("no successful link to r1.resource.lock")?;
    let content = link
        .args
        .split('"')
        .nth(1)
        .ok_or("cannot read the link's source")?
        .to_owned();
    let open = calls
        .iter()
        .find(|c| {
            c.name == "openat"
                && c.args.contains(&format!("\"{content}\""))
                && c.args.contains("O_CREAT")
        })
        .ok_or("the content file was not created")?;
    let fd_is_content = |c: &&Syscall| c.first_fd_path() == Some(&content);
    let write = calls
        .iter()
        .filter(fd_is_content)
        .find(|c| c.name.contains("write") && c.args.contains("\"c1\""))
        .ok_or("the content was not written")?;
    let fsync = calls
        .iter()
        .filter(fd_is_content)
        .find(|c| matches!(c.name.as_str(), "fsync" | "fdatasync") && c.ret == "0")
        .ok_or("the content file was not fsync'd")?;
    if !(open.exit < write.entry && write.exit < fsync.entry && fsync.exit < link.entry) {
        return Err(format!(
            "out of order: create {open:?}, write {write:?}, fsync {fsync:?}, link {link:?}"
        ));
    }
    let reply = reply_after(calls, link.exit)?;
    let dir_sync = dir_fsync_between(calls, dir, link.exit, reply.entry)?;
    Ok(format!(
        "lock: create (line {}), write ({}), fsync ({}), link ({}), directory fsync ({}), reply ({})",
        open.entry, write.entry, fsync.entry, link.entry, dir_sync.entry, reply.entry
    ))
}

fn check_unlock_order(calls: &[Syscall], dir: &Path) -> Result<String, String> {
    let lock_file = format!("{}/r1.resource.lock\"", dir.display());
    let unlink = calls
        .iter()
        .find(|c| c.name.starts_with("unlink") && c.args.contains(&lock_file) && c.ret == "0")
        .ok_or("no successful unlink of r1.resource.lock")?;
    let reply = reply_after(calls, unlink.exit)?;
    let dir_sync = dir_fsync_between(calls, dir, unlink.exit, reply.entry)?;
    Ok(format!(
        "unlock: unlink (line {}), directory fsync ({}), reply ({})",
        unlink.entry, dir_sync.entry, reply.entry
    ))
}

/// A name given relative to a directory descriptor (`linkat(5</d>,
/// "r1.resource.lock", …)`, as lockd reaches its files) written as the
/// path it stands for (`"/d/r1.resource.lock"`), so that the checks see
/// one form whatever call lockd used.
fn absolute_paths(args: &str) -> String {
    let mut out = String::with_capacity(args.len());
    let mut rest = args;
    while let Some(at) = rest.find(">, \"") {
        let (before, after) = rest.split_at(at + 4);
        out.push_str(before);
        rest = after;
        let dir = before[..at]
            .rfind('<')
            .map(|start| &before[start + 1..at])
            .filter(|dir| dir.starts_with('/'));
        if let Some(dir) = dir
            && !rest.starts_with('/')
        {
            out.push_str(dir.trim_end_matches('/'));
            out.push('/');
        }
    }
    out.push_str(rest);
    out
}

/// Read `strace -f -y` output into calls, joining `<unfinished ...>` lines
/// with their `<... resumed>` returns.
fn parse_trace(text: &str) -> Vec<Syscall> {
    let mut calls: Vec<Syscall> = Vec::new();
    let mut pending: std::collections::HashMap<u32, usize> = Default::default();
    for (index, line) in text.lines().enumerate() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(resumed) = rest.strip_prefix("<... ") {
            if let Some(i) = pending.remove(&pid) {
                calls[i].exit = index;
                calls[i].ret = return_value(resumed);
                if let Some((more, _)) = resumed
                    .split_once(" resumed>")
                    .map(|(_, r)| r.rsplit_once(") = ").unwrap_or((r, "")))
                {
                    calls[i].args.push_str(more);
                }
            }
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else {
            continue;
        };
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let unfinished = args.ends_with("<unfinished ...>");
        let (args, ret) = if unfinished {
            (
                args.trim_end_matches("<unfinished ...>").to_owned(),
                String::new(),
            )
        } else {
            let cut = args.rsplit_once(") = ").map_or(args, |(a, _)| a);
            (cut.to_owned(), return_value(args))
        };
        calls.push(Syscall {
            name: name.to_owned(),
            // openat, linkat, unlinkat, renameat2: names after descriptors.
            args: if name.ends_with("at") || name.ends_with("at2") {
                absolute_paths(&args)
            } else {
                args
            },
            ret,
            entry: index,
            exit: index,
        });
        if unfinished {
            pending.insert(pid, calls.len() - 1);
        }
    }
    calls
}

/// The return value after the last ` = `, without strace's comments.
fn return_value(line: &str) -> String {
    line.rsplit_once(" = ")
        .map(|(_, r)| r.split_whitespace().next().unwrap_or_default().to_owned())
        .unwrap_or_default()
}
