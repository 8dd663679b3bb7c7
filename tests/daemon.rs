//! The daemon against real clients: Python's xmlrpc.client and curl.

use std::process::Command;
use std::time::Duration;

use lockd::http;

use crate::support::{self, Daemon, LOCKD, Options, call_body};

const ALREADY: &str = "FAULT 1 <type 'exceptions.Exception'>:Resource already locked by 'client1'";
const NOT_HOLDER: &str = "FAULT 1 <type 'exceptions.Exception'>:Resource locked by 'client1' cannot be unlocked by 'client2'";
const NOT_LOCKED: &str = "FAULT 1 <type 'exceptions.Exception'>:Resource not locked";

fn seed_session(url: &str) {
    let out = support::python(
        url,
        "call(lambda: s.lock('resource1', 'client1'))\n\
         call(lambda: s.lock('resource1', 'client1'))\n\
         call(lambda: s.lock('resource1', 'client2'))\n\
         call(lambda: s.lock('resource2', 'client2'))\n\
         call(lambda: s.unlock('resource1', 'client2'))\n\
         call(lambda: s.unlock('resource1', 'client1'))\n\
         call(lambda: s.unlock('resource1', 'client1'))\n\
         call(lambda: s.unlock('resource2', 'client2'))",
    );
    let expected = [
        "None", ALREADY, ALREADY, "None", NOT_HOLDER, "None", NOT_LOCKED, "None",
    ];
    assert_eq!(out.lines().collect::<Vec<_>>(), expected);
}

#[test]
fn seed_session_from_python_on_both_paths() {
    let daemon = Daemon::start();
    seed_session(&daemon.url());
    seed_session(&format!("{}/RPC2", daemon.url()));
    assert_eq!(
        daemon.lock_files(),
        ["lockd.lock", "lockd.ranges"],
        "every lock was released and no temporary file is left"
    );
}

#[test]
fn seed_session_from_curl() {
    let daemon = Daemon::start();
    let lock = |client: &str| daemon.curl("/", &call_body("lock", &["resource1", client]));
    assert!(lock("client1").contains("<value><nil/></value>"));
    let fault = lock("client2");
    assert!(
        fault.contains("<name>faultCode</name><value><int>1</int></value>"),
        "{fault}"
    );
    assert!(
        fault.contains("<string>&lt;type 'exceptions.Exception'&gt;:Resource already locked by 'client1'</string>"),
        "{fault}"
    );
    // A hand-written body: no declaration, untyped values, odd whitespace.
    let handwritten = "<methodCall><methodName>unlock</methodName><params>\n  <param><value>resource1</value></param>\n  <param><value>client2</value></param></params></methodCall>";
    let fault = daemon.curl("/RPC2", handwritten);
    assert!(
        fault.contains("Resource locked by 'client1' cannot be unlocked by 'client2'"),
        "{fault}"
    );
    let ok = daemon.curl("/RPC2", &handwritten.replace("client2", "client1"));
    assert!(ok.contains("<nil/>"), "{ok}");
    let fault = daemon.curl("/", handwritten);
    assert!(fault.contains("Resource not locked"), "{fault}");
    let headers = support::curl(&[
        "-i",
        "-H",
        "Content-Type: text/xml",
        "--data-binary",
        &call_body("locks", &[]),
        &daemon.url(),
    ]);
    assert!(headers.starts_with("HTTP/1.1 200"), "{headers}");
    assert!(headers.contains("Content-Type: text/xml"), "{headers}");
}

#[test]
fn fault_quoting_follows_python_2() {
    let daemon = Daemon::start();
    let out = daemon.py(
        "for holder in ['O\\'Brien', 'say \"hi\"', 'both \\'and\"', 'back\\\\slash', 'tab\\there', 'caf\\u00e9']:\n    \
         s.lock('r', holder)\n    call(lambda: s.lock('r', 'other'))\n    call(lambda: s.unlock('r', 'other'))\n    s.unlock('r', holder)",
    );
    let messages: Vec<_> = out.lines().collect();
    let quoted = [
        "\"O'Brien\"",
        "'say \"hi\"'",
        "'both \\'and\"'",
        "'back\\\\slash'",
        "'tab\\there'",
        "'caf\\xc3\\xa9'",
    ];
    for (i, q) in quoted.iter().enumerate() {
        assert_eq!(
            messages[2 * i],
            format!("FAULT 1 <type 'exceptions.Exception'>:Resource already locked by {q}")
        );
        assert_eq!(
            messages[2 * i + 1],
            format!(
                "FAULT 1 <type 'exceptions.Exception'>:Resource locked by {q} cannot be unlocked by 'other'"
            )
        );
    }
}

#[test]
fn introspection_and_multicall() {
    let daemon = Daemon::start();
    let out = daemon.py(
        "call(lambda: s.system.listMethods())\n\
         call(lambda: s.system.methodSignature('lock'))\n\
         call(lambda: s.system.methodSignature('locks'))\n\
         call(lambda: 'already locked' in s.system.methodHelp('lock'))\n\
         call(lambda: s.system.methodHelp('nope'))\n\
         m = x.MultiCall(s)\n\
         m.lock('a', 'c1'); m.lock('a', 'c2'); m.nope(); m.status('a'); m.unlock('a', 'c1')\n\
         r = m().results\n\
         print(r[0]); print(r[1]['faultCode'], r[1]['faultString']); print(r[2]['faultCode']); print(r[3][0]['client']); print(r[4])\n\
         call(lambda: s.system.multicall([{'methodName': 'system.multicall', 'params': [[]]}]))\n\
         call(lambda: s.system.multicall('x'))",
    );
    let lines: Vec<_> = out.lines().collect();
    assert_eq!(
        lines[0],
        "['acquire', 'acquire_many', 'break_lock', 'check', 'fence', 'lock', 'locks', 'release', 'status', 'system.listMethods', 'system.methodHelp', 'system.methodSignature', 'system.multicall', 'unlock']"
    );
    assert_eq!(lines[1], "[['nil', 'string', 'string']]");
    assert_eq!(lines[2], "[['array']]");
    assert_eq!(lines[3], "True");
    assert_eq!(lines[4], "FAULT -32602 no method \"nope\"");
    assert_eq!(lines[5], "[None]");
    assert_eq!(
        lines[6],
        "1 <type 'exceptions.Exception'>:Resource already locked by 'c1'"
    );
    assert_eq!(lines[7], "-32601");
    assert_eq!(lines[8], "c1");
    assert_eq!(lines[9], "[None]");
    assert!(lines[10].contains("cannot be nested"), "{}", lines[10]);
    assert!(
        lines[11].starts_with(
            "FAULT -32602 system.multicall expects 1 array parameter (calls), got (string)"
        ),
        "{}",
        lines[11]
    );
    assert_eq!(daemon.lock_files(), ["lockd.lock", "lockd.ranges"]);
}

#[test]
fn status_and_locks() {
    let daemon = Daemon::start();
    let out = daemon.py(
        "import datetime\n\
         call(lambda: s.status('vm1'))\n\
         s.lock('vm2', 'node2'); s.lock('vm1', 'node1'); s.lock('a/b', 'node1')\n\
         st = s.status('vm1')\n\
         print(st['resource'], st['locked'], st['client'])\n\
         since = datetime.datetime.strptime(st['since'].value, '%Y%m%dT%H:%M:%S').replace(tzinfo=datetime.timezone.utc)\n\
         print(abs((datetime.datetime.now(datetime.timezone.utc) - since).total_seconds()) < 30)\n\
         print([(l['resource'], l['client'], l['locked']) for l in s.locks()])",
    );
    let lines: Vec<_> = out.lines().collect();
    assert_eq!(lines[0], "{'resource': 'vm1', 'locked': False}");
    assert_eq!(lines[1], "vm1 True node1");
    assert_eq!(lines[2], "True", "since is the current UTC time");
    assert_eq!(
        lines[3],
        "[('a/b', 'node1', True), ('vm1', 'node1', True), ('vm2', 'node2', True)]"
    );
}

#[test]
fn locks_survive_sigkill_and_restart() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("locks");
    let mut daemon = Daemon::start_in(&dir);
    daemon.py("s.lock('vm1', 'node1'); s.lock('vm2', 'node2'); s.unlock('vm2', 'node2'); s.lock('vm3', 'node3')");
    let killed = daemon.pid();
    daemon.kill9();
    let daemon = Daemon::start_in(&dir);
    // Only the killed process's files: the new one's self-test may be
    // writing its probe file right now.
    let leftover = format!(".lockd-{killed}-");
    assert!(
        !daemon.files().iter().any(|f| f.starts_with(&leftover)),
        "leftovers removed: {:?}",
        daemon.files()
    );
    let out = daemon.py(
        "call(lambda: s.lock('vm1', 'other'))\ncall(lambda: s.lock('vm2', 'other'))\n\
         call(lambda: [l['resource'] for l in s.locks()])\ncall(lambda: s.unlock('vm3', 'node3'))",
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "FAULT 1 <type 'exceptions.Exception'>:Resource already locked by 'node1'",
            "None",
            "['vm1', 'vm2', 'vm3']",
            "None"
        ]
    );
}

#[test]
fn a_legacy_directory_is_used_as_is() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("legacy");
    std::fs::create_dir(&dir).unwrap();
    // What gocept.lockd left: bare client strings, no newline, and its lock file.
    std::fs::write(dir.join("vm-1.example_com.resource.lock"), "node1").unwrap();
    std::fs::write(dir.join("db.resource.lock"), "node2\n").unwrap();
    std::fs::write(dir.join("lockd.lock"), " 4242\n").unwrap();
    std::fs::write(dir.join("my vm.resource.lock"), "node3").unwrap();
    let daemon = Daemon::start_in(&dir);
    assert!(daemon.log().contains("(3 locks held)"), "{}", daemon.log());
    assert!(!daemon.log().contains("WARN"), "{}", daemon.log());
    let out = daemon.py("call(lambda: s.lock('vm-1.example_com', 'node9'))\n\
         call(lambda: s.lock('my vm', 'node9'))\n\
         call(lambda: s.status('db')['client'])\n\
         call(lambda: s.unlock('vm-1.example_com', 'node1'))\n\
         call(lambda: s.unlock('db', 'node2'))");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "FAULT 1 <type 'exceptions.Exception'>:Resource already locked by 'node1'",
            "FAULT 1 <type 'exceptions.Exception'>:Resource already locked by 'node3'",
            "'node2'",
            "None",
            "None"
        ]
    );
    assert_eq!(
        daemon.lock_files(),
        ["lockd.lock", "lockd.ranges", "my vm.resource.lock"]
    );
}

#[test]
fn hostile_names_stay_inside_the_directory() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("a").join("locks");
    let daemon = Daemon::start_in(&dir);
    let names = [
        "../../x",
        "../escape",
        "/etc/passwd",
        "a/b",
        ".",
        "..",
        "lockd",
        ".lockd-1-1.tmp",
        "%2E",
        "x\ny",
        "caf\u{e9}",
    ];
    let list = names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let out = daemon.py(&format!(
        "names = [{list}]\nfor n in names: s.lock(n, 'c')\n\
         print(sorted(l['resource'] for l in s.locks()) == sorted(names))\n\
         for n in names: call(lambda: s.lock(n, 'd'))"
    ));
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("True"));
    assert!(
        lines.all(|l| l == "FAULT 1 <type 'exceptions.Exception'>:Resource already locked by 'c'"),
        "{out}"
    );
    let files = daemon.lock_files();
    assert_eq!(files.len(), names.len() + 2, "{files:?}");
    assert!(
        files
            .iter()
            .all(|f| f == "lockd.lock" || f == "lockd.ranges" || f.ends_with(".resource.lock")),
        "{files:?}"
    );
    assert_eq!(
        support::files_in(&temp.path().join("a")),
        ["locks"],
        "nothing was written beside the directory"
    );
    assert_eq!(support::files_in(temp.path()), ["a"]);
}

#[test]
fn concurrent_clients_are_never_both_granted() {
    let daemon = Daemon::start();
    let url = daemon.url();
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                support::python(
                    &url,
                    &format!("call(lambda: s.lock('shared', 'client{i}'))"),
                )
            })
        })
        .collect();
    let results: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let granted: Vec<_> = results.iter().filter(|r| r.trim() == "None").collect();
    assert_eq!(granted.len(), 1, "{results:?}");
    let holder = daemon.py("print(s.status('shared')['client'])");
    for r in results.iter().filter(|r| r.trim() != "None") {
        assert_eq!(
            r.trim(),
            format!(
                "FAULT 1 <type 'exceptions.Exception'>:Resource already locked by '{}'",
                holder.trim()
            )
        );
    }
}

#[test]
fn bad_calls_get_clear_faults_and_change_nothing() {
    let daemon = Daemon::start();
    daemon.py("s.lock('held', 'owner')");
    let out = daemon.py("call(lambda: s.lock('r'))\n\
         call(lambda: s.lock('r', 'c', 'd'))\n\
         call(lambda: s.lock('r', 5))\n\
         call(lambda: s.unlock())\n\
         call(lambda: s.status(1))\n\
         call(lambda: s.locks('x'))\n\
         call(lambda: s.frobnicate('r'))\n\
         call(lambda: s.lock('', 'c'))\n\
         call(lambda: s.lock('r', ''))\n\
         call(lambda: s.lock('r', 'a\\nb'))\n\
         call(lambda: s.lock('r', ' padded'))\n\
         call(lambda: s.lock('r' * 300, 'c'))\n\
         call(lambda: s.lock('r', 'c' * 2000))\n\
         call(lambda: s.unlock('held', ''))\n\
         call(lambda: [l['resource'] for l in s.locks()])");
    let lines: Vec<_> = out.lines().collect();
    let expect = [
        "FAULT -32602 lock expects 2 string parameters (resource, client), got 1",
        "FAULT -32602 lock expects 2 string parameters (resource, client), got 3",
        "FAULT -32602 lock expects 2 string parameters (resource, client), got (string, int)",
        "FAULT -32602 unlock expects 2 string parameters (resource, client), got 0",
        "FAULT -32602 status expects 1 string parameter (resource), got (int)",
        "FAULT -32602 locks expects no parameters, got 1",
        "FAULT -32601 no method \"frobnicate\"; system.listMethods lists the methods lockd serves",
        "FAULT -32602 the resource name is empty: name the resource to lock",
        "FAULT -32602 the client string is empty: say who takes the lock",
        "FAULT -32602 the client string contains a line break or NUL",
        "FAULT -32602 the client string starts or ends with white space",
        "FAULT -32602 the resource name is too long: its lock file name needs 300 bytes before the suffix, the limit is 241",
        "FAULT -32602 the client string is 2000 bytes long, the limit is 1024",
        "FAULT 1 <type 'exceptions.Exception'>:Resource locked by 'owner' cannot be unlocked by ''",
        "['held']",
    ];
    assert_eq!(lines.len(), expect.len(), "{out}");
    for (line, expected) in lines.iter().zip(expect) {
        assert!(
            line.starts_with(expected),
            "{line:?} does not start with {expected:?}"
        );
    }
    assert_eq!(
        daemon.lock_files(),
        ["held.resource.lock", "lockd.lock", "lockd.ranges"]
    );
}

#[test]
fn malformed_requests_get_interoperability_faults() {
    let daemon = Daemon::start();
    let fault_code = |body: &str| {
        let reply = daemon.curl("/", body);
        let code = reply
            .split("<name>faultCode</name><value><int>")
            .nth(1)
            .and_then(|r| r.split('<').next());
        code.unwrap_or_else(|| panic!("no fault for {body:?}: {reply}"))
            .to_owned()
    };
    // Malformed on purpose, so written out by hand.
    assert_eq!(
        fault_code("<methodCall><methodName>lock</methodName"),
        "-32700"
    );
    assert_eq!(fault_code("this is not xml"), "-32700");
    assert_eq!(
        fault_code(
            "<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]><methodCall><methodName>&a;</methodName></methodCall>"
        ),
        "-32700"
    );
    assert_eq!(
        fault_code("<methodResponse><params/></methodResponse>"),
        "-32600"
    );
    assert_eq!(fault_code("<methodCall><params/></methodCall>"), "-32600");
    assert_eq!(
        fault_code(
            "<methodCall><methodName>lock</methodName><params><param><value><int>x</int></value></param></params></methodCall>"
        ),
        "-32600"
    );
    let deep = format!(
        "<methodCall><methodName>status</methodName><params><param>{}{}</param></params></methodCall>",
        "<value><array><data>".repeat(50),
        "</data></array></value>".repeat(50)
    );
    assert_eq!(fault_code(&deep), "-32600");
    assert_eq!(daemon.lock_files(), ["lockd.lock", "lockd.ranges"]);
}

#[test]
fn http_details() {
    let daemon = Daemon::start();
    let status = |args: &[&str]| {
        let mut all = vec!["-o", "/dev/null", "-w", "%{http_code} %header{allow}"];
        all.extend_from_slice(args);
        support::curl(&all)
    };
    let url = daemon.url();
    assert_eq!(
        status(&[&format!("{url}/nope"), "--data-binary", "x"]),
        "404 "
    );
    assert_eq!(status(&[&url]), "405 POST");
    assert_eq!(status(&["-X", "PUT", &format!("{url}/RPC2")]), "405 POST");
    let big = "x".repeat(2 << 20);
    let body_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(body_file.path(), &big).unwrap();
    assert_eq!(
        status(&[
            &url,
            "--data-binary",
            &format!("@{}", body_file.path().display())
        ]),
        "413 "
    );
    assert_eq!(
        status(&[
            &url,
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &format!("@{}", body_file.path().display())
        ]),
        "413 "
    );

    let lock = call_body("lock", &["r1", "c1"]);
    // HTTP/1.0, chunked, Expect: 100-continue, and a body over 1 KiB.
    let reply = support::curl(&["--http1.0", "--data-binary", &lock, &url]);
    assert!(reply.contains("<nil/>"), "{reply}");
    let unlock = call_body("unlock", &["r1", "c1"]);
    let reply = support::curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &unlock,
        &url,
    ]);
    assert!(reply.contains("<nil/>"), "{reply}");
    let reply = support::curl(&["-H", "Expect: 100-continue", "--data-binary", &lock, &url]);
    assert!(reply.contains("<nil/>"), "{reply}");
    let padded = unlock.replace("<params>", &format!("<params>{}", " ".repeat(3000)));
    let reply = support::curl(&["--data-binary", &padded, &format!("{url}/RPC2?x=1")]);
    assert!(reply.contains("<nil/>"), "{reply}");

    // Keep-alive: two calls on one connection.
    let one = call_body("status", &["r1"]);
    let request = http::post("/", &[("Host", "x")], one.as_bytes());
    let both = support::raw(
        daemon.addr,
        &[request.as_slice(), &request].concat(),
        Duration::from_secs(2),
    );
    assert_eq!(both.matches("HTTP/1.1 200").count(), 2, "{both}");
}

#[test]
fn command_line_errors_exit_before_serving() {
    let run = |args: &[&str]| support::run(Command::new(LOCKD).args(args));
    let out = run(&["--bogus"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("lockd: Unrecognized option: 'bogus'\nUsage: lockd [-d DIR]"),
        "{stderr}"
    );
    // A short usage, not the whole help.
    assert_eq!(stderr.lines().count(), 3, "{stderr}");
    assert!(
        stderr.ends_with("Run 'lockd --help' for more.\n"),
        "{stderr}"
    );
    let out = run(&["--threads", "zero"]);
    assert_eq!(out.status.code(), Some(2));
    let help = run(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--listen HOST:PORT"));
    assert!(String::from_utf8_lossy(&run(&["-V"]).stdout).starts_with("lockd 0."));

    let daemon = Daemon::start();
    let temp = tempfile::tempdir().unwrap();
    let out = run(&[
        "--dir",
        temp.path().to_str().unwrap(),
        "--listen",
        &daemon.addr.to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the port is in use"), "{stderr}");

    let file = temp.path().join("plain-file");
    std::fs::write(&file, "").unwrap();
    let out = run(&["--dir", file.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the lock directory is not usable"),
        "{stderr}"
    );
    assert!(
        stderr.contains("it exists and is not a directory"),
        "{stderr}"
    );
    assert!(!stderr.contains("File exists"), "{stderr}");
}

#[test]
fn a_malformed_request_is_logged_once() {
    let daemon = Daemon::start();
    support::post(daemon.addr, "/", "<methodCall><oops>");
    assert!(daemon.wait_for_log("not well-formed"));
    daemon.py("s.lock('r', 'c')");
    assert!(daemon.wait_for_log("granted"));
    let log = daemon.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("not well-formed"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("WARN  call from 127.0.0.1:"), "{log}");
    assert!(lines[0].contains("faulted (-32700)"), "{log}");
}

#[test]
fn an_invalid_rust_log_falls_back_to_info_with_a_warning() {
    // env_logger reads "verbose" as a module name, which would silence
    // every line; lockd starting up at all shows the info line got out.
    let daemon = Daemon::start_with(Options {
        env: vec![("RUST_LOG".into(), "verbose".into())],
        ..Options::default()
    });
    let log = daemon.log();
    assert!(
        log.contains("WARN  RUST_LOG=\"verbose\" is not a log level"),
        "{log}"
    );
}

#[test]
fn the_start_up_line_counts_held_locks() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("locks");
    let mut daemon = Daemon::start_in(&dir);
    assert!(daemon.log().contains("(0 locks held)"), "{}", daemon.log());
    daemon.py("s.lock('r', 'c')");
    daemon.signal_and_wait(libc::SIGTERM);
    let daemon = Daemon::start_in(&dir);
    assert!(daemon.log().contains("(1 lock held)"), "{}", daemon.log());
}

#[test]
fn sigterm_stops_cleanly() {
    let mut daemon = Daemon::start();
    daemon.py("s.lock('r', 'c')");
    let status = daemon.signal_and_wait(libc::SIGTERM);
    assert_eq!(status.code(), Some(0));
    assert!(
        daemon.log().contains("stopped on signal 15"),
        "{}",
        daemon.log()
    );
    assert_eq!(
        daemon.lock_files(),
        ["lockd.lock", "lockd.ranges", "r.resource.lock"]
    );
}

#[test]
fn log_lines_say_who_did_what() {
    let daemon = Daemon::start();
    daemon.py(
        "s.lock('vm1', 'node1')\ncall(lambda: s.lock('vm1', 'node2'))\ns.unlock('vm1', 'node1')",
    );
    assert!(daemon.wait_for_log("released"));
    let log = daemon.log();
    assert!(
        log.contains("INFO  lock \"vm1\" by \"node1\" from 127.0.0.1:"),
        "{log}"
    );
    assert!(log.contains(": granted ("), "{log}");
    assert!(
        log.contains("lock \"vm1\" by \"node2\" from 127.0.0.1:"),
        "{log}"
    );
    assert!(
        log.contains(": refused, Resource already locked by 'node1' ("),
        "{log}"
    );
    assert!(
        log.contains("unlock \"vm1\" by \"node1\" from 127.0.0.1:"),
        "{log}"
    );
}

#[test]
fn python_reconnects_after_an_idle_connection_is_closed() {
    // README: "A connection idle for 30 s is closed (Python's xmlrpc.client
    // reconnects by itself)". One ServerProxy keeps its connection across
    // calls; lockd closes it in between.
    let daemon = Daemon::start_with(Options {
        args: vec!["--idle-timeout".into(), "1".into()],
        ..Options::default()
    });
    let out = daemon.py("import time\n\
         call(lambda: s.lock('r', 'c'))\n\
         time.sleep(2.5)\n\
         call(lambda: s.unlock('r', 'c'))");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["None", "None"]);
    let log = daemon.log();
    let peers: Vec<_> = log
        .lines()
        .filter_map(|l| l.split(" from ").nth(1)?.split(':').nth(1))
        .collect();
    assert_eq!(peers.len(), 2, "{log}");
    assert_ne!(
        peers[0], peers[1],
        "the second call came on a new connection: {log}"
    );
}
