//! Resource names and client strings: what is accepted, and how a resource
//! name becomes a file name that cannot leave the lock directory.
//!
//! A lock on a resource is the file `<stem>.resource.lock`. The stem is the
//! name itself, byte for byte, whenever the name is one path component (no
//! `/`, no NUL): that is where gocept.lockd kept its locks, so lockd and a
//! legacy daemon sharing a directory see each other's locks ([`stem`]).
//! A name with a `/` cannot be one file name; it is percent-encoded
//! ([`encode`]): every byte outside `A-Z a-z 0-9 . _ -`, every `%` and a
//! leading `.` become `%XX`. lockd 0.1 encoded every name that way, so a lock
//! may also sit under the encoded stem of a name ([`stems`] lists both).
//! [`decode`] accepts only what [`encode`] produces.

use std::fmt;

/// The suffix of every lock file.
pub const LOCK_SUFFIX: &str = ".resource.lock";

/// The longest file name most filesystems accept (ext4, xfs, btrfs, NFS).
const NAME_MAX: usize = 255;

/// The longest stem: the file name must fit in `NAME_MAX`.
pub const MAX_STEM: usize = NAME_MAX - LOCK_SUFFIX.len();

/// The longest client string, in bytes.
pub const MAX_CLIENT: usize = 1024;

/// Why a resource name, client string or other parameter is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    EmptyResource,
    ResourceTooLong {
        stem: usize,
    },
    EmptyClient,
    ClientTooLong {
        len: usize,
    },
    ClientControl,
    ClientSpace,
    /// gocept.lockd would keep the lock below this subdirectory of the lock
    /// directory, which lockd does not look into.
    LegacySubdirectory {
        subdirectory: String,
    },
    /// `acquire_many` with no resource, or too many.
    BatchSize {
        len: usize,
        max: usize,
    },
    /// `acquire_many` naming a resource twice.
    Duplicate {
        resource: String,
    },
    /// `break_lock` or `fence` without a reason.
    NoReason,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::EmptyResource => {
                write!(f, "the resource name is empty: name the resource to lock")
            }
            NameError::ResourceTooLong { stem } => write!(
                f,
                "the resource name is too long: its lock file name needs {stem} bytes before the suffix, the limit is {MAX_STEM}; use a shorter name"
            ),
            NameError::EmptyClient => {
                write!(f, "the client string is empty: say who takes the lock")
            }
            NameError::ClientTooLong { len } => {
                write!(
                    f,
                    "the client string is {len} bytes long, the limit is {MAX_CLIENT}; use a shorter one"
                )
            }
            NameError::ClientControl => write!(
                f,
                "the client string contains a line break or NUL, which cannot be stored in a lock file and read back; remove it"
            ),
            NameError::ClientSpace => write!(
                f,
                "the client string starts or ends with white space, which lock files do not keep (gocept.lockd stripped it); remove it"
            ),
            NameError::BatchSize { len, max } => {
                write!(f, "acquire_many takes 1 to {max} resources, got {len}")
            }
            NameError::Duplicate { resource } => write!(
                f,
                "acquire_many names {} twice: name each resource once",
                py2repr(resource)
            ),
            NameError::NoReason => write!(
                f,
                "the reason is empty: say why (it goes into the audit trail)"
            ),
            NameError::LegacySubdirectory { subdirectory } => write!(
                f,
                "gocept.lockd would keep the lock on this name in the subdirectory {subdirectory:?} of the lock directory, which lockd does not look into, so lockd refuses names below it while it exists; remove that subdirectory once it holds no locks, or use a name without '/'"
            ),
        }
    }
}

impl std::error::Error for NameError {}

fn is_plain(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-')
}

/// Whether `resource` is one path component, and so its own stem.
pub fn is_component(resource: &str) -> bool {
    !resource.contains(['/', '\0'])
}

/// Where gocept.lockd kept the lock on a resource: it joined the lock
/// directory and `<resource>.resource.lock` unchecked, so a `/` in the name
/// walked the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegacyPath {
    /// A file directly in the lock directory, with this stem: the name
    /// itself, or what `./x` or `a/../x` comes to.
    Stem(String),
    /// A file below this subdirectory of the lock directory (`a/b`).
    Subdirectory(String),
    /// Outside the lock directory (`/etc/x`, `../x`): not a lock lockd or
    /// gocept.lockd keeps in it.
    Outside,
}

/// Where gocept.lockd kept the lock on `resource`, the path read as the
/// kernel would once every directory on it exists.
pub fn legacy_path(resource: &str) -> LegacyPath {
    if is_component(resource) {
        return LegacyPath::Stem(resource.to_owned());
    }
    if resource.starts_with('/') || resource.contains('\0') {
        return LegacyPath::Outside;
    }
    let file = format!("{resource}{LOCK_SUFFIX}");
    let mut parts: Vec<&str> = Vec::new();
    for part in file.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return LegacyPath::Outside;
                }
            }
            _ => parts.push(part),
        }
    }
    // The last part ends with the suffix, so it is neither `.` nor `..`
    // and is still there.
    match parts.as_slice() {
        [file] => LegacyPath::Stem(file.strip_suffix(LOCK_SUFFIX).unwrap_or(file).to_owned()),
        [first, ..] => LegacyPath::Subdirectory((*first).to_owned()),
        [] => LegacyPath::Outside,
    }
}

/// The stem of the lock file lockd writes for `resource`: where
/// gocept.lockd kept it when that is directly in the lock directory (the
/// name itself, for any name without a `/`), else the percent-encoding.
/// Checked for emptiness and length.
pub fn stem(resource: &str) -> Result<String, NameError> {
    if resource.is_empty() {
        return Err(NameError::EmptyResource);
    }
    let LegacyPath::Stem(stem) = legacy_path(resource) else {
        return encode(resource);
    };
    if stem.is_empty() {
        return encode(resource);
    }
    if stem.len() > MAX_STEM {
        return Err(NameError::ResourceTooLong { stem: stem.len() });
    }
    Ok(stem)
}

/// Every stem a lock on `resource` may be found under, [`stem`] first:
/// also the encoded stem where it differs and fits, which lockd 0.1 wrote
/// and which gocept.lockd would have written for a name that looks encoded.
/// A lock file under any of them stops `resource` from being granted.
pub fn stems(resource: &str) -> Result<Vec<String>, NameError> {
    let mut stems = vec![stem(resource)?];
    let encoded = encode(resource).ok();
    let legacy = match legacy_path(resource) {
        LegacyPath::Stem(legacy) => Some(legacy),
        _ => None,
    };
    for other in [encoded, legacy].into_iter().flatten() {
        if !stems.contains(&other) {
            stems.push(other);
        }
    }
    Ok(stems)
}

/// `resource` in Latin-1, if it has a letter beyond ASCII and all of them
/// fit: the bytes a Python 2 gocept.lockd under a Latin-1 locale wrote.
pub fn latin1(resource: &str) -> Option<Vec<u8>> {
    if resource.is_ascii() || !is_component(resource) {
        return None;
    }
    resource.chars().map(|c| u8::try_from(c).ok()).collect()
}

/// The percent-encoded stem for a resource name, checked for length.
pub fn encode(resource: &str) -> Result<String, NameError> {
    if resource.is_empty() {
        return Err(NameError::EmptyResource);
    }
    let out = encode_any(resource);
    if out.len() > MAX_STEM {
        return Err(NameError::ResourceTooLong { stem: out.len() });
    }
    Ok(out)
}

/// The percent-encoding of any text, whatever its length.
pub fn encode_any(resource: &str) -> String {
    let mut out = String::with_capacity(resource.len());
    for (i, &byte) in resource.as_bytes().iter().enumerate() {
        if is_plain(byte) && !(i == 0 && byte == b'.') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The name a percent-encoding stands for, if it is exactly what
/// [`encode_any`] produces for some non-empty name.
pub fn decode(stem: &str) -> Option<String> {
    let bytes = stem.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let value = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            out.push(value);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let name = String::from_utf8(out).ok()?;
    (!name.is_empty() && encode_any(&name) == stem).then_some(name)
}

/// Check a client string: it must come back from the lock file unchanged.
pub fn check_client(client: &str) -> Result<(), NameError> {
    if client.is_empty() {
        return Err(NameError::EmptyClient);
    }
    if client.len() > MAX_CLIENT {
        return Err(NameError::ClientTooLong { len: client.len() });
    }
    if client.contains(['\n', '\r', '\0']) {
        return Err(NameError::ClientControl);
    }
    if client.trim() != client {
        return Err(NameError::ClientSpace);
    }
    Ok(())
}

/// Python 2's `repr()` of a byte string holding `text`'s UTF-8 bytes: the
/// quoting gocept.lockd's fault strings used, which callers parse.
pub fn py2repr(text: &str) -> String {
    let raw = text.as_bytes();
    let quote = if raw.contains(&b'\'') && !raw.contains(&b'"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(raw.len() + 2);
    out.push(quote);
    for &byte in raw {
        let ch = char::from(byte);
        match byte {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            _ if ch == quote => {
                out.push('\\');
                out.push(ch);
            }
            0..0x20 | 0x7f.. => {
                out.push_str("\\x");
                out.push(char::from(HEX_LOWER[usize::from(byte >> 4)]));
                out.push(char::from(HEX_LOWER[usize::from(byte & 0xf)]));
            }
            _ => out.push(ch),
        }
    }
    out.push(quote);
    out
}

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Prng;

    #[test]
    fn plain_names_are_kept() {
        assert_eq!(encode("vm-1.example_com").unwrap(), "vm-1.example_com");
        assert_eq!(decode("vm-1.example_com").unwrap(), "vm-1.example_com");
    }

    #[test]
    fn hostile_names_are_encoded() {
        assert_eq!(
            encode("../../etc/cron.d/x").unwrap(),
            "%2E.%2F..%2Fetc%2Fcron.d%2Fx"
        );
        assert_eq!(encode(".").unwrap(), "%2E");
        assert_eq!(encode("..").unwrap(), "%2E.");
        assert_eq!(encode("a%b").unwrap(), "a%25b");
        assert_eq!(encode("a b").unwrap(), "a%20b");
        assert_eq!(encode("café").unwrap(), "caf%C3%A9");
        assert_eq!(encode("lockd").unwrap(), "lockd");
    }

    #[test]
    fn stems_are_the_name_itself_unless_it_has_a_slash() {
        assert_eq!(stems("vm1").unwrap(), ["vm1"]);
        assert_eq!(stems("my vm").unwrap(), ["my vm", "my%20vm"]);
        assert_eq!(stems("caf\u{e9}").unwrap(), ["caf\u{e9}", "caf%C3%A9"]);
        assert_eq!(stems(".").unwrap(), [".", "%2E"]);
        assert_eq!(stems("..").unwrap(), ["..", "%2E."]);
        assert_eq!(stems("a%20b").unwrap(), ["a%20b", "a%2520b"]);
        assert_eq!(stems("a/b").unwrap(), ["a%2Fb"]);
        assert_eq!(stems("../../etc/x").unwrap(), ["%2E.%2F..%2Fetc%2Fx"]);
        assert_eq!(stems("a\0b").unwrap(), ["a%00b"]);
        // Where gocept.lockd's path walk ends in the directory itself.
        assert_eq!(stems("./x").unwrap(), ["x", "%2E%2Fx"]);
        assert_eq!(stems("a//../x").unwrap(), ["x", "a%2F%2F..%2Fx"]);
        // gocept.lockd's lock on "./" is `.resource.lock`.
        assert_eq!(stems("./").unwrap(), ["%2E%2F", ""]);
    }

    #[test]
    fn legacy_paths_are_walked_as_the_kernel_would() {
        use LegacyPath::*;
        assert_eq!(legacy_path("my vm"), Stem("my vm".into()));
        assert_eq!(legacy_path(".."), Stem("..".into()));
        assert_eq!(legacy_path("./x"), Stem("x".into()));
        assert_eq!(legacy_path("a/./../x"), Stem("x".into()));
        assert_eq!(legacy_path("x/."), Subdirectory("x".into()));
        assert_eq!(legacy_path("a//b"), Subdirectory("a".into()));
        assert_eq!(legacy_path("a/b/c"), Subdirectory("a".into()));
        assert_eq!(legacy_path("/etc/x"), Outside);
        assert_eq!(legacy_path("../x"), Outside);
        assert_eq!(legacy_path("a/../../x"), Outside);
    }

    #[test]
    fn decode_accepts_only_canonical_stems() {
        assert_eq!(decode("a%20b").unwrap(), "a b");
        assert_eq!(decode("%2E.").unwrap(), "..");
        assert_eq!(decode("a%2db"), None, "lower-case hex is not canonical");
        assert_eq!(
            decode("a%2Db"),
            None,
            "'-' is plain and must not be encoded"
        );
        assert_eq!(decode(".hidden"), None);
        assert_eq!(decode("a b"), None);
        assert_eq!(decode("a%2"), None);
        assert_eq!(decode("%FF"), None, "not UTF-8");
        assert_eq!(decode(""), None);
    }

    #[test]
    fn round_trip_and_no_collision() {
        let names = [
            "a",
            "A",
            "a/b",
            "a%2Fb",
            "%",
            "%25",
            ".x",
            "%2Ex",
            "x.",
            "\u{1F512}",
            " ",
            "\t",
        ];
        let mut seen = std::collections::HashSet::new();
        for name in names {
            let stem = encode(name).unwrap();
            assert!(!stem.contains('/') && !stem.starts_with('.'), "{stem}");
            assert_eq!(decode(&stem).as_deref(), Some(name));
            assert!(seen.insert(stem), "collision for {name:?}");
        }
    }

    #[test]
    fn length_limits() {
        assert!(encode(&"a".repeat(MAX_STEM)).is_ok());
        assert_eq!(
            encode(&"a".repeat(MAX_STEM + 1)),
            Err(NameError::ResourceTooLong { stem: MAX_STEM + 1 })
        );
        assert_eq!(
            encode(&"/".repeat(81)),
            Err(NameError::ResourceTooLong { stem: 243 })
        );
        assert_eq!(encode(""), Err(NameError::EmptyResource));
        assert_eq!(stem(""), Err(NameError::EmptyResource));
        // 120 two-byte letters: 240 bytes as they are, 720 encoded.
        let long = "\u{e9}".repeat(120);
        assert_eq!(stems(&long).unwrap(), [long.as_str()]);
        assert_eq!(
            stem(&format!("{long}xy")),
            Err(NameError::ResourceTooLong { stem: 242 })
        );
    }

    #[test]
    fn client_checks() {
        assert_eq!(check_client("node1"), Ok(()));
        assert_eq!(check_client("tab\there"), Ok(()));
        assert_eq!(check_client(""), Err(NameError::EmptyClient));
        assert_eq!(check_client("a\nb"), Err(NameError::ClientControl));
        assert_eq!(check_client("a\0b"), Err(NameError::ClientControl));
        assert_eq!(check_client(" a"), Err(NameError::ClientSpace));
        assert_eq!(
            check_client(&"x".repeat(MAX_CLIENT + 1)),
            Err(NameError::ClientTooLong {
                len: MAX_CLIENT + 1
            })
        );
    }

    #[test]
    fn py2repr_matches_wire_md() {
        assert_eq!(py2repr("client1"), "'client1'");
        assert_eq!(py2repr("O'Brien"), "\"O'Brien\"");
        assert_eq!(py2repr("say \"hi\""), "'say \"hi\"'");
        assert_eq!(py2repr("both 'and\""), "'both \\'and\"'");
        assert_eq!(py2repr("back\\slash"), "'back\\\\slash'");
        assert_eq!(py2repr("tab\there"), "'tab\\there'");
        assert_eq!(py2repr("café"), "'caf\\xc3\\xa9'");
        assert_eq!(py2repr("a\nb\rc\u{1}\u{7f}"), "'a\\nb\\rc\\x01\\x7f'");
    }

    /// A random name: few characters, drawn mostly from the troublesome
    /// ones (`.`, `/`, `%`, controls, spaces, multi-byte characters).
    fn random_name(rng: &mut Prng) -> String {
        let len = 1 + rng.below(12);
        (0..len)
            .map(|_| match rng.below(8) {
                0 => '.',
                1 => '/',
                2 => '%',
                3 => char::from(rng.below(0x20) as u8),
                4 => char::from(b'a' + rng.below(3) as u8),
                5 => ['\\', ' ', '\u{7f}', '\u{0}', '-', '_'][rng.below(6)],
                6 => char::from_u32(0x80 + rng.below(0x800) as u32).unwrap_or('x'),
                _ => char::from_u32(rng.below(0x11_0000) as u32).unwrap_or('\u{10FFFF}'),
            })
            .collect()
    }

    #[test]
    fn random_names_stay_inside_round_trip_and_never_collide() {
        let mut rng = Prng(0x5EED_1234_ABCD_0001);
        let mut stems = std::collections::HashMap::new();
        let mut encoded = 0;
        for _ in 0..50_000 {
            let name = random_name(&mut rng);
            let stem = match encode(&name) {
                Ok(stem) => stem,
                Err(NameError::ResourceTooLong { .. }) => continue,
                Err(other) => panic!("{name:?}: {other}"),
            };
            encoded += 1;
            assert!(
                !stem.is_empty()
                    && !stem.starts_with('.')
                    && stem.bytes().all(|b| b.is_ascii_graphic() && b != b'/'),
                "{name:?} encodes to {stem:?}"
            );
            let path = std::path::Path::new("/locks").join(format!("{stem}{LOCK_SUFFIX}"));
            assert_eq!(
                path.parent(),
                Some(std::path::Path::new("/locks")),
                "{name:?}"
            );
            assert_eq!(decode(&stem).as_deref(), Some(name.as_str()));
            if let Some(other) = stems.insert(stem.clone(), name.clone()) {
                assert_eq!(other, name, "{other:?} and {name:?} share {stem:?}");
            }
        }
        assert!(encoded > 40_000, "too few names fit: {encoded}");
    }

    #[test]
    fn random_stems_decode_only_when_canonical() {
        let mut rng = Prng(0x5EED_1234_ABCD_0002);
        let alphabet = b"%0123456789ABCDEFabcdef.-_/ xz\xc3\xa9";
        let mut accepted = 0;
        for _ in 0..50_000 {
            let len = 1 + rng.below(10);
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            let Ok(stem) = String::from_utf8(bytes) else {
                continue;
            };
            if let Some(name) = decode(&stem) {
                accepted += 1;
                assert_eq!(encode(&name).as_deref(), Ok(stem.as_str()), "{stem:?}");
            }
        }
        assert!(accepted > 1000, "too few stems decoded: {accepted}");
    }
}
