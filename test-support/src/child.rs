//! A `dad-trace` run as a child of the test: started, waited on until its programs are
//! attached, signalled, and its output and exit collected.
use std::{
    io::{BufRead as _, BufReader, Read as _},
    process::{Child, Command, Output, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// How long a tracer may take to attach before the test gives up on it.
const ATTACH_TIMEOUT: Duration = Duration::from_mins(2);

/// Starts `command` (a `dad-trace record ...`) and returns once it says it is tracing: its
/// programs are attached, so what the test does next is seen.
pub fn spawn_record(command: &mut Command) -> Running {
    let mut running = Running::spawn(command);
    running.until_tracing();
    running
}

/// A child whose standard output and error are read as they come (a full pipe never stalls
/// it), until [`Running::finish`] hands them over with its exit. Dropped unfinished (a test
/// that failed half-way), the child is stopped.
pub struct Running {
    child: Option<Child>,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    /// Standard error's lines as they arrive.
    lines: Receiver<String>,
}

impl Running {
    /// Starts `command` with both streams piped, not waiting for anything.
    pub fn spawn(command: &mut Command) -> Self {
        Self::start(command, true)
    }

    /// Starts `command` with its standard output closed at once, as when the reader of a
    /// pipe goes away (`| head`): its writes fail.
    pub fn spawn_with_stdout_closed(command: &mut Command) -> Self {
        Self::start(command, false)
    }

    fn start(command: &mut Command, read_stdout: bool) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let stdout = if read_stdout {
            Some(std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = BufReader::new(stdout).read_to_end(&mut bytes);
                bytes
            }))
        } else {
            drop(stdout);
            None
        };
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr is piped"));
        let (send, lines) = mpsc::channel();
        let stderr = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            loop {
                let start = bytes.len();
                match stderr.read_until(b'\n', &mut bytes) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        // Nobody listens once the test stopped waiting: the bytes are kept.
                        let _ = send.send(String::from_utf8_lossy(&bytes[start..]).into_owned());
                    }
                }
            }
            bytes
        });
        Self {
            child: Some(child),
            stdout,
            stderr: Some(stderr),
            lines,
        }
    }

    /// Waits until the child says it is tracing (a standard error line starting `Tracing`);
    /// fails the test when it ends first or takes longer than two minutes.
    pub fn until_tracing(&mut self) {
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        let mut said = String::new();
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) if line.starts_with("Tracing") => return,
                Ok(line) => said.push_str(&line),
                Err(RecvTimeoutError::Disconnected) => panic!("the tracer ended before it said Tracing:\n{said}"),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("the tracer did not say Tracing within {ATTACH_TIMEOUT:?}:\n{said}")
                }
            }
        }
    }

    /// Waits until the child holds or handles both SIGINT and SIGTERM (from the first line of
    /// its `main`): before that, as for any process, their default action ends it. Fails the
    /// test when it ends first or takes longer than two minutes.
    pub fn until_handling_stop_signals(&self) {
        let stops = (1_u64 << (Signal::SIGINT as u32 - 1)) | (1_u64 << (Signal::SIGTERM as u32 - 1));
        let status = format!("/proc/{}/status", self.child().id());
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&status).unwrap_or_else(|e| panic!("read {status}: {e}"));
            let mask = |field: &str| {
                text.lines()
                    .find_map(|line| line.strip_prefix(field))
                    .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
                    .unwrap_or_else(|| panic!("no {field} in {status}"))
            };
            if (mask("SigBlk:") | mask("SigCgt:")) & stops == stops {
                return;
            }
            assert!(
                !text.lines().any(|line| line.starts_with("State:\tZ")),
                "the child ended before it held SIGINT and SIGTERM"
            );
            assert!(
                Instant::now() < deadline,
                "the child did not hold or handle SIGINT and SIGTERM within {ATTACH_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn child(&self) -> &Child {
        self.child.as_ref().expect("running until finished")
    }

    /// Sends `signal` to the child.
    pub fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.child().id()).expect("a pid fits"));
        kill(pid, signal).unwrap_or_else(|e| panic!("send {signal}: {e}"));
    }

    /// Waits for the child to end; its exit and all it wrote (standard output empty when
    /// it was closed).
    pub fn finish(mut self) -> Output {
        let status = self
            .child
            .take()
            .expect("running until finished")
            .wait()
            .expect("wait for the child");
        let stdout = self
            .stdout
            .take()
            .map(|reader| reader.join().expect("stdout reader"))
            .unwrap_or_default();
        // The reader ends with the pipe: when the child and whatever inherited it are gone.
        let stderr = self
            .stderr
            .take()
            .map(|reader| reader.join().expect("stderr reader"))
            .unwrap_or_default();
        Output { status, stdout, stderr }
    }

    /// Sends `signal`, then [`Running::finish`]es.
    pub fn stop(self, signal: Signal) -> Output {
        self.signal(signal);
        self.finish()
    }
}

/// How long a child stopped by [`Drop`] may take to put things back before it is killed.
const CLEAN_UP_TIMEOUT: Duration = Duration::from_secs(30);

impl Drop for Running {
    /// A test that failed half-way ends its child as Ctrl-C would (it restores sysctls and
    /// removes its pods), so that the next test does not share the kernel with it; killed
    /// when it does not end in time.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + CLEAN_UP_TIMEOUT;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Exit code and standard error of a command run to its end, whose standard output is not
/// needed.
pub fn exit_of(command: &mut Command) -> (Option<i32>, String) {
    let output = command
        .stdout(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
