//! Random resource names through the real daemon: every lock file lands
//! directly in the lock directory under the name's stem, `locks()` gives the
//! original names back, and a name is refused exactly while a lock file
//! stands under one of its stems (two names that could share a file never
//! both get it).

use std::collections::BTreeSet;

use lockd::names;
use lockd::xmlrpc::Value;

use crate::proof::{self, Outcome, Prng, Rpc};
use crate::support::Daemon;

fn random_name(rng: &mut Prng) -> String {
    let len = 1 + rng.below(10) as usize;
    (0..len)
        .map(|_| match rng.below(7) {
            0 => '.',
            1 => '/',
            2 => '%',
            3 => char::from(b'a' + rng.below(3) as u8),
            // Enough of hex to spell `%2F`, `%25` and `%2E` now and then.
            4 => ['2', '5', 'E', 'F'][rng.below(4) as usize],
            // The only controls XML 1.0 carries unchanged (a CR arrives
            // as LF, the others cannot be sent at all).
            5 => ['\t', '\n'][rng.below(2) as usize],
            _ => char::from_u32(0x80 + rng.below(0x3000) as u32).unwrap_or('x'),
        })
        .collect()
}

#[test]
fn random_names_stay_inside_and_come_back() {
    let daemon = Daemon::start();
    let mut rng = Prng::new(proof::seed("names"));
    let mut rpc = Rpc::new(daemon.addr);
    let mut held: BTreeSet<String> = BTreeSet::new();
    let mut files: BTreeSet<String> = BTreeSet::new();
    let mut refused_by_another = 0;
    for _ in 0..proof::knob("NAMES", 400) {
        // Now and then the encoding of an earlier name, or what an earlier
        // name decodes to: the pairs that could share a file.
        let pick = rng.below(held.len() as u64) as usize;
        let name = match (rng.below(4), held.iter().nth(pick)) {
            (0, Some(earlier)) => names::encode_any(earlier),
            (1, Some(earlier)) => names::decode(earlier).unwrap_or_else(|| random_name(&mut rng)),
            _ => random_name(&mut rng),
        };
        let stems = names::stems(&name).expect("short names fit");
        let in_the_way = stems.iter().any(|s| files.contains(s));
        let outcome = rpc.call("lock", &[&name, "n1"]).expect("reply");
        if in_the_way {
            assert!(
                matches!(outcome, Outcome::Fault(1, _)),
                "{name:?}: {outcome:?}"
            );
            refused_by_another += usize::from(!held.contains(&name));
        } else {
            assert!(outcome.is_nil(), "{name:?}: {outcome:?}");
            held.insert(name);
            files.insert(stems[0].clone());
        }
    }
    assert!(
        refused_by_another > 0,
        "no two names shared a stem: the test proves less than it says"
    );
    let on_disk: BTreeSet<String> = daemon
        .lock_files()
        .into_iter()
        .filter(|f| f != "lockd.lock" && f != "lockd.ranges")
        .map(|f| {
            f.strip_suffix(".resource.lock")
                .expect("a lock file")
                .to_owned()
        })
        .collect();
    assert_eq!(on_disk, files, "one file per held name, under its stem");
    // Nothing outside the directory: its parent holds only it.
    let parent = daemon.dir.parent().unwrap();
    assert_eq!(crate::support::files_in(parent), ["locks"]);
    let Ok(Outcome::Value(Value::Array(locks))) = rpc.call("locks", &[]) else {
        panic!("locks() failed")
    };
    let listed: BTreeSet<String> = locks
        .iter()
        .filter_map(|l| l.member("resource").and_then(Value::as_str))
        .map(str::to_owned)
        .collect();
    assert_eq!(listed, held);
    for name in &held {
        assert!(
            rpc.call("unlock", &[name, "n1"]).expect("reply").is_nil(),
            "{name:?}"
        );
    }
    assert_eq!(daemon.lock_files(), ["lockd.lock", "lockd.ranges"]);
}
