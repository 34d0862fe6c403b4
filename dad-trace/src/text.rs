//! Names chosen by others (interface names inside pod namespaces, pod and namespace names
//! from the runtime, host names and labels from session files) made safe to print (leaf):
//! control characters and Unicode's invisible format characters become visible escapes, so
//! nothing a tenant names can move a terminal's cursor, break a table, or reorder or hide
//! text (bidirectional overrides and zero-width characters: "Trojan Source",
//! CVE-2021-42574).
//!
//! Pure: mutation-tested (cargo xtask mutants).
use std::{borrow::Cow, fmt::Write as _};

/// Unicode's format characters (general category Cf, Unicode 15.1): invisible, and some
/// reorder what follows them (bidirectional embeddings, overrides and isolates).
const FORMAT: &[(u32, u32)] = &[
    (0x00ad, 0x00ad),
    (0x0600, 0x0605),
    (0x061c, 0x061c),
    (0x06dd, 0x06dd),
    (0x070f, 0x070f),
    (0x0890, 0x0891),
    (0x08e2, 0x08e2),
    (0x180e, 0x180e),
    (0x200b, 0x200f),
    (0x202a, 0x202e),
    (0x2060, 0x2064),
    (0x2066, 0x206f),
    (0xfeff, 0xfeff),
    (0xfff9, 0xfffb),
    (0x110bd, 0x110bd),
    (0x110cd, 0x110cd),
    (0x13430, 0x1343f),
    (0x1bca0, 0x1bca3),
    (0x1d173, 0x1d17a),
    (0xe0001, 0xe0001),
    (0xe0020, 0xe007f),
];

/// Whether `c` is a format character (see [`FORMAT`]).
#[must_use]
pub fn is_format(c: char) -> bool {
    let code = u32::from(c);
    FORMAT.iter().any(|&(first, last)| (first..=last).contains(&code))
}

/// `text` with control characters (C0, DEL, C1) shown as `\x1b`-style escapes, format
/// characters as `\u{202e}`-style ones, and the backslash itself escaped so an escape
/// cannot be forged.
#[must_use]
pub fn terminal(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() || c == '\\' || is_format(c)) {
        return Cow::Borrowed(text);
    }
    // The length as a hint only (no arithmetic on it that a test could not tell apart).
    let mut safe = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => safe.push_str("\\\\"),
            // `is_control` is Unicode's Cc: C0, DEL and C1, all below U+00A0, two hex digits.
            c if c.is_control() => {
                let _ = write!(safe, "\\x{:02x}", u32::from(c));
            }
            c if is_format(c) => {
                let _ = write!(safe, "\\u{{{:x}}}", u32::from(c));
            }
            c => safe.push(c),
        }
    }
    Cow::Owned(safe)
}

/// `value` as JSON whose strings escape format characters (`\u202e`) besides the control
/// characters JSON always escapes: the same data for a parser, nothing reordered or hidden
/// on a terminal. `pretty` indents as `to_string_pretty` does.
pub fn json<T: serde::Serialize + ?Sized>(value: &T, pretty: bool) -> serde_json::Result<String> {
    let mut out = Vec::new();
    if pretty {
        let formatter = Escaping(serde_json::ser::PrettyFormatter::new());
        value.serialize(&mut serde_json::Serializer::with_formatter(&mut out, formatter))?;
    } else {
        let formatter = Escaping(serde_json::ser::CompactFormatter);
        value.serialize(&mut serde_json::Serializer::with_formatter(&mut out, formatter))?;
    }
    // serde_json writes UTF-8 only.
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A JSON formatter that also escapes format characters.
struct Escaping<F>(F);

impl<F: serde_json::ser::Formatter> serde_json::ser::Formatter for Escaping<F> {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut rest = fragment;
        while let Some((at, c)) = rest.char_indices().find(|&(_, c)| is_format(c)) {
            writer.write_all(&rest.as_bytes()[..at])?;
            let mut units = [0; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            rest = &rest[at + c.len_utf8()..];
        }
        writer.write_all(rest.as_bytes())
    }

    fn begin_array<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.0.begin_array(writer)
    }

    fn end_array<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.0.end_array(writer)
    }

    fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W, first: bool) -> std::io::Result<()> {
        self.0.begin_array_value(writer, first)
    }

    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.0.end_array_value(writer)
    }

    fn begin_object<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.0.begin_object(writer)
    }

    fn end_object<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.0.end_object(writer)
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, writer: &mut W, first: bool) -> std::io::Result<()> {
        self.0.begin_object_key(writer, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.0.begin_object_value(writer)
    }

    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.0.end_object_value(writer)
    }
}

/// `text` inside Markdown (a table cell, a list item): [`terminal`]-safe, every character
/// Markdown gives a meaning escaped, so a name keeps a table's columns, formats nothing and
/// carries no HTML.
#[must_use]
pub fn markdown(text: &str) -> String {
    let mut out = String::new();
    for c in terminal(text).chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '#' | '~' | '!' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` inside HTML: [`terminal`]-safe, then escaped for element content and attributes.
#[must_use]
pub fn html(text: &str) -> String {
    terminal(text)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(terminal("eth0"), "eth0");
        assert!(matches!(terminal("eth0"), Cow::Borrowed(_)));
        assert_eq!(terminal("x\u{1b}[2Jy"), "x\\x1b[2Jy");
        assert_eq!(terminal("a\nb\tc\u{7f}\u{9b}"), "a\\x0ab\\x09c\\x7f\\x9b");
        assert_eq!(
            terminal("back\\x1b"),
            "back\\\\x1b",
            "a literal backslash cannot fake an escape"
        );
        assert!(!terminal("\u{1b}\u{0}\u{85}").chars().any(char::is_control));
        assert_eq!(terminal("\u{9f}\u{a0}\u{ff}"), "\\x9f\u{a0}\u{ff}", "C1 ends at U+009F");
        assert_eq!(terminal("\\"), "\\\\");
    }

    #[test]
    fn format_characters_are_shown_not_obeyed() {
        // A right-to-left override would show `ab\u{202e}oc` as "abco".
        assert_eq!(terminal("ab\u{202e}oc"), "ab\\u{202e}oc");
        assert_eq!(
            terminal("a\u{200b}b\u{2066}c\u{2069}\u{feff}"),
            "a\\u{200b}b\\u{2066}c\\u{2069}\\u{feff}"
        );
        assert_eq!(terminal("\u{e0041}\u{ad}"), "\\u{e0041}\\u{ad}");
        // Each range's edges, and their neighbours that are not format characters.
        for &(first, last) in FORMAT {
            for code in [first, last] {
                let c = char::from_u32(code).expect("a character");
                assert!(is_format(c), "{code:x}");
                assert_eq!(terminal(&c.to_string()), format!("\\u{{{code:x}}}"));
            }
        }
        for code in [
            0x00ac, 0x00ae, 0x200a, 0x2010, 0x2029, 0x202f, 0x2065, 0x2070, 0xfefe, 0xff00, 0xe0000, 0xe0080,
        ] {
            let c = char::from_u32(code).expect("a character");
            assert!(!is_format(c), "{code:x}");
        }
        assert!(
            matches!(terminal("é\u{4e2d}\u{1f600}"), Cow::Borrowed(_)),
            "other Unicode prints as it is"
        );
        assert_eq!(markdown("a\u{202e}b"), "a\\\\u{202e}b");
        assert_eq!(html("a\u{2067}b"), "a\\u{2067}b");
    }

    #[test]
    fn json_escapes_format_characters_and_means_the_same() {
        let value = serde_json::json!({"ifname": "ab\u{202e}oc", "tag": "\u{e0041}", "plain": ["é", "a\nb"]});
        let line = json(&value, false).expect("json");
        assert_eq!(
            line,
            r#"{"ifname":"ab\u202eoc","plain":["é","a\nb"],"tag":"\udb40\udc41"}"#
        );
        assert!(!line.chars().any(is_format));
        assert_eq!(serde_json::from_str::<serde_json::Value>(&line).expect("parses"), value);
        let pretty = json(&value, true).expect("json");
        assert_eq!(
            pretty,
            serde_json::to_string_pretty(&value)
                .expect("json")
                .replace('\u{202e}', "\\u202e")
                .replace('\u{e0041}', "\\udb40\\udc41")
        );
    }

    #[test]
    fn markdown_cells_keep_their_columns() {
        assert_eq!(markdown("a|b"), "a\\|b");
        assert_eq!(markdown("<img src=x>"), "&lt;img src=x&gt;");
        assert_eq!(markdown("a\nb"), "a\\\\x0ab");
        assert_eq!(markdown("`x`_*"), "\\`x\\`\\_\\*");
        assert_eq!(markdown("a & b #1 ~[!]"), "a &amp; b \\#1 \\~\\[\\!\\]");
        assert_eq!(markdown("plain"), "plain");
        assert_eq!(html("\"a\" & b"), "&quot;a&quot; &amp; b");
        assert_eq!(html("<a href='x'>\u{1b}"), "&lt;a href=&#39;x&#39;&gt;\\x1b");
    }
}
