//! The `lockcmd` binary: take and release lockd's locks from shell scripts,
//! systemd units and cluster agents, with exit statuses that tell a refusal
//! from an unreachable daemon from a bad command line.
//!
//! `main` parses the command line into an [`Invocation`], runs it, and turns
//! the outcome into an exit status; the statuses are listed in [`usage`].

use std::collections::hash_map::RandomState;
use std::ffi::OsString;
use std::hash::BuildHasher;
use std::io::{self, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use getopts::Options;
use lockd::cli::DEFAULT_LISTEN;
use lockd::client::{Endpoint, Error, Servers};
use lockd::clock::Utc;
use lockd::json;
use lockd::sys::{self, SignalSet};
use lockd::xmlrpc::{Call, FaultCode, Value};

/// Exit statuses (sysexits.h names where there is one).
const REFUSED: u8 = 1;
const USAGE: u8 = 2;
const DATAERR: u8 = 65;
const UNAVAILABLE: u8 = 69;
const TEMPFAIL: u8 = 75;
const CANNOT_EXECUTE: u8 = 126;
const NOT_FOUND: u8 = 127;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest pause between two attempts under `--wait`.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// What the command line asks for.
#[derive(Debug)]
struct Invocation {
    /// The servers to try, in order (`--server a,b,c`).
    endpoints: Vec<Endpoint>,
    timeout: Duration,
    wait: Duration,
    quiet: bool,
    json: bool,
    action: Action,
}

#[derive(Debug)]
enum Action {
    Lock {
        resource: String,
        client: String,
    },
    Unlock {
        resource: String,
        client: String,
    },
    Status {
        resource: String,
    },
    List,
    Run {
        resource: String,
        client: String,
        command: Vec<OsString>,
    },
    Acquire {
        resource: String,
        client: String,
    },
    Check {
        resource: String,
        client: String,
        token: i32,
    },
    Release {
        resource: String,
        client: String,
        token: i32,
    },
    Break {
        resource: String,
        holder: String,
        token: i32,
        reason: String,
    },
    Fence {
        client: String,
        reason: String,
    },
}

enum Parsed {
    Run(Invocation),
    Help,
    Version,
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let from_env = std::env::var("LOCKD_URL").ok().filter(|u| !u.is_empty());
    let invocation = match parse(args, from_env.as_deref()) {
        Ok(Parsed::Run(invocation)) => invocation,
        Ok(Parsed::Help) => {
            print!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            println!("lockcmd {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("lockcmd: {message}\n{SYNOPSIS}\nRun 'lockcmd --help' for more.");
            return ExitCode::from(USAGE);
        }
    };
    ExitCode::from(run(invocation))
}

const SYNOPSIS: &str = "\
Usage: lockcmd [OPTIONS] lock RESOURCE CLIENT
       lockcmd [OPTIONS] unlock RESOURCE CLIENT
       lockcmd [OPTIONS] status RESOURCE
       lockcmd [OPTIONS] list
       lockcmd [OPTIONS] run RESOURCE CLIENT -- COMMAND [ARGS...]
       lockcmd [OPTIONS] acquire RESOURCE CLIENT
       lockcmd [OPTIONS] check RESOURCE CLIENT TOKEN
       lockcmd [OPTIONS] release RESOURCE CLIENT TOKEN
       lockcmd [OPTIONS] break RESOURCE HOLDER TOKEN --reason TEXT
       lockcmd [OPTIONS] fence CLIENT --reason TEXT";

/// The command words, for messages.
const COMMANDS: &str = "lock, unlock, status, list, run, acquire, check, release, break and fence";

fn options() -> Options {
    let mut opts = Options::new();
    opts.optopt(
        "s",
        "server",
        &format!(
            "lockd's address, http://HOST:PORT/ or HOST:PORT; several, separated by commas, for lockd on several nodes sharing one lock directory: a call goes to the first that can be reached [$LOCKD_URL, else {DEFAULT_LISTEN}]"
        ),
        "URL",
    );
    opts.optopt(
        "w",
        "wait",
        "lock and run: if the resource is locked or lockd cannot be reached, keep trying for up to SECONDS [0: try once]",
        "SECONDS",
    );
    opts.optopt(
        "",
        "timeout",
        &format!(
            "give up on lockd if it does not answer a call within SECONDS [{}]",
            DEFAULT_TIMEOUT.as_secs()
        ),
        "SECONDS",
    );
    opts.optflag(
        "",
        "json",
        "status, list, acquire, break and fence: print JSON",
    );
    opts.optopt(
        "",
        "reason",
        "break and fence: why (required; it goes into lockd's audit trail)",
        "TEXT",
    );
    opts.optflag(
        "q",
        "quiet",
        "print no messages on stderr (except for a bad command line)",
    );
    opts.optflag("h", "help", "print this help and exit");
    opts.optflag("V", "version", "print the version and exit");
    opts
}

/// The help text.
fn usage() -> String {
    let brief = format!(
        "{SYNOPSIS}

Take and release locks held by lockd, from shell scripts, systemd units and
cluster agents.

  lock     take the lock on RESOURCE for CLIENT
  unlock   release the lock CLIENT holds on RESOURCE
  status   print who holds RESOURCE and since when, or that it is free
  list     print every held lock, one per line: RESOURCE, CLIENT, SINCE
           (UTC) and TOKEN separated by tabs; a tab, LF, CR or backslash in a
           name is written as \\t, \\n, \\r or \\\\. TOKEN 0: a lock
           without a fencing token (taken with lock, or by gocept.lockd)
  run      take the lock (with acquire), run COMMAND with LOCKD_RESOURCE,
           LOCKD_CLIENT and LOCKD_TOKEN in its environment, and release
           that grant when COMMAND exits, also when it fails; exit with
           COMMAND's status. SIGTERM, SIGINT and SIGHUP sent to lockcmd are
           passed on to COMMAND. If lockcmd itself is killed (SIGKILL, a
           crash, a lost node) the lock stays held, so no other node takes
           over a resource whose user is in an unknown state; release it by
           hand with unlock, or fence the node.

Fencing (see docs/fencing.md):
  acquire  take the lock like lock, and print its fencing token: a number
           that only grows over the resource's history
  check    exit 0 if CLIENT holds RESOURCE under TOKEN right now, 1 if not:
           run it just before acting on the resource
  release  release the lock CLIENT holds on RESOURCE under TOKEN, and only
           that grant
  break    remove the lock on RESOURCE if HOLDER holds it under TOKEN (0:
           a lock without a token); print the lock removed, as list does
  fence    release every lock CLIENT holds (its node was powered off);
           print them, one per line, as list does

--wait retries a lock that is held by someone else and a daemon that cannot
be reached (nothing was sent), pausing 50 ms, doubling up to 1 s, with
jitter. It does not retry after a timeout or a broken reply: the lock may
have been granted then."
    );
    format!(
        "{}
Exit status:
  0    done
  1    refused by lockd: already locked, locked by another client, or not
       locked (the message is lockd's); also when --wait runs out
  2    bad command line
  65   lockd rejected the call as invalid (e.g. a client name with a line
       break, or a method it does not have)
  check: 0 if the grant is current, 1 if not; a TOKEN that is not a whole
       number is a bad command line (2)
  69   lockd could not be reached, answered something that is not
       XML-RPC, the connection broke, or lockd could not use its lock
       directory
  75   lockd did not answer within --timeout (the call may have been done)
  run: COMMAND's exit status, 128+N if it was killed by signal N, 126 if it
       could not be started, 127 if it was not found. If the lock could not
       be taken, the status as for lock; if COMMAND succeeded but the lock
       could not be released, the status as for unlock.
",
        options().usage(&brief)
    )
}

fn parse(mut args: Vec<OsString>, from_env: Option<&str>) -> Result<Parsed, String> {
    // Everything after `--` is run's command, never lockcmd's options.
    let command = match args.iter().position(|a| a == "--") {
        Some(i) => {
            let command = args.split_off(i + 1);
            args.pop();
            Some(command)
        }
        None => None,
    };
    let args: Vec<String> = args
        .into_iter()
        .map(|a| {
            a.into_string()
                .map_err(|a| format!("{a:?} is not valid UTF-8"))
        })
        .collect::<Result<_, _>>()?;
    let matches = options().parse(&args).map_err(|e| e.to_string())?;
    if matches.opt_present("help") {
        return Ok(Parsed::Help);
    }
    if matches.opt_present("version") {
        return Ok(Parsed::Version);
    }
    let server = matches
        .opt_str("server")
        .or_else(|| from_env.map(str::to_owned))
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let default_port = DEFAULT_LISTEN
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(7390);
    let endpoints = server
        .split(',')
        .map(|one| Endpoint::parse(one.trim(), default_port).map_err(|e| e.to_string()))
        .collect::<Result<Vec<Endpoint>, String>>()?;
    let timeout = seconds(&matches, "timeout", DEFAULT_TIMEOUT, false)?;
    let wait = seconds(&matches, "wait", Duration::ZERO, true)?;
    let words: Vec<&str> = matches.free.iter().map(String::as_str).collect();
    let Some((&name, operands)) = words.split_first() else {
        return Err(format!("no command given; the commands are {COMMANDS}"));
    };
    let action = action(name, operands, command, matches.opt_str("reason"))?;
    let waits = matches!(
        action,
        Action::Lock { .. } | Action::Run { .. } | Action::Acquire { .. }
    );
    if matches.opt_present("wait") && !waits {
        return Err(format!("--wait is for lock, acquire and run, not {name}"));
    }
    let json = matches.opt_present("json");
    let prints = matches!(
        action,
        Action::Status { .. }
            | Action::List
            | Action::Acquire { .. }
            | Action::Break { .. }
            | Action::Fence { .. }
    );
    if json && !prints {
        return Err(format!(
            "--json is for status, list, acquire, break and fence, not {name}"
        ));
    }
    Ok(Parsed::Run(Invocation {
        endpoints,
        timeout,
        wait,
        quiet: matches.opt_present("quiet"),
        json,
        action,
    }))
}

/// `--name` as a duration, `default` if not given; 0 only if `zero_ok`.
fn seconds(
    matches: &getopts::Matches,
    name: &str,
    default: Duration,
    zero_ok: bool,
) -> Result<Duration, String> {
    match matches.opt_str(name) {
        None => Ok(default),
        Some(text) => text
            .parse::<f64>()
            .ok()
            .filter(|s| (*s > 0.0 || (zero_ok && *s == 0.0)) && *s <= 1e9)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                format!(
                    "--{name} takes a number of seconds{}, not {text:?}",
                    if zero_ok { "" } else { " above 0" }
                )
            }),
    }
}

/// The action the command word `name` and its operands ask for; `command`
/// is what followed `--`, if anything did, and `reason` `--reason`.
fn action(
    name: &str,
    operands: &[&str],
    command: Option<Vec<OsString>>,
    reason: Option<String>,
) -> Result<Action, String> {
    if command.is_some() && name != "run" {
        return Err(format!("{name} takes no COMMAND after --; only run does"));
    }
    let needs_reason = matches!(name, "break" | "fence");
    let reason = match (reason, needs_reason) {
        (Some(reason), true) if !reason.trim().is_empty() => reason,
        (_, true) => return Err(format!("{name} needs --reason TEXT: say why")),
        (Some(_), false) => return Err(format!("--reason is for break and fence, not {name}")),
        (None, false) => String::new(),
    };
    if let Some(action) = fencing_action(name, operands, &reason)? {
        return Ok(action);
    }
    Ok(match name {
        "lock" => {
            let [resource, client] = operands_of(name, operands, ["RESOURCE", "CLIENT"])?;
            Action::Lock { resource, client }
        }
        "unlock" => {
            let [resource, client] = operands_of(name, operands, ["RESOURCE", "CLIENT"])?;
            Action::Unlock { resource, client }
        }
        "status" => {
            let [resource] = operands_of(name, operands, ["RESOURCE"])?;
            Action::Status { resource }
        }
        "list" => {
            let [] = operands_of(name, operands, [])?;
            Action::List
        }
        "run" => {
            let command = match command {
                Some(command) if !command.is_empty() => command,
                Some(_) => return Err("run: no COMMAND after --".into()),
                None => return Err("run needs -- between CLIENT and the COMMAND to run".into()),
            };
            let [resource, client] = operands_of(name, operands, ["RESOURCE", "CLIENT"])?;
            Action::Run {
                resource,
                client,
                command,
            }
        }
        other => {
            return Err(format!(
                "unknown command {other:?}; the commands are {COMMANDS}"
            ));
        }
    })
}

/// The fencing commands' actions; `None` for another command word.
fn fencing_action(name: &str, operands: &[&str], reason: &str) -> Result<Option<Action>, String> {
    let names = ["RESOURCE", "CLIENT", "TOKEN"];
    Ok(Some(match name {
        "acquire" => {
            let [resource, client] = operands_of(name, operands, ["RESOURCE", "CLIENT"])?;
            Action::Acquire { resource, client }
        }
        "check" => {
            let [resource, client, token] = operands_of(name, operands, names)?;
            let token = token_arg(name, &token, 1)?;
            Action::Check {
                resource,
                client,
                token,
            }
        }
        "release" => {
            let [resource, client, token] = operands_of(name, operands, names)?;
            let token = token_arg(name, &token, 1)?;
            Action::Release {
                resource,
                client,
                token,
            }
        }
        "break" => {
            let [resource, holder, token] =
                operands_of(name, operands, ["RESOURCE", "HOLDER", "TOKEN"])?;
            let token = token_arg(name, &token, 0)?;
            Action::Break {
                resource,
                holder,
                token,
                reason: reason.to_owned(),
            }
        }
        "fence" => {
            let [client] = operands_of(name, operands, ["CLIENT"])?;
            Action::Fence {
                client,
                reason: reason.to_owned(),
            }
        }
        _ => return Ok(None),
    }))
}

/// A TOKEN operand: a whole number of at least `least`.
fn token_arg(command: &str, text: &str, least: i32) -> Result<i32, String> {
    text.parse::<i32>()
        .ok()
        .filter(|t| *t >= least)
        .ok_or_else(|| {
            format!("{command}: TOKEN must be a whole number of at least {least}, not {text:?}")
        })
}

/// A command's operands, one for each of `names`.
fn operands_of<const N: usize>(
    command: &str,
    operands: &[&str],
    names: [&str; N],
) -> Result<[String; N], String> {
    if operands.iter().any(|o| o.is_empty()) {
        return Err(format!("{command}: an empty string is not a name"));
    }
    let got: Vec<String> = operands.iter().map(|o| (*o).to_owned()).collect();
    <[String; N]>::try_from(got).map_err(|got| {
        let wanted = if N == 0 {
            "no arguments".to_owned()
        } else {
            names.join(" ")
        };
        format!(
            "{command} takes {wanted}, got {} argument{}",
            got.len(),
            if got.len() == 1 { "" } else { "s" }
        )
    })
}

/// Carry out the invocation; the exit status.
fn run(invocation: Invocation) -> u8 {
    let Invocation {
        endpoints,
        timeout,
        wait,
        quiet,
        json,
        action,
    } = invocation;
    let mut client = Servers::new(endpoints, timeout);
    let messages = Messages { quiet, wait };
    match action {
        Action::Lock {
            resource,
            client: name,
        } => match lock_waiting(&mut client, &resource, &name, wait) {
            Ok(()) => 0,
            Err(error) => messages.fail_waiting(&error),
        },
        Action::Unlock {
            resource,
            client: name,
        } => match client.unlock(&resource, &name) {
            Ok(()) => 0,
            Err(error) => messages.fail(&error),
        },
        Action::Status { resource } => match status_text(&mut client, &resource, json) {
            Ok(text) => print_out(&text),
            Err(error) => messages.fail(&error),
        },
        Action::List => match list_text(&mut client, json) {
            Ok(text) => print_out(&text),
            Err(error) => messages.fail(&error),
        },
        Action::Run {
            resource,
            client: name,
            command,
        } => run_locked(&mut client, &messages, &resource, &name, &command),
        fencing => run_fencing(&mut client, &messages, json, fencing),
    }
}

/// Carry out a fencing command; the exit status.
fn run_fencing(client: &mut Servers, messages: &Messages, json: bool, action: Action) -> u8 {
    let result = match action {
        Action::Acquire {
            resource,
            client: name,
        } => acquire_waiting(client, &resource, &name, messages.wait)
            .map(|grant| grant_text(&grant, json)),
        Action::Check {
            resource,
            client: name,
            token,
        } => {
            let call = fencing_call("check", &resource, &name, token, None);
            return match client.call_values(&call) {
                Ok(Value::Bool(true)) => 0,
                Ok(Value::Bool(false)) => REFUSED,
                Ok(_) => messages.fail(&unexpected(client.endpoint(), "check")),
                Err(error) => messages.fail(&error),
            };
        }
        Action::Release {
            resource,
            client: name,
            token,
        } => client
            .call_values(&fencing_call("release", &resource, &name, token, None))
            .map(|_| String::new()),
        Action::Break {
            resource,
            holder,
            token,
            reason,
        } => client
            .call_values(&fencing_call(
                "break_lock",
                &resource,
                &holder,
                token,
                Some(&reason),
            ))
            .and_then(|value| Grant::read(&value, client.endpoint()))
            .map(|grant| {
                if json {
                    format!("{}\n", grant.json())
                } else {
                    grant.line()
                }
            }),
        Action::Fence {
            client: name,
            reason,
        } => fence_text(client, &name, &reason, json),
        _ => return USAGE,
    };
    match result {
        Ok(text) => print_out(&text),
        Err(error) => messages.fail(&error),
    }
}

/// A call of check, release or break_lock: resource, a client, a token and
/// for break_lock the reason.
fn fencing_call(
    method: &str,
    resource: &str,
    client: &str,
    token: i32,
    reason: Option<&str>,
) -> Call {
    let mut params = vec![
        Value::Str(resource.to_owned()),
        Value::Str(client.to_owned()),
        Value::Int(token),
    ];
    params.extend(reason.map(|r| Value::Str(r.to_owned())));
    Call {
        method: method.to_owned(),
        params,
    }
}

/// `fence` as lines like list's, or as a JSON array.
fn fence_text(client: &mut Servers, name: &str, reason: &str, json: bool) -> Result<String, Error> {
    let Value::Array(items) = client.call("fence", &[name, reason])? else {
        return Err(unexpected(client.endpoint(), "fence"));
    };
    let grants = items
        .iter()
        .map(|item| Grant::read(item, client.endpoint()))
        .collect::<Result<Vec<Grant>, Error>>()?;
    if json {
        let objects: Vec<String> = grants.iter().map(Grant::json).collect();
        return Ok(format!("[{}]\n", objects.join(",\n ")));
    }
    Ok(grants.iter().map(Grant::line).collect())
}

/// acquire's token alone, or the whole grant as JSON.
fn grant_text(grant: &Grant, json: bool) -> String {
    if json {
        format!("{}\n", grant.json())
    } else {
        format!("{}\n", grant.token)
    }
}

/// A grant, as acquire, break_lock and fence return it.
struct Grant {
    resource: String,
    client: String,
    token: i32,
    /// RFC 3339, UTC.
    since: String,
}

impl Grant {
    fn read(value: &Value, endpoint: &Endpoint) -> Result<Grant, Error> {
        match (
            value.member("resource").and_then(Value::as_str),
            value.member("client").and_then(Value::as_str),
            value.member("token"),
            value.member("since"),
        ) {
            (
                Some(resource),
                Some(client),
                Some(Value::Int(token)),
                Some(Value::DateTime(since)),
            ) => Ok(Grant {
                resource: resource.to_owned(),
                client: client.to_owned(),
                token: *token,
                since: rfc3339(since),
            }),
            _ => Err(unexpected(endpoint, "a fencing call")),
        }
    }

    fn json(&self) -> String {
        format!(
            "{{\"resource\": {}, \"client\": {}, \"token\": {}, \"since\": {}}}",
            json::string(&self.resource),
            json::string(&self.client),
            self.token,
            json::string(&self.since)
        )
    }

    /// As `list` prints a lock.
    fn line(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\n",
            tsv(&self.resource),
            tsv(&self.client),
            self.since,
            self.token
        )
    }
}

/// What lockcmd says on stderr, and the exit status that goes with it.
struct Messages {
    quiet: bool,
    /// `--wait`, for the message when it ran out.
    wait: Duration,
}

impl Messages {
    fn say(&self, message: &str) {
        if !self.quiet {
            eprintln!("lockcmd: {message}");
        }
    }

    fn fail(&self, error: &Error) -> u8 {
        self.say(&describe(error));
        exit_status(error)
    }

    /// [`Messages::fail`] for a lock that may have been waited for.
    fn fail_waiting(&self, error: &Error) -> u8 {
        if self.wait.is_zero() {
            return self.fail(error);
        }
        self.say(&format!(
            "{}; gave up after waiting {} s",
            describe(error),
            self.wait.as_secs_f64()
        ));
        exit_status(error)
    }
}

/// `run`: take the lock, run the command, release the lock; the exit status.
fn run_locked(
    client: &mut Servers,
    messages: &Messages,
    resource: &str,
    name: &str,
    command: &[OsString],
) -> u8 {
    let grant = match acquire_waiting(client, resource, name, messages.wait) {
        Ok(grant) => grant,
        Err(error) => return messages.fail_waiting(&error),
    };
    let status = match run_child(command, &grant) {
        Ok(status) => status,
        Err(e) => {
            messages.say(&format!("cannot run {:?}: {e}", command[0]));
            if e.kind() == io::ErrorKind::NotFound {
                NOT_FOUND
            } else {
                CANNOT_EXECUTE
            }
        }
    };
    let release = fencing_call("release", resource, name, grant.token, None);
    let Err(error) = client.call_values(&release) else {
        return status;
    };
    let hint = if error.is_refusal() {
        String::new()
    } else {
        format!(
            "; it may still be held: check with 'lockcmd status {resource}' and release it with 'lockcmd release {resource} {name} {}'",
            grant.token
        )
    };
    messages.say(&format!(
        "could not release the lock on {resource:?}: {}{hint}",
        describe(&error)
    ));
    if status == 0 {
        exit_status(&error)
    } else {
        status
    }
}

/// `status` as a line of text or JSON.
fn status_text(client: &mut Servers, resource: &str, json: bool) -> Result<String, Error> {
    let value = client.call("status", &[resource])?;
    let held = Held::from_status(&value, client.endpoint())?;
    Ok(match (json, held) {
        (true, held) => format!("{}\n", Held::json(resource, held.as_ref())),
        (false, Some(held)) if held.token > 0 => format!(
            "{resource} is locked by {} since {} (token {})\n",
            held.client, held.since, held.token
        ),
        (false, Some(held)) => format!(
            "{resource} is locked by {} since {}\n",
            held.client, held.since
        ),
        (false, None) => format!("{resource} is free\n"),
    })
}

/// `locks` as tab-separated lines, or as a JSON array.
fn list_text(client: &mut Servers, json: bool) -> Result<String, Error> {
    let Value::Array(items) = client.call("locks", &[])? else {
        return Err(unexpected(client.endpoint(), "locks"));
    };
    let mut rows = Vec::with_capacity(items.len());
    for item in &items {
        let resource = item.member("resource").and_then(Value::as_str);
        match (resource, Held::from_status(item, client.endpoint())?) {
            (Some(resource), Some(held)) => rows.push((resource, held)),
            _ => return Err(unexpected(client.endpoint(), "locks")),
        }
    }
    if json {
        let objects: Vec<String> = rows
            .iter()
            .map(|(resource, held)| Held::json(resource, Some(held)))
            .collect();
        return Ok(format!("[{}]\n", objects.join(",\n ")));
    }
    Ok(rows
        .iter()
        .map(|(resource, held)| {
            format!(
                "{}\t{}\t{}\t{}\n",
                tsv(resource),
                tsv(&held.client),
                held.since,
                held.token
            )
        })
        .collect())
}

/// Take the lock, retrying under `--wait` while it is held by someone else
/// or lockd cannot be reached.
fn lock_waiting(
    client: &mut Servers,
    resource: &str,
    name: &str,
    wait: Duration,
) -> Result<(), Error> {
    waiting(wait, || client.lock(resource, name))
}

/// `acquire`, retrying as [`lock_waiting`] does.
fn acquire_waiting(
    client: &mut Servers,
    resource: &str,
    name: &str,
    wait: Duration,
) -> Result<Grant, Error> {
    waiting(wait, || {
        let value = client.call("acquire", &[resource, name])?;
        Grant::read(&value, client.endpoint())
    })
}

/// Make a call until it succeeds, retrying under `--wait` while the
/// resource is held by someone else or lockd cannot be reached.
fn waiting<T>(wait: Duration, mut call: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    let deadline = Instant::now() + wait;
    let random = RandomState::new();
    let mut pause = FIRST_BACKOFF;
    let mut attempt = 0u64;
    loop {
        attempt += 1;
        let error = match call() {
            Ok(done) => return Ok(done),
            Err(error) => error,
        };
        let retry = error.is_refusal() || matches!(error, Error::Unreachable { .. });
        let left = deadline.saturating_duration_since(Instant::now());
        if !retry || left.is_zero() {
            return Err(error);
        }
        // Sleep between half and all of the pause, so that waiting clients
        // released at the same moment do not all come back at once.
        let jitter = random.hash_one(attempt) as f64 / u64::MAX as f64;
        std::thread::sleep(pause.mul_f64(0.5 + 0.5 * jitter).min(left));
        pause = (pause * 2).min(MAX_BACKOFF);
    }
}

/// Run the command with the stop signals passed on, and the grant in its
/// environment; its exit status.
fn run_child(command: &[OsString], grant: &Grant) -> io::Result<u8> {
    const FORWARDED: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];
    // Block the signals, so they wait for `wait` below instead of ending
    // lockcmd, and SIGCHLD, which says the command has ended. The command
    // itself starts with none of them blocked.
    let set = SignalSet::of(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGCHLD]);
    set.block()?;
    let mut child = Command::new(&command[0]);
    child
        .args(&command[1..])
        .env("LOCKD_RESOURCE", &grant.resource)
        .env("LOCKD_CLIENT", &grant.client)
        .env("LOCKD_TOKEN", grant.token.to_string());
    set.unblock_in_child(&mut child);
    let mut child = child.spawn()?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        // A signal from a terminal (Ctrl-C) already reached the command, which
        // is in the same foreground process group; pass on only those that a
        // process sent to lockcmd alone (kill(1), systemd).
        match set.wait(Duration::from_secs(1)) {
            Some(received) if FORWARDED.contains(&received.signal) && received.from_process => {
                // The child has not been reaped, so its pid is still its own.
                let _ = sys::kill(child.id(), received.signal);
            }
            _ => {}
        }
    };
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(255),
        (None, None) => 1,
    })
}

/// The exit status for an error; see [`usage`].
fn exit_status(error: &Error) -> u8 {
    match error {
        Error::Fault(fault) => match fault.code {
            FaultCode::Refused => REFUSED,
            FaultCode::Internal => UNAVAILABLE,
            _ => DATAERR,
        },
        Error::Unreachable { .. } | Error::Protocol { .. } => UNAVAILABLE,
        Error::Timeout { .. } => TEMPFAIL,
    }
}

/// The message for an error: a refusal is lockd's own text without the
/// Python exception type gocept.lockd put before it.
fn describe(error: &Error) -> String {
    match error {
        Error::Fault(fault) if error.is_refusal() => without_python_type(&fault.message).to_owned(),
        Error::Fault(fault) => format!("lockd refused the call: {}", fault.message),
        // The request went out: lockd may have done it and not yet replied.
        Error::Timeout { .. } => format!(
            "{error}; the call may have been carried out: check with 'lockcmd status' before trying again"
        ),
        other => other.to_string(),
    }
}

/// `<type 'exceptions.Exception'>:Resource not locked` (or `<class '...'>:`
/// from a Python 3 server) to `Resource not locked`.
fn without_python_type(message: &str) -> &str {
    ["<type '", "<class '"]
        .iter()
        .find_map(|open| {
            let rest = message.strip_prefix(open)?;
            let end = rest.find("'>:")?;
            Some(&rest[end + 3..])
        })
        .unwrap_or(message)
}

/// A held lock, as `status` and `locks` describe it.
struct Held {
    client: String,
    /// RFC 3339, UTC.
    since: String,
    /// 0: a lock without a token (or a lockd that does not send one).
    token: i32,
}

impl Held {
    /// Read a `status` struct: `None` if the resource is free.
    fn from_status(value: &Value, endpoint: &Endpoint) -> Result<Option<Held>, Error> {
        match (
            value.member("locked"),
            value.member("client").and_then(Value::as_str),
            value.member("since"),
        ) {
            (Some(Value::Bool(false)), _, _) => Ok(None),
            (Some(Value::Bool(true)), Some(client), Some(Value::DateTime(since))) => {
                Ok(Some(Held {
                    client: client.to_owned(),
                    since: rfc3339(since),
                    token: match value.member("token") {
                        Some(Value::Int(token)) => *token,
                        _ => 0,
                    },
                }))
            }
            _ => Err(unexpected(endpoint, "status")),
        }
    }

    fn json(resource: &str, held: Option<&Held>) -> String {
        match held {
            Some(held) => format!(
                "{{\"resource\": {}, \"locked\": true, \"client\": {}, \"since\": {}, \"token\": {}}}",
                json::string(resource),
                json::string(&held.client),
                json::string(&held.since),
                held.token
            ),
            None => format!(
                "{{\"resource\": {}, \"locked\": false}}",
                json::string(resource)
            ),
        }
    }
}

fn unexpected(endpoint: &Endpoint, method: &str) -> Error {
    Error::Protocol {
        server: endpoint.to_string(),
        problem: format!("its answer to {method} is not what lockd sends"),
    }
}

/// `20261129T15:04:05` (XML-RPC) to `2026-11-29T15:04:05Z`; lockd's times
/// are UTC. Anything else is shown as it came.
fn rfc3339(basic: &str) -> String {
    Utc::parse_iso8601_basic(basic).map_or_else(|| basic.to_owned(), |utc| utc.rfc3339())
}

/// A name as a tab-separated field: `\`, tab, LF and CR escaped.
fn tsv(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// Write to stdout; a closed pipe (`lockcmd list | head -1`) is not an error.
fn print_out(text: &str) -> u8 {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => 0,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("lockcmd: cannot write the output: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_types_are_cut_off() {
        assert_eq!(
            without_python_type("<type 'exceptions.Exception'>:Resource already locked by 'a'"),
            "Resource already locked by 'a'"
        );
        assert_eq!(
            without_python_type("<class 'Exception'>:Resource not locked"),
            "Resource not locked"
        );
        assert_eq!(without_python_type("<b>plain</b>"), "<b>plain</b>");
    }

    fn server(args: &[&str], from_env: Option<&str>) -> String {
        match parse(args.iter().map(OsString::from).collect(), from_env) {
            Ok(Parsed::Run(invocation)) => invocation
                .endpoints
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" "),
            _ => panic!("{args:?} does not parse"),
        }
    }

    #[test]
    fn the_server_comes_from_s_then_lockd_url_then_the_default() {
        assert_eq!(server(&["list"], None), "http://127.0.0.1:7390/RPC2");
        assert_eq!(
            server(&["list"], Some("http://node1:8000/")),
            "http://node1:8000/"
        );
        assert_eq!(
            server(&["-s", "node2", "list"], Some("node1:1")),
            "http://node2:7390/RPC2"
        );
    }

    #[test]
    fn times_and_names() {
        assert_eq!(rfc3339("20261129T15:04:05"), "2026-11-29T15:04:05Z");
        assert_eq!(rfc3339("2026-11-29"), "2026-11-29");
        assert_eq!(tsv("a\tb\\c\nd"), "a\\tb\\\\c\\nd");
    }
}
