//! JSON strings, for the machine-readable output of the tools (`lockcmd
//! --json`, `lockd-bench`'s `RESULT` line). The rest of their JSON is
//! fixed keys and numbers, written in place.

/// `text` as a JSON string, quotes included.
pub fn string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    push_string(&mut out, text);
    out
}

/// Append `text` to `out` as a JSON string, quotes included.
pub fn push_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_json_requires() {
        assert_eq!(string("a\"\\\u{1}é"), "\"a\\\"\\\\\\u0001é\"");
        assert_eq!(string("\t\n\r"), "\"\\t\\n\\r\"");
        assert_eq!(string(""), "\"\"");
    }
}
