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
    // SAFETY: setsockopt on a descriptor the caller holds open, with a
    // timeval of the size passed; a descriptor that is not a socket fails
    // with ENOTSOCK.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
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
    use std::mem::ManuallyDrop;
    use std::net::TcpStream;
    use std::os::fd::FromRawFd;
    // SAFETY: the number is only borrowed for getpeername and getsockname,
    // and never closed (ManuallyDrop); on a number that is not a connected
    // socket both calls fail.
    let socket = ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(fd) });
    let peer = socket.peer_addr().ok()?;
    socket
        .local_addr()
        .is_ok_and(|local| local.port() == port)
        .then_some(peer)
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
