#![no_std]
// The kernel programs live in the `dad-trace` binary target (src/main.rs); this empty
// library exists so that the loader can build-depend on this crate (aya-template shape).
