//! Waiting for a `dad-trace record` started by a test to attach.
use std::{
    io::{BufRead as _, BufReader},
    process::{Child, ChildStderr},
};

/// Reads the tracer's standard error until it says it is tracing (its programs are
/// attached, so what the test does next is seen), and hands the rest of the stream back.
pub fn until_tracing(child: &mut Child) -> BufReader<ChildStderr> {
    let mut stderr = BufReader::new(child.stderr.take().expect("the tracer's stderr is piped"));
    let mut line = String::new();
    while !line.starts_with("Tracing") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).expect("read the tracer's stderr") > 0,
            "the tracer ended before it said Tracing"
        );
    }
    stderr
}
