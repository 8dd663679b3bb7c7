//! Disk faults: what lockd does when the lock directory misbehaves. Each
//! fault gives a clear answer, never a crash or a hang, and lockd recovers
//! once the cause is fixed.

use crate::proof::{Outcome, Rpc};
use crate::support::Daemon;

const INTERNAL: i32 = -32603;

fn call(rpc: &mut Rpc, method: &str, params: &[&str]) -> Outcome {
    rpc.call(method, params)
        .unwrap_or_else(|e| panic!("{method} {params:?}: no reply: {e}"))
}

/// Assert a -32603 fault that names `file` and contains `reason`.
fn assert_internal(outcome: &Outcome, file: &str, reason: &str) {
    match outcome {
        Outcome::Fault(INTERNAL, message) => assert!(
            message.contains(file) && message.contains(reason),
            "the fault does not say {file:?} and {reason:?}: {message}"
        ),
        other => panic!("expected a -32603 fault about {file}, got {other:?}"),
    }
}

/// A FIFO in place of a lock file must not hang the daemon: opening one
/// for reading blocks until a writer comes.
#[test]
fn a_fifo_in_place_of_a_lock_file_does_not_hang() {
    let daemon = Daemon::start();
    let fifo = daemon.dir.join("pipe.resource.lock");
    let c_path = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).unwrap();
    // SAFETY: mkfifo with a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
    let mut rpc = Rpc::new(daemon.addr);
    assert_internal(
        &call(&mut rpc, "unlock", &["pipe", "n1"]),
        "pipe.resource.lock",
        "not a regular file",
    );
    assert_internal(
        &call(&mut rpc, "lock", &["pipe", "n1"]),
        "pipe.resource.lock",
        "not a regular file",
    );
    // Others are still served.
    assert!(call(&mut rpc, "lock", &["other", "n1"]).is_nil());
    std::fs::remove_file(&fifo).unwrap();
    assert!(call(&mut rpc, "lock", &["pipe", "n1"]).is_nil());
}
