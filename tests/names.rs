//! Random resource names through the real daemon: every lock file lands
//! directly in the lock directory under the encoded name, `locks()` gives
//! the original names back, and distinct names never share a file.

use lockd::xmlrpc::Value;

use crate::proof::{self, Outcome, Prng, Rpc};
use crate::support::Daemon;

fn random_name(rng: &mut Prng) -> String {
    let len = 1 + rng.below(10) as usize;
    (0..len)
        .map(|_| match rng.below(6) {
            0 => '.',
            1 => '/',
            2 => '%',
            3 => char::from(b'a' + rng.below(3) as u8),
            // The only controls XML 1.0 carries unchanged (a CR arrives
            // as LF, the others cannot be sent at all).
            4 => ['\t', '\n'][rng.below(2) as usize],
            _ => char::from_u32(0x80 + rng.below(0x3000) as u32).unwrap_or('x'),
        })
        .collect()
}

#[test]
fn random_names_stay_inside_and_come_back() {
    let daemon = Daemon::start();
    let mut rng = Prng::new(proof::seed("names"));
    let mut rpc = Rpc::new(daemon.addr);
    let mut names = std::collections::BTreeSet::new();
    for _ in 0..proof::knob("NAMES", 300) {
        let name = random_name(&mut rng);
        let fresh = names.insert(name.clone());
        let outcome = rpc.call("lock", &[&name, "n1"]).expect("reply");
        if fresh {
            assert!(outcome.is_nil(), "{name:?}: {outcome:?}");
        } else {
            assert!(
                matches!(outcome, Outcome::Fault(1, _)),
                "{name:?}: {outcome:?}"
            );
        }
    }
    let files: Vec<String> = daemon
        .lock_files()
        .into_iter()
        .filter(|f| f != "lockd.lock")
        .collect();
    assert_eq!(files.len(), names.len(), "one file per distinct name");
    for file in &files {
        let stem = file.strip_suffix(".resource.lock").expect("a lock file");
        let name = lockd::names::decode(stem).expect("a canonical stem");
        assert!(names.contains(&name), "{file} is not one of the names");
    }
    // Nothing outside the directory: its parent holds only it.
    let parent = daemon.dir.parent().unwrap();
    assert_eq!(crate::support::files_in(parent), ["locks"]);
    let Ok(Outcome::Value(Value::Array(locks))) = rpc.call("locks", &[]) else {
        panic!("locks() failed")
    };
    let listed: std::collections::BTreeSet<String> = locks
        .iter()
        .filter_map(|l| l.member("resource").and_then(Value::as_str))
        .map(str::to_owned)
        .collect();
    assert_eq!(listed, names);
    for name in &names {
        assert!(
            rpc.call("unlock", &[name, "n1"]).expect("reply").is_nil(),
            "{name:?}"
        );
    }
    assert_eq!(daemon.lock_files(), ["lockd.lock"]);
}
