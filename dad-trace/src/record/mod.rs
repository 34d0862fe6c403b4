//! The recording pipeline: kernel readings → [`track`] (each address's DAD phases) →
//! [`enrich`] (names: namespace, veth, pod; one owner) → an [`recorder::Output`], with the CNI
//! calls ([`cni`]) and the pods' start timelines ([`podstart`]) beside it.
//!
//! Nothing here shows or saves anything: the outputs are [`crate::output`]'s, and
//! [`crate::tracer`] runs a recording from attach to the saved session.
//!
//! Pure, not mutation-tested: module declarations only.
pub mod clock;
pub mod cni;
pub mod enrich;
pub mod identity;
pub mod podstart;
pub mod recorder;
pub mod sockets;
pub mod track;
