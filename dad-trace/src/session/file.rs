//! Reading and writing session files. Reading treats the file as hostile: only regular files
//! up to [`MAX_FILE_BYTES`], parsed as a stream, each address typed, checked and handed to
//! the session's [`Addresses`] (kept, or folded into a report's figures), errors that
//! name the file, the place (`events[12].tentative_ns`, line and column) and what is wrong,
//! and values no recording can produce refused rather than bent. Writing is atomic (temp
//! file, fsync, rename) and readable by anyone (sessions hold no secrets; `report` needs no
//! root).
//!
//! Mutation-tested (cargo xtask mutants), not pure: it reads and writes files, and its
//! unit tests do, in temporary directories; what is read is checked by pure code here.
use std::{
    io::{BufReader, Read, Seek as _, SeekFrom, Write as _},
    path::{Path, PathBuf},
};

use serde::Deserialize;

use super::{AddressEvent, Addresses, FORMAT, FORMAT_VERSION, Session};
use crate::files::{self, OpenError};

/// The largest session file read: millions of addresses, more than one recording should
/// hold; a larger file is refused unread.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot read session file {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a regular file ({kind}): give the session file itself")]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error("session file {path} is {size} bytes, more than the {MAX_FILE_BYTES} dad-trace reads: split the recording")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("session file {path} is empty: was the recording killed before it saved?")]
    Empty { path: PathBuf },
    #[error("session file {path} is not valid JSON; it may be truncated or not a dad-trace session")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("session file {path} does not match the session format at {at}")]
    Schema {
        path: PathBuf,
        at: String,
        source: serde_json::Error,
    },
    #[error("{path} is not a dad-trace session (format is {found}, expected {FORMAT:?})")]
    NotASession { path: PathBuf, found: String },
    #[error(
        "session file {path} has format version {found}; this dad-trace reads version {FORMAT_VERSION}. \
         Use the dad-trace release that recorded it"
    )]
    Version { path: PathBuf, found: String },
    #[error("session file {path} is corrupt at {at}: {why}")]
    Invalid { path: PathBuf, at: String, why: String },
    #[error("cannot write session file {path}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// The two fields that say what a document is, read before anything else is trusted (every
/// other field is skipped without being kept).
#[derive(Default)]
struct Header {
    format: Option<serde_json::Value>,
    format_version: Option<serde_json::Value>,
}

impl Session {
    /// Reads and validates a session file, keeping every address.
    pub fn load(path: &Path) -> Result<Self, SessionError> {
        Self::load_as(path)
    }

    /// Validates `bytes` as the session at `path` (named in errors).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, SessionError> {
        Self::parse_as(path, bytes)
    }

    /// Writes the session atomically: a reader sees the old file or the new one, never half.
    /// The file is readable by everyone the umask allows (0644 by default). Compact: smaller
    /// and faster to read than indented (`jq .` indents for people).
    pub fn save(&self, path: &Path) -> Result<(), SessionError> {
        files::write_atomically(path, |file| {
            serde_json::to_writer(&mut *file, self)?;
            file.write_all(b"\n")
        })
        .map_err(|source| SessionError::Write {
            path: path.into(),
            source,
        })
    }
}

impl<E: Addresses> Session<E> {
    /// Reads and validates a session file, each address handed to `E` as it is read.
    pub fn load_as(path: &Path) -> Result<Self, SessionError> {
        let read = |source| SessionError::Read {
            path: path.into(),
            source,
        };
        let mut file = match files::open_regular(path, MAX_FILE_BYTES) {
            Ok((file, _)) => file,
            Err(OpenError::Io(source)) => return Err(read(source)),
            Err(OpenError::NotAFile(kind)) => {
                return Err(SessionError::NotAFile {
                    path: path.into(),
                    kind,
                });
            }
            Err(OpenError::TooLarge { size, .. }) => {
                return Err(SessionError::TooLarge {
                    path: path.into(),
                    size,
                });
            }
        };
        let header = header(path, BufReader::new((&mut file).take(MAX_FILE_BYTES)))?;
        check_header(path, header)?;
        typed(path, || {
            (&file).seek(SeekFrom::Start(0)).map_err(read)?;
            Ok(BufReader::with_capacity(1 << 16, (&file).take(MAX_FILE_BYTES)))
        })
    }

    /// Validates `bytes` as the session at `path` (named in errors).
    pub fn parse_as(path: &Path, bytes: &[u8]) -> Result<Self, SessionError> {
        check_header(path, header(path, bytes)?)?;
        typed(path, || Ok(bytes))
    }
}

/// The `events` array read one address at a time: each is checked, then handed to `E`.
/// The first one no recording can produce is kept to be named, and the rest only read.
struct Fold<E> {
    events: E,
    invalid: Option<(String, String)>,
}

impl<'de, E: Addresses> Deserialize<'de> for Fold<E> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(FoldVisitor(std::marker::PhantomData))
    }
}

struct FoldVisitor<E>(std::marker::PhantomData<E>);

impl<'de, E: Addresses> serde::de::Visitor<'de> for FoldVisitor<E> {
    type Value = Fold<E>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a sequence")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Fold<E>, A::Error> {
        let mut fold = Fold {
            events: E::default(),
            invalid: None,
        };
        let mut index = 0_usize;
        while fold.invalid.is_none() {
            let Some(event) = seq.next_element::<AddressEvent>()? else {
                return Ok(fold);
            };
            match check_event(&event) {
                Ok(()) => fold.events.add(event),
                Err((field, why)) => fold.invalid = Some((format!("events[{index}].{field}"), why)),
            }
            index += 1;
        }
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(fold)
    }
}

/// A reader that notes whether anything but whitespace went through it.
struct Seen<R> {
    inner: R,
    content: bool,
}

impl<R: Read> Read for Seen<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.content |= buffer[..read].iter().any(|byte| !byte.is_ascii_whitespace());
        Ok(read)
    }
}

/// Reads `format` and `format_version`, and stops there: dad-trace writes them first, so a
/// big session is not read twice (in another order the whole document is read).
struct HeaderVisitor<'a>(&'a mut Header);

impl<'de> serde::de::Visitor<'de> for HeaderVisitor<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "format" => self.0.format = Some(map.next_value()?),
                "format_version" => self.0.format_version = Some(map.next_value()?),
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
            if self.0.format.is_some() && self.0.format_version.is_some() {
                break;
            }
        }
        Ok(())
    }
}

fn header(path: &Path, reader: impl Read) -> Result<Header, SessionError> {
    let mut seen = Seen {
        inner: reader,
        content: false,
    };
    let mut found = Header::default();
    let read = serde::Deserializer::deserialize_map(
        &mut serde_json::Deserializer::from_reader(&mut seen),
        HeaderVisitor(&mut found),
    );
    match read {
        Ok(()) => Ok(found),
        // Stopped early on purpose: the rest is the typed pass's to judge.
        Err(_) if found.format.is_some() && found.format_version.is_some() => Ok(found),
        Err(_) if !seen.content => Err(SessionError::Empty { path: path.into() }),
        // Valid JSON of another shape (a string, a number).
        Err(source) if source.classify() == serde_json::error::Category::Data => Err(SessionError::NotASession {
            path: path.into(),
            found: "absent: the document is not a JSON object".into(),
        }),
        Err(source) => Err(SessionError::Parse {
            path: path.into(),
            source,
        }),
    }
}

fn check_header(path: &Path, header: Header) -> Result<(), SessionError> {
    match header.format {
        Some(serde_json::Value::String(format)) if format == FORMAT => {}
        found => {
            return Err(SessionError::NotASession {
                path: path.into(),
                found: found.map_or_else(|| "missing".into(), |value| value.to_string()),
            });
        }
    }
    match header.format_version {
        Some(version) if version.as_u64() == Some(u64::from(FORMAT_VERSION)) => Ok(()),
        Some(version) if version.is_u64() => Err(SessionError::Version {
            path: path.into(),
            found: version.to_string(),
        }),
        found => Err(SessionError::Version {
            path: path.into(),
            found: found.map_or_else(|| "missing".into(), |value| format!("{value}, not a whole number")),
        }),
    }
}

/// The typed pass. Without the path of each value in hand, which would slow every read; a
/// document of the wrong shape is read once more with it, to say where.
fn typed<E: Addresses, R: Read>(
    path: &Path,
    mut source: impl FnMut() -> Result<R, SessionError>,
) -> Result<Session<E>, SessionError> {
    let read = Deserialize::deserialize(&mut serde_json::Deserializer::from_reader(source()?));
    let session: Session<Fold<E>> = match read {
        Ok(session) => session,
        // Cut short or not JSON (the header alone did not read that far).
        Err(source) if source.classify() != serde_json::error::Category::Data => {
            return Err(SessionError::Parse {
                path: path.into(),
                source,
            });
        }
        Err(first) => {
            let mut deserializer = serde_json::Deserializer::from_reader(source()?);
            let (at, source) = match serde_path_to_error::deserialize::<_, Session<Fold<E>>>(&mut deserializer) {
                Err(error) => (error.path().to_string(), error.into_inner()),
                Ok(_) => (String::from("?"), first),
            };
            return Err(SessionError::Schema {
                path: path.into(),
                at,
                source,
            });
        }
    };
    validate(path, &session)?;
    Ok(session.map_events(|fold| fold.events))
}

/// An address no recording can produce: the field and why.
fn check_event(event: &AddressEvent) -> Result<(), (&'static str, String)> {
    let start = i64::try_from(event.tentative_ns)
        .ok()
        .and_then(|ns| event.time.checked_sub_signed(chrono::Duration::nanoseconds(ns)));
    if start.is_none() {
        return Err((
            "tentative_ns",
            format!(
                "{} ns before {} is not a time (more than 292 years)",
                event.tentative_ns, event.time
            ),
        ));
    }
    if event.dad_ns.is_some_and(|dad| dad > event.tentative_ns) {
        return Err(("dad_ns", "DAD cannot outlast the tentative state it is part of".into()));
    }
    Ok(())
}

/// Values a recording cannot produce: refused with where they are, never clamped.
fn validate<E>(path: &Path, session: &Session<Fold<E>>) -> Result<(), SessionError> {
    let invalid = |at: String, why: String| SessionError::Invalid {
        path: path.into(),
        at,
        why,
    };
    if let Some((at, why)) = &session.events.invalid {
        return Err(invalid(at.clone(), why.clone()));
    }
    if session.ended_at < session.started_at {
        return Err(invalid("ended_at".into(), "the session ends before it starts".into()));
    }
    for (index, pod) in session.pods.iter().enumerate() {
        if let (Some(dad), Some(add)) = (pod.dad_wait_ns, pod.cni_add_ns)
            && dad > add
        {
            return Err(invalid(
                format!("pods[{index}].dad_wait_ns"),
                "the DAD wait inside the ADD cannot outlast the ADD".into(),
            ));
        }
        check_calls(&pod.cni_calls, &format!("pods[{index}].cni_calls"), true).map_err(|(at, why)| invalid(at, why))?;
        if let Some(settings) = &pod.settings {
            check_settings(settings).map_err(|(at, why)| invalid(format!("pods[{index}].settings.{at}"), why))?;
        }
    }
    if let Some(cni) = &session.cni {
        check_calls(&cni.calls_without_pod, "cni.calls_without_pod", true).map_err(|(at, why)| invalid(at, why))?;
    }
    Ok(())
}

/// A pod's settings as a recording bounds them (see [`super::settings`]).
fn check_settings(settings: &super::PodSettings) -> Result<(), (String, String)> {
    use super::settings::{MAX_IFNAME, MAX_INTERFACES};
    if settings.interfaces.len() > MAX_INTERFACES {
        return Err((
            "interfaces".into(),
            format!("more than the {MAX_INTERFACES} interfaces a recording keeps"),
        ));
    }
    for (index, interface) in settings.interfaces.iter().enumerate() {
        if interface.name.is_empty() || interface.name.len() > MAX_IFNAME {
            return Err((
                format!("interfaces[{index}].name"),
                format!("not an interface name (1 to {MAX_IFNAME} bytes)"),
            ));
        }
    }
    Ok(())
}

/// Calls end at a time (start + duration is a date), and delegates have none of their own
/// (the list is flat: the tree is in `ppid`).
fn check_calls(calls: &[super::CniCall], at: &str, top: bool) -> Result<(), (String, String)> {
    for (index, call) in calls.iter().enumerate() {
        if call.duration_ns.is_some() && call.end().is_none() {
            return Err((
                format!("{at}[{index}].duration_ns"),
                "start + duration is not a time (more than 292 years)".into(),
            ));
        }
        if !top && !call.delegates.is_empty() {
            return Err((
                format!("{at}[{index}].delegates"),
                "a delegate lists no delegates of its own (the list is flat)".into(),
            ));
        }
        check_calls(&call.delegates, &format!("{at}[{index}].delegates"), false)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{fs::File, os::unix::fs::PermissionsExt as _};

    use super::*;
    use crate::session::tests::sample;

    #[test]
    fn json_round_trip_and_atomic_save() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.json");
        let session = sample();
        session.save(&path).expect("save");
        assert_eq!(Session::load(&path).expect("load"), session);
        let text = std::fs::read_to_string(&path).expect("read");
        for key in [
            "\"netns_inode\"",
            "\"netns_name\"",
            "\"ifname\"",
            "\"ifindex\"",
            "\"addr\"",
            "\"tentative_ns\"",
            "\"dad_ns\":null",
            "\"outcome\":\"settled\"",
            "\"lost_events\":2",
            "\"backend\":\"tracepoint\"",
            "\"kernel_release\"",
        ] {
            assert!(text.contains(key), "{key} missing in {text}");
        }
        // Only the target remains: no temp files left behind.
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1);
        assert_eq!(
            session.events[0].started().to_rfc3339(),
            "2026-11-25T20:00:00.100+00:00"
        );
    }

    #[test]
    fn bad_input_names_file_and_problem() {
        let path = Path::new("bad.json");
        let text = serde_json::to_string(&sample()).expect("serialize");
        let mut huge = sample();
        huge.events[0].tentative_ns = u64::MAX;
        let huge = serde_json::to_string(&huge).expect("serialize");
        let mut backwards = sample();
        backwards.events[0].dad_ns = Some(backwards.events[0].tentative_ns + 1);
        let backwards = serde_json::to_string(&backwards).expect("serialize");
        let cases: [(&[u8], &str); 13] = [
            (b"", "is empty"),
            (b" \n\n ", "is empty"),
            (b"{\n", "not valid JSON"),
            // Broken before the version: broken, not a session without a version.
            (br#"{"format":"dad-trace-session", !!!"#, "not valid JSON"),
            (&text.as_bytes()[..text.len() / 2], "not valid JSON"),
            (br#"{"format":"other"}"#, "not a dad-trace session (format is \"other\""),
            (br#""a string""#, "format is absent: the document is not a JSON object"),
            (br#"{"version": 1}"#, "format is missing"),
            (
                br#"{"format":"dad-trace-session","format_version":99}"#,
                "format version 99; this dad-trace reads version 1",
            ),
            (br#"{"format":"dad-trace-session"}"#, "format version missing"),
            (
                br#"{"format":"dad-trace-session","format_version":"1"}"#,
                "format version \"1\", not a whole number",
            ),
            (
                br#"{"format":"dad-trace-session","format_version":1,"events":3}"#,
                "does not match the session format at events: invalid type: integer `3`, expected a sequence at line 1",
            ),
            (
                huge.as_bytes(),
                "corrupt at events[0].tentative_ns: 18446744073709551615 ns before",
            ),
        ];
        let message = Session::parse(path, backwards.as_bytes())
            .expect_err("must fail")
            .to_string();
        assert!(message.contains("corrupt at events[0].dad_ns"), "{message}");
        for (bytes, expected) in cases {
            let error = Session::parse(path, bytes).expect_err("must fail");
            // The whole chain, as main prints it (`{e:#}`).
            let message = format!("{:#}", anyhow::Error::from(error));
            assert!(message.contains("bad.json") && message.contains(expected), "{message}");
        }
    }

    /// A pod's settings hold at most 16 interfaces, each with a name the kernel could give.
    #[test]
    fn settings_are_bounded_as_a_recording_bounds_them() {
        use crate::{
            report::podstart::tests::pod,
            session::{PodSettings, settings::ConfValues},
        };
        let with = |count: usize, name: &str| {
            let mut session = sample();
            let mut bounded = pod(7, 1900, 1900);
            let interfaces = (0..count)
                .map(|i| (format!("{name}{i:02}"), ConfValues::default()))
                .collect();
            bounded.settings = Some(PodSettings::default().with_interfaces(interfaces));
            session.pods = vec![bounded];
            session
        };
        let load = |session: &Session| {
            let text = serde_json::to_string(session).expect("serialize");
            Session::parse(Path::new("s.json"), text.as_bytes()).map(|_| ())
        };
        let edge = with(16, "eth-0123456");
        assert_eq!(edge.pods[0].settings.as_ref().map(|s| s.interfaces.len()), Some(16));
        assert!(load(&edge).is_ok());
        let mut many = with(16, "net");
        let settings = many.pods[0].settings.as_mut().expect("settings");
        settings.interfaces.push(settings.interfaces[0].clone());
        let error = load(&many).expect_err("17 interfaces").to_string();
        assert!(error.contains("at pods[0].settings.interfaces:"), "{error}");
        let mut unnamed = with(1, "net");
        unnamed.pods[0].settings.as_mut().expect("settings").interfaces[0].name = "x".repeat(16);
        let error = load(&unnamed).expect_err("too long a name").to_string();
        assert!(error.contains("at pods[0].settings.interfaces[0].name:"), "{error}");
        unnamed.pods[0].settings.as_mut().expect("settings").interfaces[0].name = String::new();
        assert!(load(&unnamed).is_err(), "an empty name");
    }

    /// Validation refuses what no recording makes, and only that: the edges themselves are
    /// recordable.
    #[test]
    fn validation_stops_at_the_edges_of_what_a_recording_makes() {
        use crate::report::podstart::tests::pod;
        let refused = |session: &Session| {
            let text = serde_json::to_string(session).expect("serialize");
            Session::parse(Path::new("s.json"), text.as_bytes())
                .err()
                .map(|error| error.to_string())
        };
        // DAD as long as the tentative state, a session that ends as it starts, a DAD wait
        // as long as its ADD, an ADD still running, a top-level call with a delegate.
        let mut edges = sample();
        edges.events[0].dad_ns = Some(edges.events[0].tentative_ns);
        edges.ended_at = edges.started_at;
        let mut running = pod(7, 1900, 1900);
        running.cni_calls[0].duration_ns = None;
        running.cni_calls[0].delegates = vec![pod(8, 5, 0).cni_calls[0].clone()];
        edges.pods = vec![running];
        assert_eq!(refused(&edges), None);
        // Past them, each named by its place.
        let mut ends_early = sample();
        ends_early.ended_at = ends_early.started_at - chrono::Duration::seconds(1);
        let mut long_wait = sample();
        long_wait.pods = vec![pod(7, 1900, 1901)];
        let mut endless = sample();
        endless.pods = vec![pod(7, 1900, 1900)];
        endless.pods[0].cni_calls[0].duration_ns = Some(u64::MAX);
        let mut nested = sample();
        let mut delegate = pod(8, 5, 0).cni_calls[0].clone();
        delegate.delegates = vec![delegate.clone()];
        nested.pods = vec![pod(7, 1900, 1900)];
        nested.pods[0].cni_calls[0].delegates = vec![delegate];
        for (session, at) in [
            (ends_early, "at ended_at:"),
            (long_wait, "at pods[0].dad_wait_ns:"),
            (endless, "at pods[0].cni_calls[0].duration_ns:"),
            (nested, "at pods[0].cni_calls[0].delegates[0].delegates:"),
        ] {
            let message = refused(&session).expect("refused");
            assert!(message.contains(at), "{at}: {message}");
        }
    }

    /// The header is read only as far as its two fields: the rest of a big file is read
    /// once, by the typed pass, which names what is wrong there.
    #[test]
    fn the_header_stops_after_its_two_fields() {
        let path = Path::new("s.json");
        let text = br#"{"format":"dad-trace-session","format_version":1, !!! not JSON"#;
        let found = header(path, &text[..]).expect("read as far as needed");
        assert_eq!(found.format_version.and_then(|v| v.as_u64()), Some(1));
        let error = Session::parse(path, text).expect_err("the rest is broken");
        assert!(matches!(error, SessionError::Parse { .. }), "{error:?}");
        // In another order, the whole document is read for them.
        let late = br#"{"events":[],"format_version":1,"format":"dad-trace-session"}"#;
        assert!(header(path, &late[..]).is_ok());
    }

    /// An address no recording makes is named by its place though more follow it (they are
    /// read, not folded).
    #[test]
    fn the_first_impossible_address_is_named_though_more_follow() {
        let mut session = sample();
        let good = session.events[0].clone();
        let mut bad = good.clone();
        bad.dad_ns = Some(bad.tentative_ns + 1);
        session.events = vec![good.clone(), bad, good.clone(), good];
        let text = serde_json::to_string(&session).expect("json");
        let error = Session::parse(Path::new("s.json"), text.as_bytes()).expect_err("refused");
        assert!(error.to_string().contains("corrupt at events[1].dad_ns"), "{error}");
        // Broken JSON after it is still broken JSON.
        let cut = &text.as_bytes()[..text.len() - 40];
        let error = Session::parse(Path::new("s.json"), cut).expect_err("refused");
        assert!(matches!(error, SessionError::Parse { .. }), "{error:?}");
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named_by_its_place() {
        let mut value = serde_json::to_value(sample()).expect("json");
        value["events"][0]["tentative_ns"] = serde_json::json!("soon");
        let text = serde_json::to_string_pretty(&value).expect("json");
        let error = Session::parse(Path::new("s.json"), text.as_bytes()).expect_err("refused");
        let message = format!("{:#}", anyhow::Error::from(error));
        assert!(message.contains("at events[0].tentative_ns"), "{message}");
        assert!(message.contains("line ") && message.contains("column "), "{message}");
    }

    /// Not a file: refused at once (a FIFO would block a reader forever, /dev/zero would
    /// fill memory), with what it is.
    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let zero = dir.path().join("zero.json");
        std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
        for (path, kind) in [
            (fifo, "a FIFO"),
            (zero, "a character device"),
            (dir.path().into(), "a directory"),
        ] {
            let (done, result) = std::sync::mpsc::channel();
            let probe = path.clone();
            std::thread::spawn(move || {
                let _ = done.send(Session::load(&probe).map(drop).map_err(|e| e.to_string()));
            });
            let outcome = result
                .recv_timeout(std::time::Duration::from_secs(5))
                .unwrap_or_else(|_| panic!("{} blocked the reader", path.display()));
            let message = outcome.expect_err("refused");
            assert!(message.contains(&format!("not a regular file ({kind})")), "{message}");
        }
    }

    #[test]
    fn files_over_the_limit_are_refused_unread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big.json");
        // Sparse: nothing is written, nothing must be read.
        File::create(&path)
            .expect("create")
            .set_len(MAX_FILE_BYTES + 1)
            .expect("set_len");
        let message = Session::load(&path).expect_err("refused").to_string();
        assert!(
            message.contains("more than the 1073741824 dad-trace reads"),
            "{message}"
        );
    }

    /// Sessions hold no secrets and `report` needs no root: readable by others.
    #[test]
    fn saved_sessions_are_readable_by_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.json");
        sample().save(&path).expect("save");
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        let umask = status
            .lines()
            .find_map(|line| line.strip_prefix("Umask:"))
            .and_then(|mask| u32::from_str_radix(mask.trim(), 8).ok())
            .expect("umask");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o644 & !umask);
    }
}
