//! Fuzz the lock file names: for any UTF-8 name every stem stays inside the
//! directory, the first is the name itself unless it has a `/`, and the
//! encoded one decodes back to the name; for any stem, decode accepts only
//! what encode produces.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lockd::names;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(stem) = names::encode(text) {
        assert!(!stem.contains('/') && !stem.contains('\0'));
        assert!(!stem.starts_with('.'));
        assert!(stem.len() <= names::MAX_STEM);
        assert_eq!(names::decode(&stem).as_deref(), Some(text));
    }
    if let Ok(stems) = names::stems(text) {
        for stem in &stems {
            assert!(!stem.contains('/') && !stem.contains('\0'));
            assert!(!stem.is_empty() && stem.len() <= names::MAX_STEM);
        }
        assert_eq!(stems[0] == text, names::is_component(text));
    }
    if let Some(name) = names::decode(text) {
        assert_eq!(names::encode(&name).as_deref(), Ok(text));
    }
});
