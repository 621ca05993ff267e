//! What a device or tag name may be, and how a name becomes part of a file
//! name.
//!
//! # The rule
//!
//! Every source (HTTP line protocol, JSON and CSV, MQTT topics, readings
//! files read by `ingest` and `score --input`) and every model key checks
//! names with [`validate_name`], so a name that is stored can always be
//! scored, written and read back. A device or tag name:
//!
//! 1. is not empty;
//! 2. is at most [`MAX_NAME_BYTES`] (128) bytes of UTF-8. A name becomes one
//!    folder name in the store (`models/<device>/<tag>/`) and part of file
//!    names, and file systems refuse names over 255 bytes; 128 leaves room
//!    for the escaping the store and [`file_name_part`] apply, and is far
//!    above real device ids (serial numbers, host names, UUIDs);
//! 3. holds no control character (Unicode category Cc: U+0000 to U+001F,
//!    U+007F to U+009F, which includes `\n`, `\r`, `\t` and NUL), no line or
//!    paragraph separator (U+2028, U+2029) and no bidirectional formatting
//!    character (U+202A to U+202E, U+2066 to U+2069): these break CSV
//!    rows, log lines and terminals, or make a name display as another;
//! 4. holds no `/`: the store separates folders with it
//!    (`models/<device>/<tag>/`, the model index's `device/tag` keys, MQTT
//!    topic levels), so a `/` would make two different pairs one;
//! 5. is not `.` or `..` (they name folders) and not `*` (it names the
//!    fallback model of a tag, `(*, tag)`; [`crate::ModelKey`] takes it as a
//!    device, no source does);
//! 6. neither starts nor ends with white space, so that `pump-1` and
//!    `pump-1 ` are not two devices (CSV readers trim cells before the check;
//!    other sources keep names as sent).
//!
//! Anything else is allowed: spaces inside, commas, quotes, `:`, `.`,
//! `_`, any letter of any script. Writers must therefore quote CSV cells
//! (RFC 4180) and encode names in file names ([`file_name_part`]).
//!
//! # Cost
//!
//! Parsers intern names and check each distinct name once per batch; the
//! check is one pass over the bytes, decoding only non-ASCII characters.

use std::borrow::Cow;
use std::fmt;

/// Longest device or tag name accepted, in bytes (see the module docs for
/// why 128).
pub const MAX_NAME_BYTES: usize = 128;

/// Which kind of name is checked, for the error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameKind {
    /// A device name.
    Device,
    /// A sensor tag name.
    Tag,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::Device => "device",
            NameKind::Tag => "tag",
        })
    }
}

/// Which part of the rule a name breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// Rule 1: it is empty.
    Empty,
    /// Rule 2: it is this many bytes, more than [`MAX_NAME_BYTES`].
    TooLong(usize),
    /// Rule 3: it holds this control or formatting character.
    Control(char),
    /// Rule 4: it holds `/`.
    Slash,
    /// Rule 5: it is `.` or `..`.
    Dots,
    /// Rule 5: it is `*`.
    Reserved,
    /// Rule 6: it starts or ends with white space.
    Whitespace,
    /// The bytes are not UTF-8 (for byte-level sources).
    NotUtf8,
}

impl fmt::Display for NameRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameRule::Empty => f.write_str("is empty; a name needs at least one character"),
            NameRule::TooLong(n) => write!(
                f,
                "is {n} bytes; the limit is {MAX_NAME_BYTES}; use a shorter name"
            ),
            NameRule::Control(c) => write!(
                f,
                "contains a control character (U+{:04X}); names may not contain control characters, line breaks or text-direction characters",
                u32::from(*c)
            ),
            NameRule::Slash => f.write_str(
                "contains `/`, which separates folders in the store; use another character, such as `:` or `.`",
            ),
            NameRule::Dots => f.write_str("is `.` or `..`, which name folders; pick another name"),
            NameRule::Reserved => {
                f.write_str("is `*`, which names a tag's fallback model; pick another name")
            }
            NameRule::Whitespace => {
                f.write_str("starts or ends with white space; remove it")
            }
            NameRule::NotUtf8 => f.write_str("is not UTF-8"),
        }
    }
}

/// A refused device or tag name: which kind, the name (shortened and
/// escaped for display) and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} name {shown}: {rule}")]
pub struct NameError {
    /// Device or tag.
    pub kind: NameKind,
    /// The name as shown in the message: quoted, control characters
    /// escaped, cut to 64 characters.
    pub shown: String,
    /// The rule broken.
    pub rule: NameRule,
}

impl NameError {
    /// An error for `name` (bytes, shown lossily) breaking `rule`.
    pub fn new(kind: NameKind, name: &[u8], rule: NameRule) -> Self {
        NameError {
            kind,
            shown: show(&String::from_utf8_lossy(name)),
            rule,
        }
    }
}

/// The name quoted with Rust's escapes (so `\n` shows as `\n`), cut to 64
/// characters.
fn show(name: &str) -> String {
    let mut s = String::from("\"");
    for (i, c) in name.chars().enumerate() {
        if i == 64 {
            s.push('…');
            break;
        }
        s.extend(c.escape_debug());
    }
    s.push('"');
    s
}

/// Checks a device or tag name against the rule in the module docs.
pub fn validate_name(kind: NameKind, name: &str) -> Result<(), NameError> {
    let err = |rule| Err(NameError::new(kind, name.as_bytes(), rule));
    let b = name.as_bytes();
    if b.is_empty() {
        return err(NameRule::Empty);
    }
    if b.len() > MAX_NAME_BYTES {
        return err(NameRule::TooLong(b.len()));
    }
    match name {
        "." | ".." => return err(NameRule::Dots),
        "*" => return err(NameRule::Reserved),
        _ => {}
    }
    // ASCII first: most names are, and a byte compare is all they need.
    let mut ascii = true;
    for &c in b {
        if c < 0x20 || c == 0x7f {
            return err(NameRule::Control(char::from(c)));
        }
        if c == b'/' {
            return err(NameRule::Slash);
        }
        ascii &= c < 0x80;
    }
    if !ascii {
        if let Some(c) = name.chars().find(|&c| forbidden(c)) {
            return err(NameRule::Control(c));
        }
    }
    let first = name.chars().next().is_some_and(char::is_whitespace);
    let last = name.chars().next_back().is_some_and(char::is_whitespace);
    if first || last {
        return err(NameRule::Whitespace);
    }
    Ok(())
}

/// [`validate_name`] for bytes: refuses non-UTF-8 too.
pub fn validate_name_bytes(kind: NameKind, name: &[u8]) -> Result<&str, NameError> {
    let s = std::str::from_utf8(name).map_err(|_| NameError::new(kind, name, NameRule::NotUtf8))?;
    validate_name(kind, s)?;
    Ok(s)
}

/// Control characters (Cc), line and paragraph separators, and the
/// bidirectional embedding, override and isolate characters.
fn forbidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A name as a safe part of a file name: ASCII letters, digits, `-` and
/// `.` are kept, every other byte (and `_` when `keep_underscore` is
/// false, so that `_` can separate parts) is percent-encoded (`a/b` →
/// `a%2Fb`, `x y` → `x%20y`). The result never holds a path separator,
/// is never `.` or `..` (those are encoded as `%2E`), and decodes back to
/// the name, so two names never share an encoding. It may be up to three
/// times as long as the name; callers that need a bounded length shorten
/// it themselves.
pub fn file_name_part(name: &str, keep_underscore: bool) -> Cow<'_, str> {
    let safe = |b: u8| {
        b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || (keep_underscore && b == b'_')
    };
    if matches!(name, "." | "..") {
        return Cow::Owned("%2E".repeat(name.len()));
    }
    if name.bytes().all(safe) && !name.is_empty() {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        if safe(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str) -> Option<NameRule> {
        validate_name(NameKind::Device, name).err().map(|e| e.rule)
    }

    #[test]
    fn real_fleet_names_are_accepted() {
        for ok in [
            "1",
            "pump-17",
            "Pump 17, north",
            "host.example.com",
            "ns:device@site",
            "cpu.usage_idle",
            "Temp (°C)",
            "温度センサー",
            "say \"hi\"",
            "x..y",
            "...",
            "a*b",
            &"x".repeat(MAX_NAME_BYTES),
        ] {
            assert_eq!(rule(ok), None, "{ok:?}");
        }
    }

    #[test]
    fn each_rule_is_enforced_and_named() {
        assert_eq!(rule(""), Some(NameRule::Empty));
        assert_eq!(
            rule(&"é".repeat(65)),
            Some(NameRule::TooLong(130)),
            "bytes, not characters"
        );
        assert_eq!(rule("a\nb"), Some(NameRule::Control('\n')));
        assert_eq!(rule("a\rb"), Some(NameRule::Control('\r')));
        assert_eq!(rule("a\tb"), Some(NameRule::Control('\t')));
        assert_eq!(rule("a\0b"), Some(NameRule::Control('\0')));
        assert_eq!(rule("a\u{7f}"), Some(NameRule::Control('\u{7f}')));
        assert_eq!(rule("a\u{85}b"), Some(NameRule::Control('\u{85}')));
        assert_eq!(rule("a\u{2028}b"), Some(NameRule::Control('\u{2028}')));
        assert_eq!(rule("evil\u{202E}txt"), Some(NameRule::Control('\u{202E}')));
        assert_eq!(rule("../../etc/x"), Some(NameRule::Slash));
        assert_eq!(rule("x/../../escaped"), Some(NameRule::Slash));
        assert_eq!(rule("."), Some(NameRule::Dots));
        assert_eq!(rule(".."), Some(NameRule::Dots));
        assert_eq!(rule("*"), Some(NameRule::Reserved));
        assert_eq!(rule(" pump"), Some(NameRule::Whitespace));
        assert_eq!(rule("pump\u{a0}"), Some(NameRule::Whitespace));
    }

    #[test]
    fn messages_name_the_kind_the_name_and_the_rule() {
        let e = validate_name(NameKind::Device, &"x".repeat(300)).unwrap_err();
        assert!(e.to_string().starts_with("device name \"xxxx"), "{e}");
        assert!(
            e.to_string()
                .ends_with("is 300 bytes; the limit is 128; use a shorter name"),
            "{e}"
        );
        let e = validate_name(NameKind::Tag, "a\nb").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("tag name \"a\\nb\": contains a control character (U+000A)"),
            "{e}"
        );
        let e = validate_name_bytes(NameKind::Device, b"\xff").unwrap_err();
        assert_eq!(e.to_string(), "device name \"\u{fffd}\": is not UTF-8");
    }

    #[test]
    fn file_name_parts_are_never_paths_and_never_collide() {
        assert_eq!(file_name_part("pump-7.a", false), "pump-7.a");
        assert_eq!(file_name_part("pump_7", true), "pump_7");
        assert_eq!(file_name_part("pump_7", false), "pump%5F7");
        assert_eq!(file_name_part("../x", true), "..%2Fx");
        assert_eq!(file_name_part("..", true), "%2E%2E");
        assert_eq!(file_name_part(".", true), "%2E");
        assert_eq!(file_name_part("a b,c", true), "a%20b%2Cc");
        assert_eq!(
            file_name_part("%41", true),
            "%2541",
            "`%` itself is encoded"
        );
        assert_eq!(file_name_part("é", true), "%C3%A9");
        for n in ["a/b", "a\\b", "a:b", "a\nb", "..", "a%2Fb"] {
            let p = file_name_part(n, false);
            assert!(
                !p.contains(['/', '\\', ':', '\n']) && p != ".." && p != ".",
                "{n:?} → {p}"
            );
        }
    }
}
