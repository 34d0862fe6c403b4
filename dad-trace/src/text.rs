//! Names chosen by others (interface names inside pod namespaces, pod and namespace names
//! from the runtime, host names and labels from session files) made safe to print (leaf):
//! control characters become visible escapes, so nothing a tenant names can move a
//! terminal's cursor or break a table.
use std::{borrow::Cow, fmt::Write as _};

/// `text` with control characters (C0, DEL, C1) shown as `\x1b`-style escapes, and the
/// backslash itself escaped so an escape cannot be forged.
#[must_use]
pub fn terminal(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() || c == '\\') {
        return Cow::Borrowed(text);
    }
    let mut safe = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => safe.push_str("\\\\"),
            c if c.is_control() && u32::from(c) <= 0xff => {
                let _ = write!(safe, "\\x{:02x}", u32::from(c));
            }
            c if c.is_control() => {
                let _ = write!(safe, "\\u{{{:x}}}", u32::from(c));
            }
            c => safe.push(c),
        }
    }
    Cow::Owned(safe)
}

/// `text` as one cell of a markdown table: [`terminal`]-safe, and `|`, backquotes and angle
/// brackets escaped so the table keeps its columns and carries no HTML.
#[must_use]
pub fn markdown(text: &str) -> String {
    let mut cell = String::new();
    for c in terminal(text).chars() {
        match c {
            '|' => cell.push_str("\\|"),
            '`' => cell.push_str("\\`"),
            '<' => cell.push_str("&lt;"),
            '>' => cell.push_str("&gt;"),
            c => cell.push(c),
        }
    }
    cell
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
    }

    #[test]
    fn markdown_cells_keep_their_columns() {
        assert_eq!(markdown("a|b"), "a\\|b");
        assert_eq!(markdown("<img src=x>"), "&lt;img src=x&gt;");
        assert_eq!(markdown("a\nb"), "a\\x0ab");
        assert_eq!(markdown("`x`"), "\\`x\\`");
    }
}
