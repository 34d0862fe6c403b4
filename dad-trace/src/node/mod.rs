//! The node itself: its network namespaces, its sysctls, the doctor that reads both, and
//! synthetic pods (namespaces set up the way a CNI plugin sets up a pod).
pub mod doctor;
pub mod host;
pub mod netns;
pub mod synthetic;
pub mod sysctl;
pub mod tune;

/// This node's host name.
#[must_use]
pub fn hostname() -> String {
    nix::unistd::gethostname().map_or_else(|_| "unknown".into(), |h| h.to_string_lossy().into_owned())
}
