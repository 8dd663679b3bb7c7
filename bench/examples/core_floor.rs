//! What lockd's essential work costs on this machine, without HTTP: the lock
//! core through `lockd::store::Store` (one caller with an fsync after each
//! call, then THREADS callers with a syncer fsyncing for all of them), and
//! parsing the XML-RPC call Python's xmlrpc.client sends. It prints cycles/s
//! and CPU time per cycle (and per parse): the part of lockd's cost that no
//! HTTP stack or thread model can remove (docs/benchmarks.md).
//!
//!     cargo run --release -p lockd-bench --example core_floor -- DIR [THREADS] [SECONDS]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lockd::store::Store;

fn cpu_seconds() -> f64 {
    lockd::sys::cpu_time().map_or(0.0, |t| t.as_secs_f64())
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: core_floor DIR [THREADS] [SECONDS]";
    let dir = args.first().ok_or(usage)?;
    let threads: usize = args
        .get(1)
        .map_or(Ok(2), |t| t.parse())
        .map_err(|_| usage)?;
    let seconds: f64 = args
        .get(2)
        .map_or(Ok(3.0), |t| t.parse())
        .map_err(|_| usage)?;
    let (store, _) = Store::open(dir.as_ref()).map_err(|e| e.to_string())?;
    let store = Arc::new(store);
    sequential(&store, seconds)?;
    grouped(&store, threads, seconds)?;
    parse_cost(seconds)
}

/// One caller, every change durable before the next: lockd's 1-client floor.
fn sequential(store: &Store, seconds: f64) -> Result<(), String> {
    let (cpu0, t0, mut n) = (cpu_seconds(), Instant::now(), 0u64);
    while t0.elapsed().as_secs_f64() < seconds {
        store
            .lock("core-0", "client-0")
            .result
            .map_err(|e| e.to_string())?;
        store.sync().map_err(|e| e.to_string())?;
        store
            .unlock("core-0", "client-0")
            .result
            .map_err(|e| e.to_string())?;
        store.sync().map_err(|e| e.to_string())?;
        n += 1;
    }
    report("sequential, fsync after each call", n, t0, cpu0, 2 * n);
    Ok(())
}

/// THREADS callers that do not wait, and a syncer fsyncing all the while:
/// the CPU the filesystem work of one cycle costs, fsyncs shared.
fn grouped(store: &Arc<Store>, threads: usize, seconds: f64) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    let cycles = Arc::new(AtomicU64::new(0));
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    let syncer = {
        let (store, stop) = (Arc::clone(store), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut syncs = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if store.sync().is_ok() {
                    syncs += 1;
                }
            }
            syncs
        })
    };
    let workers: Vec<_> = (0..threads)
        .map(|i| {
            let (store, stop, cycles) = (Arc::clone(store), Arc::clone(&stop), Arc::clone(&cycles));
            std::thread::spawn(move || {
                let (resource, client) = (format!("core-{i}"), format!("client-{i}"));
                while !stop.load(Ordering::Relaxed) {
                    store
                        .lock(&resource, &client)
                        .result
                        .map_err(|e| e.to_string())?;
                    store
                        .unlock(&resource, &client)
                        .result
                        .map_err(|e| e.to_string())?;
                    cycles.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().map_err(|_| "a worker panicked")??;
    }
    let syncs = syncer.join().map_err(|_| "the syncer panicked")?;
    report(
        &format!("{threads} threads, group fsync"),
        cycles.load(Ordering::Relaxed),
        t0,
        cpu0,
        syncs,
    );
    Ok(())
}

/// The CPU one parse of the call Python's xmlrpc.client sends costs.
fn parse_cost(seconds: f64) -> Result<(), String> {
    // Python's bytes, written out: what is measured is the parse of exactly them.
    let body = b"<?xml version='1.0'?>\n<methodCall>\n<methodName>lock</methodName>\n<params>\n<param>\n<value><string>resource1</string></value>\n</param>\n<param>\n<value><string>client1</string></value>\n</param>\n</params>\n</methodCall>\n";
    let (cpu0, t0, mut n) = (cpu_seconds(), Instant::now(), 0u64);
    while t0.elapsed().as_secs_f64() < seconds / 3.0 {
        for _ in 0..1000 {
            let call = lockd::xmlrpc::parse_call(std::hint::black_box(body));
            std::hint::black_box(call.map_err(|f| f.message)?);
        }
        n += 1000;
    }
    println!(
        "xmlrpc::parse_call of a lock call: {:.1} us CPU each",
        (cpu_seconds() - cpu0) / n as f64 * 1e6
    );
    Ok(())
}

fn report(what: &str, cycles: u64, t0: Instant, cpu0: f64, syncs: u64) {
    let (elapsed, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    let n = cycles.max(1) as f64;
    println!(
        "{what}: {:.0} cycles/s, {:.1} us CPU per cycle, {} fsyncs ({:.1} calls per fsync)",
        n / elapsed,
        cpu / n * 1e6,
        syncs,
        2.0 * n / syncs.max(1) as f64
    );
}
