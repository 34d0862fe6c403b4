//! Names chosen by others (interface names inside pod namespaces, pod and namespace names
//! from the runtime, host names and labels from session files) made safe to print (leaf):
//! control characters become visible escapes, so nothing a tenant names can move a
//! terminal's cursor or break a table.
//!
//! Pure: mutation-tested (cargo xtask mutants).
use std::{borrow::Cow, fmt::Write as _};

/// `text` with control characters (C0, DEL, C1) shown as `\x1b`-style escapes, and the
/// backslash itself escaped so an escape cannot be forged.
#[must_use]
pub fn terminal(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() || c == '\\') {
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
            c => safe.push(c),
        }
    }
    Cow::Owned(safe)
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
