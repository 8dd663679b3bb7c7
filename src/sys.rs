//! The operating system calls lockd needs and std does not offer: signal
//! masks and waiting for a signal, the file descriptor limit, socket options,
//! a few questions about descriptors, and shutting down a connection found
//! by its addresses. Each `unsafe` block says why it is
//! sound, behind a function that is safe to call with any argument; the
//! daemon, lockcmd, the benchmark and the tests call these instead of libc.
//! (Taking over the socket systemd passes is [`crate::systemd::take_listener`],
//! an `unsafe fn`: it needs a promise only its caller can give.)
//!
//! Linux only, as lockd is.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

/// A set of signals.
#[derive(Clone, Copy)]
pub struct SignalSet(libc::sigset_t);

/// A signal taken by [`SignalSet::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub signal: i32,
    /// Whether a process sent it (kill(2), sigqueue(3)) rather than the
    /// kernel (a terminal's Ctrl-C, a child's end).
    pub from_process: bool,
}

impl SignalSet {
    pub fn of(signals: &[i32]) -> SignalSet {
        // SAFETY: sigemptyset initialises the zeroed set, sigaddset adds to
        // it; both only write the set we own. An invalid signal number makes
        // sigaddset fail with EINVAL and leaves the set unchanged.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &signal in signals {
                libc::sigaddset(&mut set, signal);
            }
            SignalSet(set)
        }
    }

    /// Block these signals in the calling thread, and so in every thread it
    /// starts from now on: they wait for [`SignalSet::wait`] instead of
    /// taking their default action.
    pub fn block(&self) -> io::Result<()> {
        // SAFETY: a valid set, and no old set asked for.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &self.0, std::ptr::null_mut()) };
        match rc {
            0 => Ok(()),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }

    /// Wait up to `timeout` for one of these (blocked) signals.
    pub fn wait(&self, timeout: Duration) -> Option<Received> {
        let timeout = libc::timespec {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: timeout.subsec_nanos().into(),
        };
        // SAFETY: siginfo_t is plain data that sigtimedwait fills in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: a valid set, siginfo and timeout, all owned here.
        let signal = unsafe { libc::sigtimedwait(&self.0, &mut info, &timeout) };
        (signal > 0).then_some(Received {
            signal,
            from_process: info.si_code <= 0,
        })
    }

    /// Have `command` start with these signals unblocked, whatever the
    /// mask of the thread that starts it (a child inherits that mask).
    pub fn unblock_in_child(&self, command: &mut Command) {
        let set = self.0;
        // SAFETY: the closure runs between fork and exec, where only
        // async-signal-safe functions may be called: it calls sigprocmask,
        // which is one, on a set it owns, and allocates nothing.
        unsafe {
            command.pre_exec(move || {
                libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                Ok(())
            });
        }
    }
}

/// Send `signal` to process `pid`.
pub fn kill(pid: u32, signal: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    // SAFETY: kill(2) takes plain numbers; a wrong one fails with an errno.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Raise the soft limit on open files to the hard limit: every connection
/// is a socket.
pub fn raise_file_limit() -> io::Result<()> {
    // SAFETY: rlimit is plain data that getrlimit fills in.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to an rlimit owned here.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: a valid pointer to an rlimit owned here.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Which of a socket's timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketTimeout {
    /// `SO_RCVTIMEO`: a read (and, on a listener, `accept`) waits this long.
    Receive,
    /// `SO_SNDTIMEO`: a write waits this long.
    Send,
}

/// Set a socket's timeout, whole seconds. On Linux, sockets accepted from a
/// listener inherit the listener's.
pub fn set_socket_timeout(
    socket: BorrowedFd<'_>,
    which: SocketTimeout,
    timeout: Duration,
) -> io::Result<()> {
    let option = match which {
        SocketTimeout::Receive => libc::SO_RCVTIMEO,
        SocketTimeout::Send => libc::SO_SNDTIMEO,
    };
    let value = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: 0,
    };
    set_option(socket, option, &value)
}

/// setsockopt(2) at `SOL_SOCKET` level with `value`, whose type is the
/// option's.
fn set_option<T>(socket: BorrowedFd<'_>, option: i32, value: &T) -> io::Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "socket option too large"))?;
    // SAFETY: setsockopt on a descriptor the caller holds open, with a value
    // of the size passed, owned by the caller for the call; a descriptor
    // that is not a socket fails with ENOTSOCK, an option of another type
    // with EINVAL.
    check(unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (value as *const T).cast(),
            len,
        )
    })
    .map(drop)
}

/// An integer socket option at `SOL_SOCKET` level (`SO_DOMAIN`, `SO_TYPE`,
/// `SO_ACCEPTCONN`...).
pub fn socket_option(socket: BorrowedFd<'_>, option: i32) -> io::Result<i32> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt with an int buffer and its size, both owned here;
    // an option whose value is not an int fails or is cut to the size given.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Set an integer socket option at `SOL_SOCKET` level (`SO_SNDBUF`...).
pub fn set_socket_option(socket: BorrowedFd<'_>, option: i32, value: i32) -> io::Result<()> {
    set_option(socket, option, &libc::c_int::from(value))
}

/// Mark a descriptor close-on-exec.
pub fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_SETFD on a descriptor the caller holds open.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The device and inode of whatever descriptor number `fd` holds now. Only
/// metadata is read, so any number will do: a closed one gives `EBADF`, a
/// reused one the identity of its new file (which is what callers check).
pub fn inode_of(fd: RawFd) -> io::Result<(u64, u64)> {
    // SAFETY: stat is plain data that fstat fills in.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes only into the stat buffer owned here, whatever
    // the number.
    if unsafe { libc::fstat(fd, &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((stat.st_dev, stat.st_ino))
}

/// The filesystem type number (`f_type` of statfs(2)) of the filesystem
/// `path` is on.
pub fn filesystem_magic(path: &std::path::Path) -> io::Result<i64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
    // SAFETY: statfs is plain data that statfs(2) fills in.
    let mut info: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a buffer, both owned here.
    if unsafe { libc::statfs(path.as_ptr(), &mut info) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // its type differs between targets
    Ok(info.f_type as i64)
}

/// The descriptors of this process that are TCP connections to `port`
/// (sockets whose local port is `port`, the listening one excepted), each
/// with its peer's address. tiny_http keeps its sockets to itself, so they
/// are found by their addresses among all descriptors (`/proc/self/fd`).
/// A connection has two descriptors in tiny_http (its reading and writing
/// halves): both are listed.
pub fn connections_on(port: u16) -> io::Result<Vec<(std::net::SocketAddr, RawFd)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Some(fd) = entry?
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<RawFd>().ok())
        else {
            continue;
        };
        if let Some(peer) = peer_on(fd, port) {
            found.push((peer, fd));
        }
    }
    Ok(found)
}

/// The peer of the TCP connection that descriptor number `fd` holds now, if
/// it is one to local port `port`. Any number will do: one that is closed
/// meanwhile, or holds another file, gives `None`.
pub fn peer_on(fd: RawFd, port: u16) -> Option<std::net::SocketAddr> {
    let peer = peer_of(fd)?;
    borrowed_tcp(fd)
        .local_addr()
        .is_ok_and(|local| local.port() == port)
        .then_some(peer)
}

/// The peer of the TCP connection that descriptor number `fd` holds now, if
/// it holds one (one system call: see [`peer_on`]).
pub fn peer_of(fd: RawFd) -> Option<std::net::SocketAddr> {
    borrowed_tcp(fd).peer_addr().ok()
}

/// Descriptor number `fd` as a TCP socket, to ask it its addresses.
fn borrowed_tcp(fd: RawFd) -> std::mem::ManuallyDrop<std::net::TcpStream> {
    use std::os::fd::FromRawFd;
    // SAFETY: the number is only borrowed for getpeername and getsockname,
    // and never closed (ManuallyDrop); on a number that is not a connected
    // socket both calls fail.
    std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) })
}

/// Shut down, both ways, every TCP connection to local port `port` from
/// `peer`; how many descriptors were found.
pub fn shutdown_connection(port: u16, peer: std::net::SocketAddr) -> io::Result<usize> {
    let mut found = 0;
    for (_, fd) in connections_on(port)?
        .into_iter()
        .filter(|(p, _)| *p == peer)
    {
        found += 1;
        // SAFETY: shutdown takes a plain number; one closed or reused since
        // it was found fails with EBADF or ENOTSOCK, or shuts down a socket
        // of the same peer and port, which is this connection.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    }
    Ok(found)
}

/// Bytes written to socket `fd` that its peer has not acknowledged yet
/// (`SIOCOUTQ`). A socket with none has its whole send buffer free.
pub fn unsent_bytes(fd: RawFd) -> io::Result<usize> {
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int through the pointer, which
    // points at an int owned here; a number that is not a socket fails.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued as *mut libc::c_int) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    usize::try_from(queued).map_err(|_| io::Error::other("negative SIOCOUTQ"))
}

/// Try to take an exclusive open file description (OFD) lock on the byte
/// `offset` of `file`, without waiting: `Ok(false)` if another open file
/// description holds a lock on it. OFD locks belong to the open file, not
/// to the process: two descriptions of one file in one process exclude each
/// other, and closing any other descriptor of the file releases nothing.
/// They are byte-range (`fcntl`) locks, so on NFS and FUSE filesystems they
/// are sent to the server like `flock`, but they never conflict with an
/// `flock` on the same file on a local filesystem; on NFS `flock` is
/// emulated with whole-file `fcntl` locks, so keep the two on different
/// files.
pub fn ofd_try_lock(file: BorrowedFd<'_>, offset: u64) -> io::Result<bool> {
    let start = libc::off_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "lock offset too large"))?;
    match ofd_setlk(file, libc::F_WRLCK, start, 1) {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Release every OFD lock this open file description holds on `file`.
pub fn ofd_unlock_all(file: BorrowedFd<'_>) -> io::Result<()> {
    // A length of 0: up to the end of any file.
    ofd_setlk(file, libc::F_UNLCK, 0, 0)
}

fn ofd_setlk(
    file: BorrowedFd<'_>,
    kind: i32,
    start: libc::off_t,
    len: libc::off_t,
) -> io::Result<()> {
    // SAFETY: flock is plain data; zeroed, l_pid is 0 as OFD locks require.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = start;
    lock.l_len = len;
    loop {
        // SAFETY: F_OFD_SETLK on a descriptor the caller holds open, with a
        // flock owned here; a descriptor that cannot be locked fails with an
        // errno.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) } == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

fn c_name(name: &std::ffi::OsStr) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a name with a NUL byte"))
}

/// The result of a system call that returns -1 and sets errno on failure.
fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Open `name` in the directory `dir` (openat(2)): the directory is not
/// looked up again by its path, which on a FUSE or NFS mount without
/// caching costs a round trip to the server for each component. `flags` are
/// open(2)'s; `O_CLOEXEC` is always added.
pub fn open_at(
    dir: BorrowedFd<'_>,
    name: &std::ffi::OsStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    let name = c_name(name)?;
    // SAFETY: a descriptor the caller holds open and a NUL-terminated name
    // owned here; the mode is read only with O_CREAT.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            libc::c_uint::from(mode),
        )
    })?;
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// `link(2)` of `old` to `new`, both in the directory `dir`.
pub fn link_at(
    dir: BorrowedFd<'_>,
    old: &std::ffi::OsStr,
    new: &std::ffi::OsStr,
) -> io::Result<()> {
    let (old, new) = (c_name(old)?, c_name(new)?);
    // SAFETY: a descriptor the caller holds open and two NUL-terminated
    // names owned here; no flags (symbolic links are not followed).
    check(unsafe {
        libc::linkat(
            dir.as_raw_fd(),
            old.as_ptr(),
            dir.as_raw_fd(),
            new.as_ptr(),
            0,
        )
    })
    .map(drop)
}

/// `unlink(2)` of `name` in the directory `dir`.
pub fn unlink_at(dir: BorrowedFd<'_>, name: &std::ffi::OsStr) -> io::Result<()> {
    let name = c_name(name)?;
    // SAFETY: a descriptor the caller holds open and a name owned here.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) }).map(drop)
}

/// `rename(2)` of `old` to `new`, both in the directory `dir`.
pub fn rename_at(
    dir: BorrowedFd<'_>,
    old: &std::ffi::OsStr,
    new: &std::ffi::OsStr,
) -> io::Result<()> {
    let (old, new) = (c_name(old)?, c_name(new)?);
    // SAFETY: a descriptor the caller holds open and two names owned here.
    check(unsafe { libc::renameat(dir.as_raw_fd(), old.as_ptr(), dir.as_raw_fd(), new.as_ptr()) })
        .map(drop)
}

/// Whether `name` exists in the directory `dir` (following a symbolic
/// link, as `Path::exists` does): `Ok(false)` only for `ENOENT`.
pub fn exists_at(dir: BorrowedFd<'_>, name: &std::ffi::OsStr) -> io::Result<bool> {
    let name = c_name(name)?;
    // SAFETY: stat is plain data that fstatat fills in.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a descriptor the caller holds open, a name and a buffer
    // owned here.
    match check(unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut stat, 0) }) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether an open file is a regular file, and its modification time, as
/// the kernel last saw them (statx(2) with `AT_STATX_DONT_SYNC`): on a FUSE
/// or NFS mount without attribute caching, `fstat` asks the server again,
/// while the lookup that opened the file has just brought both. A file's
/// type never changes.
pub fn cached_kind_and_mtime(file: BorrowedFd<'_>) -> io::Result<(bool, std::time::SystemTime)> {
    // SAFETY: statx is plain data that statx(2) fills in.
    let mut stat: libc::statx = unsafe { std::mem::zeroed() };
    let empty = c"";
    // SAFETY: a descriptor the caller holds open, an empty NUL-terminated
    // path (AT_EMPTY_PATH: the descriptor itself) and a buffer owned here.
    check(unsafe {
        libc::statx(
            file.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_DONT_SYNC,
            libc::STATX_TYPE | libc::STATX_MTIME,
            &mut stat,
        )
    })?;
    let is_file = u32::from(stat.stx_mode) & libc::S_IFMT == libc::S_IFREG;
    let seconds = stat.stx_mtime.tv_sec;
    let nanos = Duration::from_nanos(u64::from(stat.stx_mtime.tv_nsec));
    let mtime = if seconds >= 0 {
        std::time::UNIX_EPOCH + Duration::from_secs(seconds.unsigned_abs()) + nanos
    } else {
        std::time::UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs()) + nanos
    };
    Ok((is_file, mtime))
}

/// Which directory `path` is, mount included: device, inode and mount id
/// (statx(2), `STATX_MNT_ID`; 0 where the kernel does not say). The mount
/// tells a directory from itself seen through another mount on top, e.g. a
/// read-only bind mount: a descriptor opened before still writes through
/// the mount it was opened on. None of the three can change for what a
/// path resolved to, so the kernel is not asked to fetch fresh attributes
/// (`AT_STATX_DONT_SYNC`): on a FUSE mount without attribute caching that
/// saves a round trip; the lookup of the path itself still goes to the
/// server.
pub fn directory_identity(path: &std::path::Path) -> io::Result<(u64, u64, u64)> {
    let path = c_name(path.as_os_str())?;
    identity(libc::AT_FDCWD, &path, libc::AT_STATX_DONT_SYNC)
}

/// [`directory_identity`] of an open directory.
pub fn open_identity(file: BorrowedFd<'_>) -> io::Result<(u64, u64, u64)> {
    identity(file.as_raw_fd(), c"", libc::AT_EMPTY_PATH)
}

fn identity(dir: RawFd, path: &std::ffi::CStr, flags: libc::c_int) -> io::Result<(u64, u64, u64)> {
    // SAFETY: statx is plain data that statx(2) fills in.
    let mut stat: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a descriptor (or AT_FDCWD), a NUL-terminated path and a
    // buffer, all valid for the call.
    check(unsafe {
        libc::statx(
            dir,
            path.as_ptr(),
            flags,
            libc::STATX_INO | libc::STATX_MNT_ID,
            &mut stat,
        )
    })?;
    let mount = if stat.stx_mask & libc::STATX_MNT_ID != 0 {
        stat.stx_mnt_id
    } else {
        0
    };
    let dev = (u64::from(stat.stx_dev_major) << 32) | u64::from(stat.stx_dev_minor);
    Ok((dev, stat.stx_ino, mount))
}

/// CPU time this process has used so far, all threads, user and system.
pub fn cpu_time() -> io::Result<Duration> {
    // SAFETY: rusage is plain data that getrusage fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to an rusage owned here.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let time = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    Ok(time(usage.ru_utime) + time(usage.ru_stime))
}

/// Clock ticks per second, the unit of the CPU times in `/proc/PID/stat`.
pub fn clock_ticks_per_second() -> Option<u64> {
    // SAFETY: sysconf takes a plain number and has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::os::fd::AsFd;

    #[test]
    fn socket_options_round_trip() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = listener.as_fd();
        set_socket_timeout(fd, SocketTimeout::Receive, Duration::from_secs(7)).unwrap();
        assert_eq!(socket_option(fd, libc::SO_ACCEPTCONN).unwrap(), 1);
        assert_eq!(socket_option(fd, libc::SO_TYPE).unwrap(), libc::SOCK_STREAM);
        set_socket_option(fd, libc::SO_SNDBUF, 4096).unwrap();
        // Linux doubles it for its bookkeeping.
        assert_eq!(socket_option(fd, libc::SO_SNDBUF).unwrap(), 8192);
        set_cloexec(fd).unwrap();
        assert!(inode_of(listener.as_raw_fd()).is_ok());
        assert!(inode_of(-1).is_err());
    }

    #[test]
    fn a_pending_signal_is_taken_by_wait() {
        // SIGWINCH is ignored by default and used by nothing else in the
        // tests; blocked in this thread, a kill(2) of the process waits for
        // sigtimedwait here (or in another thread that blocks it too).
        let set = SignalSet::of(&[libc::SIGWINCH]);
        set.block().unwrap();
        assert_eq!(set.wait(Duration::ZERO), None);
        // SAFETY: raise(3) sends the signal to this thread.
        unsafe { libc::raise(libc::SIGWINCH) };
        assert_eq!(
            set.wait(Duration::from_secs(1)).map(|r| r.signal),
            Some(libc::SIGWINCH)
        );
    }

    #[test]
    fn cpu_time_and_ticks() {
        assert!(cpu_time().is_ok());
        assert!(clock_ticks_per_second().is_some());
    }
}
