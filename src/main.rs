//! The `lockd` binary: parse the command line, run, map the outcome to an
//! exit status (0 clean stop, 1 could not start or had to stop, 2 usage).

use std::process::ExitCode;

use lockd::RunError;
use lockd::cli::{self, Command};
use lockd::systemd;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let state_directory = std::env::var("STATE_DIRECTORY").ok();
    let config = match cli::parse(&args, state_directory.as_deref()) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help(text)) | Ok(Command::Version(text)) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("lockd: {error}\n{}", cli::short_usage());
            return ExitCode::from(2);
        }
    };
    lockd::init_logging(config.log_level);
    // SAFETY: nothing above starts a thread (parsing options and setting up
    // the logger do not), and nothing else takes file descriptor 3.
    let activated = unsafe { systemd::take_listener() };
    let result = activated
        .map_err(|source| RunError::Setup {
            what: "use the socket passed by systemd (LISTEN_FDS)",
            source,
        })
        .and_then(|activated| lockd::run(&config, activated));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log::error!("{error}");
            ExitCode::from(1)
        }
    }
}
