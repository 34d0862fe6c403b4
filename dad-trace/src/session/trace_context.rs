//! The W3C trace context a runtime hands a CNI plugin (`TRACEPARENT`, `TRACESTATE`, passed by
//! libcni since containernetworking/cni#1173), so that dad-trace's spans join the runtime's
//! trace. Whoever runs a plugin sets these: only a context that is valid in every part is
//! kept, anything else means "start a new trace".
//!
//! Pure: mutation-tested (cargo xtask mutants).
use std::fmt::{self, Write as _};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest `TRACESTATE` kept (the W3C limit is 32 members of at most 256 characters, but
/// 512 is what implementations must propagate at least).
pub const TRACE_STATE_MAX: usize = 512;

/// A `traceparent` of version `00`: which trace, which span is the parent, and its flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

impl TraceParent {
    /// Reads `00-<32 hex>-<16 hex>-<2 hex>`. Refused: another version, another length,
    /// upper-case hex (the spec says lower-case only), an all-zero trace or span id.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('-');
        let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || version != "00" {
            return None;
        }
        let trace_id: [u8; 16] = hex(trace)?;
        let parent_id: [u8; 8] = hex(parent)?;
        let [flags] = hex::<1>(flags)?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// Whether the caller sampled its trace (flag bit 0).
    #[must_use]
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

/// `N` bytes from exactly `2N` lower-case hex digits.
fn hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut bytes = [0; N];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(bytes)
}

fn nibble(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

/// Lower-case hex of `bytes`, as trace ids are written.
#[must_use]
pub fn hex_string(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(2 * bytes.len()), |mut text, byte| {
            let _ = write!(text, "{byte:02x}");
            text
        })
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex_string(&self.trace_id),
            hex_string(&self.parent_id),
            self.flags
        )
    }
}

/// Written as the header reads; a session file's value is checked like the environment's.
impl Serialize for TraceParent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TraceParent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text)
            .ok_or_else(|| serde::de::Error::custom("not a W3C traceparent (00-<trace id>-<span id>-<flags>)"))
    }
}

/// A `tracestate` worth passing on: at most [`TRACE_STATE_MAX`] bytes of printable ASCII (the
/// spec's character set), else none.
#[must_use]
pub fn trace_state(text: &str) -> Option<String> {
    let fits =
        !text.is_empty() && text.len() <= TRACE_STATE_MAX && text.bytes().all(|byte| (b' '..=b'~').contains(&byte));
    fits.then(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_read_and_written_back() {
        let parent = TraceParent::parse(VALID).expect("valid");
        assert_eq!(hex_string(&parent.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parent.parent_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert_eq!(parent.flags, 1);
        assert!(parent.sampled());
        assert_eq!(parent.to_string(), VALID);
        let unsampled = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-fe").expect("valid");
        assert!(!unsampled.sampled());
        assert_eq!(unsampled.flags, 0xfe);
    }

    #[test]
    fn anything_but_a_valid_version_00_traceparent_is_refused() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e47g6-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba9/2b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\u{202e}",
            "\u{e9}0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
        assert!(TraceParent::parse(&format!("{VALID}{}", "-0".repeat(100))).is_none());
    }

    #[test]
    fn digits_and_letters_at_the_edges_of_hex_are_read() {
        let parent = TraceParent::parse("00-09af0000000000000000000000000000-0000000000000009-a0").expect("valid");
        assert_eq!(parent.trace_id[..2], [0x09, 0xaf]);
        assert_eq!(parent.parent_id[7], 9);
        assert_eq!(parent.flags, 0xa0);
        for edge in [b'/', b':', b'`', b'g'] {
            assert_eq!(nibble(edge), None, "{}", char::from(edge));
        }
        assert_eq!(
            (nibble(b'0'), nibble(b'9'), nibble(b'a'), nibble(b'f')),
            (Some(0), Some(9), Some(10), Some(15))
        );
    }

    #[test]
    fn a_session_s_traceparent_is_checked_as_the_environment_s() {
        let parent = TraceParent::parse(VALID).expect("valid");
        let json = serde_json::to_string(&parent).expect("serialize");
        assert_eq!(json, format!("\"{VALID}\""));
        assert_eq!(serde_json::from_str::<TraceParent>(&json).expect("read"), parent);
        let zero = "\"00-00000000000000000000000000000000-00f067aa0ba902b7-01\"";
        let error = serde_json::from_str::<TraceParent>(zero).expect_err("refused");
        assert!(error.to_string().contains("not a W3C traceparent"), "{error}");
    }

    #[test]
    fn a_trace_state_is_kept_only_when_short_and_printable() {
        assert_eq!(trace_state("congo=t61rcWkgMzE").as_deref(), Some("congo=t61rcWkgMzE"));
        assert_eq!(trace_state(" ~"), Some(" ~".into()));
        assert_eq!(trace_state(""), None);
        assert_eq!(trace_state("a=\u{1b}[2J"), None);
        assert_eq!(trace_state("a=\u{7f}"), None);
        assert_eq!(trace_state("a=\u{1f}"), None);
        assert_eq!(
            trace_state(&"x".repeat(TRACE_STATE_MAX)).map(|s| s.len()),
            Some(TRACE_STATE_MAX)
        );
        assert_eq!(trace_state(&"x".repeat(TRACE_STATE_MAX + 1)), None);
    }
}
