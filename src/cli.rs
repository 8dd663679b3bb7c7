//! The command line: options to a [`Config`], or help, or the version.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use getopts::Options;

/// The address lockd listens on unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7390";

/// How long a connection may stay silent unless `--idle-timeout` says.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The lock directory when neither `--dir` nor `$STATE_DIRECTORY` names one.
pub const DEFAULT_DIR: &str = "locks";

/// What the daemon runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub dir: PathBuf,
    pub listen: String,
    pub threads: usize,
    /// How long a connection may stay silent before it is closed.
    pub idle_timeout: Duration,
    pub log_level: Option<log::LevelFilter>,
    /// `--cluster-fs`: the lock directory may be on a network or cluster
    /// filesystem, set up as docs/cluster.md says.
    pub cluster_fs: bool,
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run(Config),
    Help(String),
    Version(String),
}

/// What is wrong with a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageError {
    /// An unknown option, or one without its value.
    Options(getopts::Fail),
    /// An argument that is not an option.
    Unexpected(String),
    EmptyDir,
    Threads(String),
    IdleTimeout(String),
    LogLevel(String),
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsageError::Options(fail) => fail.fmt(f),
            UsageError::Unexpected(extra) => write!(
                f,
                "unexpected argument {extra:?}; lockd takes options only (see --help)"
            ),
            UsageError::EmptyDir => f.write_str("--dir needs a directory name"),
            UsageError::Threads(n) => {
                write!(f, "--threads takes a number from 1 to 1024, not {n:?}")
            }
            UsageError::IdleTimeout(n) => write!(
                f,
                "--idle-timeout takes a number of seconds from 1 to 86400, not {n:?}"
            ),
            UsageError::LogLevel(level) => write!(
                f,
                "--log-level takes error, warn, info, debug, trace or off, not {level:?}"
            ),
        }
    }
}

impl std::error::Error for UsageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UsageError::Options(fail) => Some(fail),
            _ => None,
        }
    }
}

fn options() -> Options {
    let mut opts = Options::new();
    opts.optopt(
        "d",
        "dir",
        "lock directory, created if missing [$STATE_DIRECTORY, else ./locks]",
        "DIR",
    );
    opts.optopt(
        "l",
        "listen",
        &format!("address to listen on; port 0 picks a free one [{DEFAULT_LISTEN}]"),
        "HOST:PORT",
    );
    opts.optopt(
        "",
        "threads",
        "worker threads kept waiting for requests; more start while calls are in flight [2]",
        "N",
    );
    opts.optopt(
        "",
        "idle-timeout",
        "close a connection silent for this long, and refuse a body over 1 KiB that takes longer [30]",
        "SECONDS",
    );
    opts.optopt(
        "",
        "log-level",
        "error, warn, info, debug, trace or off [$RUST_LOG, else info]",
        "LEVEL",
    );
    opts.optflag(
        "",
        "cluster-fs",
        "allow a lock directory on a network or cluster filesystem (NFS, GlusterFS, CephFS, OCFS2, ...) shared with lockd on other nodes; only once it is mounted as docs/cluster.md says",
    );
    opts.optflag("h", "help", "print this help and exit");
    opts.optflag("V", "version", "print the version and exit");
    opts
}

/// The help text.
pub fn usage() -> String {
    let brief = "Usage: lockd [OPTIONS]\n\n\
        A lock daemon for cluster nodes: XML-RPC lock(resource, client) and\n\
        unlock(resource, client) over HTTP, one durable file per held lock.";
    format!(
        "{}\nExit status: 0 after a clean stop (SIGTERM or SIGINT), 1 if lockd could not\n\
         start or had to stop, 2 for a bad command line.\n",
        options().usage(brief)
    )
}

/// What a bad command line gets: the options in one line, and where the
/// rest is.
pub fn short_usage() -> String {
    format!(
        "{}\nRun 'lockd --help' for more.",
        options().short_usage("lockd")
    )
}

/// Parse the arguments (without the program name). `state_directory` is
/// `$STATE_DIRECTORY`, which systemd sets for `StateDirectory=`.
pub fn parse(args: &[String], state_directory: Option<&str>) -> Result<Command, UsageError> {
    let matches = options().parse(args).map_err(UsageError::Options)?;
    if matches.opt_present("help") {
        return Ok(Command::Help(usage()));
    }
    if matches.opt_present("version") {
        return Ok(Command::Version(format!(
            "lockd {}",
            env!("CARGO_PKG_VERSION")
        )));
    }
    if let Some(extra) = matches.free.first() {
        return Err(UsageError::Unexpected(extra.clone()));
    }
    // systemd separates several state directories with ':'; the first is ours.
    let from_systemd = state_directory
        .and_then(|dirs| dirs.split(':').next())
        .filter(|d| !d.is_empty());
    let dir = match matches.opt_str("dir") {
        Some(dir) if dir.is_empty() => return Err(UsageError::EmptyDir),
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(from_systemd.unwrap_or(DEFAULT_DIR)),
    };
    let listen = matches
        .opt_str("listen")
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let threads = match matches.opt_str("threads") {
        None => 2,
        Some(n) => match n.parse::<usize>() {
            Ok(n) if (1..=1024).contains(&n) => n,
            _ => return Err(UsageError::Threads(n)),
        },
    };
    let idle_timeout = match matches.opt_str("idle-timeout") {
        None => DEFAULT_IDLE_TIMEOUT,
        Some(n) => match n.parse::<u64>() {
            Ok(n) if (1..=86_400).contains(&n) => Duration::from_secs(n),
            _ => return Err(UsageError::IdleTimeout(n)),
        },
    };
    let log_level = match matches.opt_str("log-level") {
        None => None,
        Some(level) => Some(
            level
                .parse()
                .map_err(|_| UsageError::LogLevel(level.clone()))?,
        ),
    };
    Ok(Command::Run(Config {
        dir,
        listen,
        threads,
        idle_timeout,
        log_level,
        cluster_fs: matches.opt_present("cluster-fs"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults() {
        let Command::Run(config) = parse(&[], None).unwrap() else {
            panic!()
        };
        assert_eq!(
            config,
            Config {
                dir: "locks".into(),
                listen: DEFAULT_LISTEN.into(),
                threads: 2,
                idle_timeout: DEFAULT_IDLE_TIMEOUT,
                log_level: None,
                cluster_fs: false,
            }
        );
        let Command::Run(config) = parse(&[], Some("/var/lib/lockd:/var/lib/other")).unwrap()
        else {
            panic!()
        };
        assert_eq!(config.dir, PathBuf::from("/var/lib/lockd"));
    }

    #[test]
    fn options_are_read() {
        let parsed = parse(
            &args(&[
                "-d",
                "/x",
                "--listen",
                "0.0.0.0:1",
                "--threads",
                "4",
                "--idle-timeout",
                "2",
                "--log-level",
                "debug",
            ]),
            Some("/s"),
        );
        let Command::Run(config) = parsed.unwrap() else {
            panic!()
        };
        assert_eq!(config.dir, PathBuf::from("/x"));
        assert_eq!(config.listen, "0.0.0.0:1");
        assert_eq!(config.threads, 4);
        assert_eq!(config.idle_timeout, Duration::from_secs(2));
        assert_eq!(config.log_level, Some(log::LevelFilter::Debug));
    }

    fn mistake(list: &[&str]) -> String {
        parse(&args(list), None).unwrap_err().to_string()
    }

    #[test]
    fn mistakes_are_explained() {
        assert!(mistake(&["--threads", "0"]).contains("1 to 1024"));
        assert!(mistake(&["--idle-timeout", "0"]).contains("1 to 86400"));
        assert!(mistake(&["--log-level", "loud"]).contains("--log-level"));
        assert!(mistake(&["--bogus"]).contains("bogus"));
        assert!(mistake(&["extra"]).contains("options only"));
        assert!(matches!(parse(&args(&["-h"]), None), Ok(Command::Help(_))));
        assert!(matches!(
            parse(&args(&["-V"]), None),
            Ok(Command::Version(_))
        ));
    }
}
