//! The `lockd` binary: parse the command line, run, map the outcome to an
//! exit status (0 clean stop, 1 could not start or had to stop, 2 usage).

use std::process::ExitCode;

use lockd::cli::{self, Command};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let state_directory = std::env::var("STATE_DIRECTORY").ok();
    let config = match cli::parse(&args, state_directory.as_deref()) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help(text)) | Ok(Command::Version(text)) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("lockd: {message}\n{}", cli::short_usage());
            return ExitCode::from(2);
        }
    };
    lockd::init_logging(config.log_level);
    match lockd::run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log::error!("{error}");
            ExitCode::from(1)
        }
    }
}
