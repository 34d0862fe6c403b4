//! Any bytes given to `report` end in a session or a clear error, never a panic; a session
//! that parses renders in every format.
#![no_main]

use std::path::Path;

use dad_trace::{
    report::{compare, html, render_text},
    session::Session,
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(session) = Session::parse(Path::new("fuzz.json"), data) {
        let _ = render_text(&session, true);
        let comparison = compare::compare(&[("fuzz".into(), session)]);
        let _ = compare::render_markdown(&comparison);
        let _ = compare::render_text(&comparison);
        let _ = html::render(&comparison);
    }
});
