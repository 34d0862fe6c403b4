//! Any bytes given to `report` end in a session or a clear error, never a panic; a session
//! that parses renders in every format, alone, side by side with another (ratios), merged
//! with it, and through the before/after gate both ways.
#![no_main]

use std::{path::Path, sync::OnceLock};

use dad_trace::{
    report::{Figures, compare, gate::POD_START, html, markdown, render_text},
    session::Session,
};

/// A real recorded session to pair the fuzzed one with.
fn recorded() -> &'static Session<Figures> {
    static RECORDED: OnceLock<Session<Figures>> = OnceLock::new();
    RECORDED.get_or_init(|| {
        Session::parse_as(
            Path::new("default-20-pods.json"),
            include_bytes!("../../dad-trace/tests/fixtures/default-20-pods.json"),
        )
        .expect("the fixture parses")
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The addresses kept and folded as `report` reads them: the same verdict on the bytes.
    let kept = Session::parse(Path::new("fuzz.json"), data);
    let Ok(session) = Session::<Figures>::parse_as(Path::new("fuzz.json"), data) else {
        assert!(kept.is_err(), "refused folded, accepted kept");
        return;
    };
    assert!(kept.is_ok_and(|kept| kept.fold::<Figures>() == session));
    let _ = render_text(&session, true);
    let alone = compare::compare(&[("fuzz".into(), session.clone())]);
    let _ = markdown::render_markdown(&alone);
    let _ = compare::render_text(&alone);
    let _ = html::render(&alone);
    for pair in [
        [session.clone(), recorded().clone()],
        [recorded().clone(), session.clone()],
        [session.clone(), session.clone()],
    ] {
        let _ = POD_START.check(&pair[0], &pair[1]).render();
        let side_by_side = compare::compare(&[("a".into(), pair[0].clone()), ("b".into(), pair[1].clone())]);
        let _ = compare::render_text(&side_by_side);
        let _ = markdown::render_markdown(&side_by_side);
        let _ = html::render(&side_by_side);
        if let Ok(merged) = compare::merge(pair.to_vec()) {
            let _ = render_text(&merged, true);
        }
    }
});
