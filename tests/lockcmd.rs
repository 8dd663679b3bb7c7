//! lockcmd against the real daemon, and against servers that are down,
//! silent or not lockd: every command and every exit status.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::thread;

use crate::support::Daemon;

const LOCKCMD: &str = env!("CARGO_BIN_EXE_lockcmd");

/// What a lockcmd run did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// A lockcmd command line with no `$LOCKD_URL` from outside.
fn command(args: &[&str]) -> Command {
    let mut command = Command::new(LOCKCMD);
    command
        .args(args)
        .env_remove("LOCKD_URL")
        .stdin(Stdio::null());
    command
}

fn run(command: &mut Command) -> Run {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
        .into()
}

/// `lockcmd -s SERVER ARGS...`
fn lockcmd(server: &str, args: &[&str]) -> Run {
    let mut all = vec!["-s", server];
    all.extend_from_slice(args);
    run(&mut command(&all))
}

#[track_caller]
fn expect(run: &Run, code: i32, stderr: &str) {
    assert_eq!(run.code, Some(code), "{run:?}");
    assert!(
        run.stderr.contains(stderr),
        "stderr lacks {stderr:?}: {run:?}"
    );
}

fn status(daemon: &Daemon, resource: &str) -> String {
    let out = lockcmd(&daemon.url(), &["status", resource]);
    assert_eq!(out.code, Some(0), "{out:?}");
    out.stdout
}

#[test]
fn lock_and_unlock_with_lockds_refusals() {
    let daemon = Daemon::start();
    let url = daemon.url();
    let ok = lockcmd(&url, &["lock", "resource1", "client1"]);
    assert_eq!(
        (ok.code, ok.stdout.as_str(), ok.stderr.as_str()),
        (Some(0), "", "")
    );
    let refused = lockcmd(&url, &["lock", "resource1", "client2"]);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert_eq!(
        refused.stderr,
        "lockcmd: Resource already locked by 'client1'\n"
    );
    let refused = lockcmd(&url, &["unlock", "resource1", "client2"]);
    assert_eq!(
        (refused.code, refused.stderr.as_str()),
        (
            Some(1),
            "lockcmd: Resource locked by 'client1' cannot be unlocked by 'client2'\n"
        )
    );
    let quiet = lockcmd(&url, &["-q", "lock", "resource1", "client2"]);
    assert_eq!((quiet.code, quiet.stderr.as_str()), (Some(1), ""));
    assert!(status(&daemon, "resource1").contains("locked by client1"));
    expect(&lockcmd(&url, &["unlock", "resource1", "client1"]), 0, "");
    let refused = lockcmd(&url, &["unlock", "resource1", "client1"]);
    assert_eq!(
        (refused.code, refused.stderr.as_str()),
        (Some(1), "lockcmd: Resource not locked\n")
    );
    assert_eq!(daemon.lock_files(), ["lockd.lock", "lockd.ranges"]);
}

#[test]
fn status_and_list_for_people_and_tools() {
    let daemon = Daemon::start();
    let url = daemon.url();
    assert_eq!(status(&daemon, "vm1"), "vm1 is free\n");
    let empty = lockcmd(&url, &["list"]);
    assert_eq!((empty.code, empty.stdout.as_str()), (Some(0), ""));
    for (resource, client) in [
        ("vm2", "node2"),
        ("vm1", "node1"),
        ("tab\there", "back\\slash"),
    ] {
        expect(&lockcmd(&url, &["lock", resource, client]), 0, "");
    }
    let shown = status(&daemon, "vm1");
    let since = shown
        .strip_prefix("vm1 is locked by node1 since ")
        .unwrap_or_else(|| panic!("{shown:?}"))
        .trim_end();
    assert_rfc3339(since);

    let list = lockcmd(&url, &["list"]);
    assert_eq!(list.code, Some(0), "{list:?}");
    let rows: Vec<Vec<&str>> = list
        .stdout
        .lines()
        .map(|l| l.split('\t').collect())
        .collect();
    let names: Vec<[&str; 2]> = rows.iter().map(|row| [row[0], row[1]]).collect();
    assert_eq!(
        names,
        [
            ["tab\\there", "back\\\\slash"],
            ["vm1", "node1"],
            ["vm2", "node2"]
        ],
        "{list:?}"
    );
    for row in &rows {
        assert_eq!(row.len(), 4, "{list:?}");
        assert_rfc3339(row[2]);
        assert_eq!(row[3], "0", "taken with lock: no token");
    }

    let script = "import json, sys\n\
                  for lock in json.load(sys.stdin):\n    \
                      assert lock['locked'] is True and lock['since'].endswith('Z')\n    \
                      print(repr((lock['resource'], lock['client'])))";
    let json = lockcmd(&url, &["list", "--json"]);
    assert_eq!(json.code, Some(0), "{json:?}");
    assert_eq!(
        python(script, &json.stdout),
        "('tab\\there', 'back\\\\slash')\n('vm1', 'node1')\n('vm2', 'node2')\n"
    );
    let script = "import json, sys\nprint(json.load(sys.stdin))";
    let one = lockcmd(&url, &["status", "--json", "vm2"]);
    assert!(
        python(script, &one.stdout)
            .starts_with("{'resource': 'vm2', 'locked': True, 'client': 'node2', 'since': '")
    );
    let free = lockcmd(&url, &["--json", "status", "vm3"]);
    assert_eq!(
        python(script, &free.stdout),
        "{'resource': 'vm3', 'locked': False}\n"
    );
    let none = Daemon::start();
    let empty = lockcmd(&none.url(), &["list", "--json"]);
    assert_eq!(python(script, &empty.stdout), "[]\n");
}

#[track_caller]
fn assert_rfc3339(time: &str) {
    let shape: String = time
        .chars()
        .map(|c| if c.is_ascii_digit() { '9' } else { c })
        .collect();
    assert_eq!(shape, "9999-99-99T99:99:99Z", "{time:?}");
}

/// Run a Python script with `input` on stdin; its stdout.
fn python(script: &str, input: &str) -> String {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    let mut stdin = child.stdin.take().expect("python's stdin");
    stdin.write_all(input.as_bytes()).expect("write to python");
    drop(stdin);
    let output = child.wait_with_output().expect("python runs");
    assert!(
        output.status.success(),
        "python failed on {input:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("python prints UTF-8")
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let daemon = Daemon::start();
    let url = daemon.url();
    for (args, message) in [
        (&[][..], "no command given"),
        (&["frobnicate"], "unknown command \"frobnicate\""),
        (&["lock", "r"], "lock takes RESOURCE CLIENT, got 1 argument"),
        (&["lock", "r", "c", "x"], "got 3 arguments"),
        (&["unlock"], "unlock takes RESOURCE CLIENT"),
        (&["status"], "status takes RESOURCE"),
        (&["list", "x"], "list takes no arguments"),
        (&["lock", "", "c"], "empty"),
        (&["run", "r", "c", "true"], "run needs --"),
        (&["run", "r", "c", "--"], "no COMMAND"),
        (&["lock", "r", "c", "--", "true"], "only run does"),
        (
            &["--wait", "1", "unlock", "r", "c"],
            "--wait is for lock, acquire and run",
        ),
        (
            &["--wait", "soon", "lock", "r", "c"],
            "--wait takes a number",
        ),
        (&["--wait", "-1", "lock", "r", "c"], "--wait takes a number"),
        (
            &["--timeout", "0", "list"],
            "--timeout takes a number of seconds above 0",
        ),
        (
            &["--json", "lock", "r", "c"],
            "--json is for status, list, acquire, break and fence",
        ),
        (&["--bogus", "list"], "bogus"),
    ] {
        let out = lockcmd(&url, args);
        expect(&out, 2, message);
        assert!(out.stderr.contains("lockcmd --help"), "{out:?}");
    }
    for server in ["https://127.0.0.1:1/", "127.0.0.1:x", "::1"] {
        expect(&lockcmd(server, &["list"]), 2, "");
    }
    // A command line that names nothing of lockd's touches nothing.
    assert_eq!(daemon.lock_files(), ["lockd.lock", "lockd.ranges"]);
    let help = run(&mut command(&["--help"]));
    assert_eq!(help.code, Some(0), "{help:?}");
    for text in ["Exit status", "69", "75", "128+N", "stays held", "--wait"] {
        assert!(help.stdout.contains(text), "help lacks {text:?}");
    }
    let version = run(&mut command(&["-V"]));
    assert_eq!(
        (version.code, version.stdout.trim()),
        (Some(0), concat!("lockcmd ", env!("CARGO_PKG_VERSION")))
    );
}

#[test]
fn an_invalid_call_exits_65() {
    let daemon = Daemon::start();
    let out = lockcmd(&daemon.url(), &["lock", "vm1", "two\nlines"]);
    expect(&out, 65, "line break");
    expect(
        &lockcmd(&daemon.url(), &["lock", "vm1", " padded"]),
        65,
        "white space",
    );
    assert_eq!(daemon.lock_files(), ["lockd.lock", "lockd.ranges"]);
}

#[test]
fn a_daemon_that_is_down_exits_69() {
    let addr = free_address();
    let out = lockcmd(&addr.to_string(), &["lock", "vm1", "node1"]);
    expect(&out, 69, &format!("cannot reach http://{addr}/RPC2"));
    // --wait retries an unreachable daemon, and then gives up with 69 too.
    let out = lockcmd(
        &addr.to_string(),
        &["--wait", "0.5", "lock", "vm1", "node1"],
    );
    expect(&out, 69, "gave up after waiting 0.5 s");
    expect(&lockcmd(&addr.to_string(), &["list"]), 69, "cannot reach");
}

/// An address nobody listens on (for now).
fn free_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("bound address")
}

#[test]
fn a_server_that_is_not_lockd_exits_69() {
    let html = "<!DOCTYPE html><html><body>It works!</body></html>";
    for (reply, message) in [
        (
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{html}",
                html.len()
            ),
            "the reply is text/html, not XML-RPC",
        ),
        (
            "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nNot Found"
                .to_owned(),
            "it answered HTTP 404 Not Found",
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 9\r\n\r\n<a>b</a>\n"
                .to_owned(),
            "the reply is not XML-RPC",
        ),
        (
            "SSH-2.0-OpenSSH_9.6\r\n".to_owned(),
            "it did not answer HTTP",
        ),
        (String::new(), "closed the connection without answering"),
    ] {
        let (addr, server) = answer_once(reply);
        let out = lockcmd(&addr.to_string(), &["lock", "vm1", "node1"]);
        expect(&out, 69, message);
        server.join().expect("the fake server ran");
    }
}

/// A server that reads one request and answers it with `reply`, then closes.
fn answer_once(reply: String) -> (SocketAddr, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("bound address");
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        read_request(&stream);
        let _ = (&stream).write_all(reply.as_bytes());
        let _ = stream.shutdown(std::net::Shutdown::Write);
        // Wait for lockcmd to close its end, so no reset loses the reply.
        let _ = (&stream).read_to_end(&mut Vec::new());
    });
    (addr, server)
}

/// Read an HTTP request with a Content-Length body.
fn read_request(stream: &TcpStream) {
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some(n) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = n.trim().parse().expect("a length");
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("the request body");
}

#[test]
fn a_server_that_never_answers_exits_75() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("bound address");
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        // Hold the connection open, unanswered, until lockcmd gives up.
        let _ = (&stream).read_to_end(&mut Vec::new());
    });
    let out = lockcmd(
        &addr.to_string(),
        &["--timeout", "1", "lock", "vm1", "node1"],
    );
    expect(&out, 75, "did not answer within 1 s");
    server.join().expect("the silent server ran");
}

#[test]
fn lockd_url_names_the_server_unless_s_does() {
    let daemon = Daemon::start();
    let with_env = |url: &str, args: &[&str]| run(command(args).env("LOCKD_URL", url));
    expect(&with_env(&daemon.url(), &["lock", "vm1", "node1"]), 0, "");
    expect(
        &with_env(&format!("{}/RPC2", daemon.url()), &["lock", "vm2", "node1"]),
        0,
        "",
    );
    expect(
        &with_env(&daemon.addr.to_string(), &["lock", "vm3", "node1"]),
        0,
        "",
    );
    let listed = with_env(&daemon.url(), &["list"]);
    assert_eq!(listed.stdout.lines().count(), 3, "{listed:?}");
    // -s wins over $LOCKD_URL.
    let dead = free_address().to_string();
    let mut both = command(&["-s", &daemon.url(), "unlock", "vm1", "node1"]);
    expect(&run(both.env("LOCKD_URL", &dead)), 0, "");
    expect(&with_env(&dead, &["list"]), 69, &dead);
}

#[test]
fn wait_takes_the_lock_once_it_is_released() {
    let daemon = Daemon::start();
    let url = daemon.url();
    expect(&lockcmd(&url, &["lock", "vm1", "node1"]), 0, "");
    thread::scope(|scope| {
        let releaser = scope.spawn(|| {
            // Release only once node2 has been turned away at least once.
            assert!(
                daemon.wait_for_log("lock \"vm1\" by \"node2\""),
                "node2 never asked"
            );
            expect(&lockcmd(&url, &["unlock", "vm1", "node1"]), 0, "");
        });
        let waited = lockcmd(&url, &["--wait", "60", "lock", "vm1", "node2"]);
        expect(&waited, 0, "");
        releaser.join().expect("the releaser ran");
    });
    assert!(status(&daemon, "vm1").contains("locked by node2"));
}

#[test]
fn wait_gives_up_with_1_when_the_lock_stays_held() {
    let daemon = Daemon::start();
    let url = daemon.url();
    expect(&lockcmd(&url, &["lock", "vm1", "node1"]), 0, "");
    let out = lockcmd(&url, &["--wait", "1", "lock", "vm1", "node2"]);
    expect(
        &out,
        1,
        "lockcmd: Resource already locked by 'node1'; gave up after waiting 1 s",
    );
    let out = lockcmd(&url, &["-w", "0.2", "run", "vm1", "node2", "--", "true"]);
    expect(&out, 1, "already locked by 'node1'");
    assert!(status(&daemon, "vm1").contains("locked by node1"));
}

#[test]
fn run_holds_the_lock_while_the_command_runs_and_releases_it() {
    let daemon = Daemon::start();
    let url = daemon.url();
    // The command sees the lock held, by its own lockcmd.
    let out = lockcmd(
        &url,
        &[
            "run", "vm1", "node1", "--", LOCKCMD, "-s", &url, "status", "vm1",
        ],
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.starts_with("vm1 is locked by node1 since "),
        "{out:?}"
    );
    assert_eq!(status(&daemon, "vm1"), "vm1 is free\n");

    for (command, code) in [
        (&["sh", "-c", "exit 3"][..], 3),
        (&["sh", "-c", "kill -9 $$"], 128 + 9),
        (&["sh", "-c", "kill -TERM $$"], 128 + 15),
        (&["/nonexistent/command"], 127),
        (&["/"], 126),
    ] {
        let mut args = vec!["run", "vm1", "node1", "--"];
        args.extend_from_slice(command);
        let out = lockcmd(&url, &args);
        assert_eq!(out.code, Some(code), "{command:?}: {out:?}");
        assert_eq!(status(&daemon, "vm1"), "vm1 is free\n", "{command:?}");
    }

    // A refused lock runs nothing.
    expect(&lockcmd(&url, &["lock", "vm1", "node1"]), 0, "");
    let marker = daemon.dir.with_file_name("ran");
    let touch = marker.to_str().expect("a UTF-8 path");
    let out = lockcmd(&url, &["run", "vm1", "node2", "--", "touch", touch]);
    expect(&out, 1, "lockcmd: Resource already locked by 'node1'");
    assert!(!marker.exists(), "the command ran without the lock");
}

#[test]
fn run_reports_a_lock_it_could_not_release() {
    let daemon = Daemon::start();
    let url = daemon.url();
    // The command releases the lock behind lockcmd's back.
    let unlock = format!("{LOCKCMD} -s {url} unlock vm1 node1");
    let out = lockcmd(&url, &["run", "vm1", "node1", "--", "sh", "-c", &unlock]);
    expect(
        &out,
        1,
        "could not release the lock on \"vm1\": Resource not locked",
    );
    // A failing command keeps its own status.
    let failing = format!("{unlock}; exit 4");
    let out = lockcmd(&url, &["run", "vm1", "node1", "--", "sh", "-c", &failing]);
    expect(&out, 4, "could not release");
    // The command succeeds, but lockd is gone when the lock is to be released.
    let doomed = Daemon::start();
    let kill = format!("kill -9 {}", doomed.pid());
    let out = lockcmd(
        &doomed.url(),
        &["run", "vm1", "node1", "--", "sh", "-c", &kill],
    );
    expect(&out, 69, "it may still be held");
}

/// Start `lockcmd run ... -- sh -c SCRIPT` and read the first line it prints.
fn start_run(url: &str, script: &str) -> (std::process::Child, String) {
    let mut child = command(&["-s", url, "run", "vm1", "node1", "--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start lockcmd");
    let stdout = child.stdout.take().expect("lockcmd's stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the command's first line");
    (child, line.trim().to_owned())
}

fn kill(pid: u32, signal: i32) {
    let _ = lockd::sys::kill(pid, signal);
}

#[test]
fn run_passes_sigterm_on_and_then_releases() {
    let daemon = Daemon::start();
    let (mut child, line) = start_run(&daemon.url(), "echo started; exec sleep 60");
    assert_eq!(line, "started");
    kill(child.id(), libc::SIGTERM);
    let ended = child.wait().expect("lockcmd ends");
    assert_eq!(ended.code(), Some(128 + libc::SIGTERM), "{ended:?}");
    assert_eq!(status(&daemon, "vm1"), "vm1 is free\n");
}

#[test]
fn a_killed_lockcmd_leaves_the_lock_held() {
    let daemon = Daemon::start();
    let (mut child, pid) = start_run(&daemon.url(), "echo $$; exec sleep 60");
    let pid: u32 = pid.parse().expect("the command's pid");
    kill(child.id(), libc::SIGKILL);
    let _ = child.wait();
    kill(pid, libc::SIGKILL);
    assert!(status(&daemon, "vm1").starts_with("vm1 is locked by node1"));
    expect(&lockcmd(&daemon.url(), &["unlock", "vm1", "node1"]), 0, "");
}

#[test]
fn fencing_verbs_and_their_exit_statuses() {
    let daemon = Daemon::start();
    let url = daemon.url();
    // The worked example of docs/fencing.md: node3 takes vm7.
    let first = lockcmd(&url, &["acquire", "vm7", "node3"]);
    expect(&first, 0, "");
    let token: i32 = first.stdout.trim().parse().expect("a token");
    let old = token.to_string();
    expect(&lockcmd(&url, &["check", "vm7", "node3", &old]), 0, "");
    let taken = lockcmd(&url, &["acquire", "vm7", "node1"]);
    expect(&taken, 1, "Resource already locked by 'node3'");
    let shown = lockcmd(&url, &["status", "vm7"]).stdout;
    assert!(shown.ends_with(&format!("(token {token})\n")), "{shown}");
    // node3 dies; the cluster manager powers it off and fences it.
    expect(
        &lockcmd(&url, &["fence", "node3"]),
        2,
        "fence needs --reason",
    );
    let fenced = lockcmd(
        &url,
        &["fence", "node3", "--reason", "powered off by stonith"],
    );
    expect(&fenced, 0, "");
    let row: Vec<&str> = fenced.stdout.trim_end().split('\t').collect();
    assert_eq!(
        (row[0], row[1], row[3]),
        ("vm7", "node3", old.as_str()),
        "{fenced:?}"
    );
    // node1 takes vm7 with a larger token; node3's late write is refused.
    let second = lockcmd(&url, &["--json", "acquire", "vm7", "node1"]);
    expect(&second, 0, "");
    let parsed = python(
        "import json, sys\nl = json.load(sys.stdin)\nprint(l['resource'], l['client'], l['token'])",
        &second.stdout,
    );
    let newer: i32 = parsed
        .strip_prefix("vm7 node1 ")
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("{parsed:?}"));
    assert!(newer > token);
    expect(&lockcmd(&url, &["check", "vm7", "node3", &old]), 1, "");
    expect(
        &lockcmd(&url, &["check", "vm7", "node3", "x"]),
        2,
        "TOKEN must be a whole number",
    );
    // A late release of the old grant frees nothing.
    expect(
        &lockcmd(&url, &["release", "vm7", "node3", &old]),
        1,
        "Resource locked by 'node1'",
    );
    // An operator breaks node1's grant, naming it exactly.
    let new = newer.to_string();
    expect(
        &lockcmd(&url, &["break", "vm7", "node1", &old, "--reason", "stuck"]),
        1,
        &format!("under token {newer}, not by 'node1' under token {token}"),
    );
    let broken = lockcmd(&url, &["break", "vm7", "node1", &new, "--reason", "stuck"]);
    expect(&broken, 0, "");
    let row: Vec<&str> = broken.stdout.trim_end().split('\t').collect();
    assert_eq!(
        (row[0], row[1], row[3]),
        ("vm7", "node1", new.as_str()),
        "{broken:?}"
    );
    expect(
        &lockcmd(&url, &["release", "vm7", "node1", &new]),
        1,
        "Resource not locked",
    );
    let audit = std::fs::read_to_string(daemon.dir.join("lockd.audit.jsonl")).unwrap();
    assert_eq!(audit.lines().count(), 2, "{audit}");
}

#[test]
fn run_passes_the_grant_to_the_command_and_releases_that_grant() {
    let daemon = Daemon::start();
    let url = daemon.url();
    let script = format!(
        "echo \"$LOCKD_RESOURCE $LOCKD_CLIENT $LOCKD_TOKEN\"; {LOCKCMD} -s {url} check \"$LOCKD_RESOURCE\" \"$LOCKD_CLIENT\" \"$LOCKD_TOKEN\""
    );
    let out = lockcmd(&url, &["run", "vm1", "node1", "--", "sh", "-c", &script]);
    expect(&out, 0, "");
    assert_eq!(out.stdout, "vm1 node1 1\n");
    let out = lockcmd(&url, &["run", "vm1", "node1", "--", "sh", "-c", &script]);
    assert_eq!(
        out.stdout, "vm1 node1 2\n",
        "the next grant, a larger token"
    );
    assert_eq!(
        daemon.lock_files(),
        ["lockd.lock", "lockd.ranges", "vm1.resource.last"]
    );
}

/// An address nothing listens on: a port below the ephemeral range, which
/// no test server is given (one bound and closed could be taken by a
/// daemon of another test in the meantime).
fn closed_port(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

#[test]
fn several_servers_a_call_goes_to_the_first_that_can_be_reached() {
    let first = Daemon::start();
    let second = Daemon::start_in(&first.dir);
    let down = closed_port(1);
    let servers = format!("{down},{},{}", second.url(), first.url());
    expect(&lockcmd(&servers, &["lock", "vm1", "node1"]), 0, "");
    // (The log line follows the reply: wait for it.)
    assert!(
        second.wait_for_log("lock \"vm1\" by \"node1\""),
        "{}",
        second.log()
    );
    assert!(!first.log().contains("\"vm1\""), "{}", first.log());
    let out = lockcmd(&servers, &["status", "vm1"]);
    assert!(out.stdout.starts_with("vm1 is locked by node1"), "{out:?}");
    // None can be reached: the message names them all.
    let other = closed_port(2);
    let out = lockcmd(&format!("{down},{other}"), &["lock", "vm2", "node1"]);
    expect(
        &out,
        69,
        &format!("cannot reach http://{other}/RPC2, nor http://{down}/RPC2"),
    );
    // LOCKD_URL takes the same list.
    let listed = format!("{down},{}", first.url());
    expect(
        &run(command(&["unlock", "vm1", "node1"]).env("LOCKD_URL", &listed)),
        0,
        "",
    );
}

#[test]
fn after_a_timeout_the_call_is_not_sent_to_another_server() {
    let daemon = Daemon::start();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent = listener.local_addr().expect("bound address");
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let _ = (&stream).read_to_end(&mut Vec::new());
    });
    let servers = format!("{silent},{}", daemon.url());
    let out = lockcmd(&servers, &["--timeout", "1", "lock", "vm1", "node1"]);
    expect(&out, 75, &format!("{silent}"));
    server.join().expect("the silent server ran");
    // The lock was not taken elsewhere: the first call may have been done.
    let status = lockcmd(&daemon.url(), &["status", "vm1"]);
    assert_eq!(status.stdout, "vm1 is free\n");
}
