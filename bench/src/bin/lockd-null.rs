//! The benchmark's ceiling: a tiny_http server that answers every request
//! with lockd's nil reply and does nothing else. It uses lockd's worker model
//! (N threads calling `Server::recv`, default 2 like `lockd --threads`), so
//! the gap between it and lockd is what lockd's own work costs.
//!
//! Usage: `lockd-null [--listen HOST:PORT] [--threads N]`; it logs
//! `lockd-null listening on http://ADDR/` on stderr once it accepts calls.

use std::process::ExitCode;
use std::sync::Arc;
use std::thread;

use tiny_http::{Header, Response, Server};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("lockd-null: {message}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: lockd-null [--listen HOST:PORT] [--threads N]";

fn run() -> Result<(), String> {
    let mut listen = "127.0.0.1:0".to_owned();
    let mut threads = 2usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{arg} needs a value; {USAGE}"))
        };
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            "-V" | "--version" => {
                println!("lockd-null {}", env!("CARGO_PKG_VERSION"));
                return Ok(());
            }
            "--listen" => listen = value()?,
            "--threads" => {
                let value = value()?;
                threads =
                    value.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                        format!("--threads wants a positive number, got {value:?}")
                    })?;
            }
            _ => return Err(format!("unknown option {arg}; {USAGE}")),
        }
    }
    let server =
        Arc::new(Server::http(&listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?);
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or("the server is not on an IP socket")?;
    let nil = Arc::new(lockd::xmlrpc::write_response(&lockd::xmlrpc::Value::Nil));
    eprintln!("lockd-null listening on http://{addr}/ with {threads} worker threads");
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let server = Arc::clone(&server);
            let nil = Arc::clone(&nil);
            thread::spawn(move || serve(&server, &nil))
        })
        .collect();
    for worker in workers {
        worker.join().map_err(|_| "a worker thread panicked")??;
    }
    Ok(())
}

fn serve(server: &Server, nil: &[u8]) -> Result<(), String> {
    let content_type = Header::from_bytes(&b"Content-Type"[..], &b"text/xml"[..])
        .map_err(|()| "bad static header")?;
    loop {
        let mut request = server
            .recv()
            .map_err(|e| format!("the server stopped accepting: {e}"))?;
        let mut body = Vec::with_capacity(512);
        if request.as_reader().read_to_end(&mut body).is_err() {
            continue;
        }
        let reply = Response::from_data(nil.to_vec()).with_header(content_type.clone());
        let _ = request.respond(reply);
    }
}
