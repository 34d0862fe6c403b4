//! Processing, for any user: everything here reads sessions and nothing else.
//!
//! [`figures`] (addresses folded as a session is read) → [`summary`] (numbers, pod start in
//! [`podstart`], the pods' own settings in [`pod_settings`]) → [`text`] (one session for people), [`compare`] (several side by
//! side, with [`significance`]: a real change or noise), [`markdown`] and [`html`] of a
//! comparison, [`merge`] (one session of several), [`gate`] (before/after pass or fail).
//!
//! Pure, not mutation-tested: declarations and re-exports only, no logic to mutate.
pub mod compare;
pub mod figures;
pub mod gate;
pub mod html;
pub mod markdown;
pub mod merge;
pub mod pod_settings;
pub mod podstart;
pub mod significance;
pub mod socket_errors;
pub mod summary;
pub mod text;

pub use figures::Figures;
pub use summary::{PodDelay, SessionSummary, pod_delays, summarize};
pub use text::{render_text, render_text_in};
