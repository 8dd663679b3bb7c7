//! Test support: start the real `lockd` binary on port 0 with its own lock
//! directory, talk to it with curl and Python's xmlrpc.client, and show its
//! log when a test fails.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lockd::http;
use lockd::xmlrpc::{self, Call, Value};

pub const LOCKD: &str = env!("CARGO_BIN_EXE_lockd");

/// How long a test waits for anything lockd should do soon: a hang guard.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A process started by a test, its stderr collected as its log. Killed on
/// drop; its log is printed if the test failed.
pub struct Process {
    child: Option<Child>,
    log: Arc<Mutex<String>>,
}

/// `program` without the variables (systemd's, or the test's own
/// `RUST_LOG`) that change how lockd behaves.
pub fn clean_command(program: &str) -> Command {
    let mut command = Command::new(program);
    for var in [
        "RUST_LOG",
        "JOURNAL_STREAM",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "LISTEN_FDS",
        "LISTEN_PID",
        "STATE_DIRECTORY",
    ] {
        command.env_remove(var);
    }
    command
}

impl Process {
    /// Start `command` with stdin and stdout closed and stderr collected.
    pub fn spawn(command: &mut Command) -> Process {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Process {
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Wait (up to [`PATIENCE`]) until the log contains `text`.
    pub fn wait_for_log(&self, text: &str) -> bool {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if self.log().contains(text) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The address from lockd's start-up line, once it has logged it.
    pub fn listening_address(&self) -> SocketAddr {
        let started = "listening on http://";
        assert!(
            self.wait_for_log(started),
            "lockd did not start; its log:\n{}",
            self.log()
        );
        let log = self.log();
        log.split(started)
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in lockd's start-up line:\n{log}"))
    }

    /// SIGKILL, and wait for the process to end.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Send a signal and wait for the exit status.
    pub fn signal_and_wait(&mut self, signal: i32) -> ExitStatus {
        let _ = lockd::sys::kill(self.pid(), signal);
        self.wait_exit()
    }

    /// Wait (up to [`PATIENCE`]) for the process to exit by itself.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let child = self.child.as_mut().expect("running");
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the process did not exit; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().map(|s| s.is_none()).unwrap_or(false),
            None => false,
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("--- lockd log ---\n{}--- end of lockd log ---", self.log());
        }
    }
}

/// A running lockd on its own lock directory; the process calls (log,
/// signals) are [`Process`]'s.
pub struct Daemon {
    process: Process,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl std::ops::Deref for Daemon {
    type Target = Process;

    fn deref(&self) -> &Process {
        &self.process
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.process
    }
}

pub struct Options {
    pub dir: Option<PathBuf>,
    pub listen: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Shell commands run before lockd is exec'd from `sh -c` (with the
    /// same stdio), e.g. to export a variable computed from its stderr.
    pub shell_prelude: Option<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            dir: None,
            listen: "127.0.0.1:0".into(),
            args: Vec::new(),
            env: Vec::new(),
            shell_prelude: None,
        }
    }
}

impl Daemon {
    /// lockd on a fresh temporary directory.
    pub fn start() -> Daemon {
        Daemon::start_with(Options::default())
    }

    /// lockd on `dir` (kept after the daemon stops).
    pub fn start_in(dir: &Path) -> Daemon {
        Daemon::start_with(Options {
            dir: Some(dir.to_path_buf()),
            ..Options::default()
        })
    }

    pub fn start_with(options: Options) -> Daemon {
        let (temp, dir) = match options.dir {
            Some(dir) => (None, dir),
            None => {
                let temp = tempfile::tempdir().expect("temporary directory");
                let dir = temp.path().join("locks");
                (Some(temp), dir)
            }
        };
        let mut command = match &options.shell_prelude {
            None => clean_command(LOCKD),
            Some(prelude) => {
                let mut sh = clean_command("sh");
                sh.arg("-c")
                    .arg(format!("{prelude}\nexec \"$0\" \"$@\""))
                    .arg(LOCKD);
                sh
            }
        };
        command
            .arg("--dir")
            .arg(&dir)
            .arg("--listen")
            .arg(&options.listen)
            .args(&options.args)
            .envs(options.env.iter().map(|(k, v)| (k, v)));
        let process = Process::spawn(&mut command);
        let addr = process.listening_address();
        Daemon {
            process,
            addr,
            dir,
            _temp: temp,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The file names in the lock directory, sorted.
    pub fn files(&self) -> Vec<String> {
        files_in(&self.dir)
    }

    /// The file names in the lock directory without lockd's content files
    /// (`.lockd-*.tmp`, shared by a client's locks for up to a second).
    pub fn lock_files(&self) -> Vec<String> {
        self.files()
            .into_iter()
            .filter(|f| !(f.starts_with(".lockd-") && f.ends_with(".tmp")))
            .collect()
    }

    /// Call a method with Python's xmlrpc.client; see [`python`].
    pub fn py(&self, calls: &str) -> String {
        python(&self.url(), calls)
    }

    /// POST a body with curl; returns the response body.
    pub fn curl(&self, path: &str, body: &str) -> String {
        curl(&[
            &format!("{}{}", self.url(), path),
            "-H",
            "Content-Type: text/xml",
            "--data-binary",
            body,
        ])
    }
}

pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// Run a Python snippet with `s` bound to `xmlrpc.client.ServerProxy(url)`
/// and `x` to `xmlrpc.client`. `call(expr)` prints the result or
/// `FAULT <code> <string>`, one line per call. Returns stdout.
pub fn python(url: &str, calls: &str) -> String {
    let script = format!(
        "import sys, xmlrpc.client as x\n\
         s = x.ServerProxy(sys.argv[1])\n\
         def call(f):\n    try:\n        print(repr(f()))\n    except x.Fault as e:\n        print('FAULT', e.faultCode, e.faultString)\n\
         {calls}\n"
    );
    let output = run(Command::new("python3").arg("-c").arg(&script).arg(url));
    assert!(
        output.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        script
    );
    String::from_utf8(output.stdout).expect("python prints UTF-8")
}

/// Run curl with `args` (silent, failing on nothing); returns stdout.
pub fn curl(args: &[&str]) -> String {
    let output = run(Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args));
    assert!(
        output.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn run(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// Give up on a test that cannot run on this machine, `missing` naming what
/// it lacks. In CI (`CI` set) that fails the test: a suite that passes
/// without testing proves nothing. Elsewhere the test says it is skipped;
/// the caller then returns.
pub fn cannot_run(test: &str, missing: &str) {
    let missing = missing.trim();
    if std::env::var_os("CI").is_some() {
        panic!("{test} cannot run: {missing}; CI must provide it");
    }
    eprintln!("{test}: skipped: {missing}");
}

/// An XML-RPC call body as Python's xmlrpc.client writes it.
pub fn call_body(method: &str, params: &[&str]) -> String {
    let call = Call {
        method: method.to_owned(),
        params: params.iter().map(|p| Value::Str((*p).to_owned())).collect(),
    };
    String::from_utf8(xmlrpc::write_call_as_python(&call)).expect("the codec writes UTF-8")
}

/// Send raw bytes on a new connection and read the reply until the server
/// closes or `wait` passes.
pub fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(wait)).unwrap();
    let _ = stream.write_all(bytes);
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&reply).into_owned()
}

/// A one-shot HTTP/1.1 POST with Connection: close.
pub fn post(addr: SocketAddr, path: &str, body: &str) -> String {
    let host = addr.to_string();
    let headers = [
        ("Host", host.as_str()),
        ("Content-Type", "text/xml"),
        ("Connection", "close"),
    ];
    let request = http::post(path, &headers, body.as_bytes());
    raw(addr, &request, Duration::from_secs(10))
}

/// Start lockd the way systemd does for a socket unit: `listener` as file
/// descriptor 3, `LISTEN_FDS=1`, and `LISTEN_PID` set to lockd's own pid
/// (by a shell that then execs lockd, keeping its pid).
pub fn spawn_activated(listener: &std::net::TcpListener, dir: &Path) -> Process {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = listener.as_raw_fd();
    let mut command = clean_command("sh");
    command
        .arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"")
        .arg(LOCKD)
        .arg("--dir")
        .arg(dir)
        // The listener's own address: binding it would fail, so a start
        // proves lockd serves on the socket it was given.
        .arg("--listen")
        .arg(listener.local_addr().unwrap().to_string());
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let rc = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Process::spawn(&mut command)
}
