//! Fuzz the name encoding: for any UTF-8 name the file stem stays inside
//! the directory and decodes back to the name; for any stem, decode accepts
//! only what encode produces.

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
        assert!(stem.len() <= names::MAX_ENCODED_RESOURCE);
        assert_eq!(names::decode(&stem).as_deref(), Some(text));
    }
    if let Some(name) = names::decode(text) {
        assert_eq!(names::encode(&name).as_deref(), Ok(text));
    }
});
