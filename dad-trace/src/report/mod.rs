//! Processing, for any user: everything here reads sessions and nothing else.
//!
//! [`summary`] (numbers) → [`text`] (one session for people), [`compare`] (several side by
//! side, merging), [`html`] (an offline page), [`gate`] (before/after pass or fail).
pub mod compare;
pub mod gate;
pub mod html;
pub mod podstart;
pub mod summary;
pub mod text;

pub use summary::{PodDelay, SessionSummary, pod_delays, summarize};
pub use text::render_text;
