//! The tracer under test as the user runs it: a `dad-trace record` or `serve` child, with
//! its CPU time and peak memory taken from the kernel when it ends.
use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};
use dad_trace::session::Session;

/// A `dad-trace` child, attached once it said so.
pub struct Tracer {
    child: Child,
    /// Its remaining standard error, read all along so it never blocks on a full pipe.
    stderr: std::thread::JoinHandle<String>,
    session: Option<PathBuf>,
    /// Waited for by [`Tracer::finish`]; otherwise stopped when dropped (a benchmark part
    /// that fails must not leave a tracer attached to the rest of the run).
    reaped: bool,
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What the kernel counted for a tracer that ended.
pub struct Usage {
    pub cpu: Duration,
    /// Peak RSS in KiB: its own (as it logs it), and the largest of it and its BTF helper child.
    pub own_peak_kib: u64,
    pub with_helper_kib: u64,
}

impl Tracer {
    /// `dad-trace record` of the tracepoint backend into `session`, the runtime not asked.
    pub fn record(binary: &Path, session: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let mut args = vec![
            "record",
            "--backend",
            "tracepoint",
            "--quiet",
            "--cri-socket",
            "none",
            "-o",
        ];
        let session_arg = session.to_str().context("session path")?;
        args.push(session_arg);
        args.extend_from_slice(extra);
        Self::start(binary, &args, Some(session))
    }

    /// `dad-trace serve` on `listen`, keeping no events.
    pub fn serve(binary: &Path, listen: &str) -> anyhow::Result<Self> {
        Self::start(
            binary,
            &[
                "serve",
                "--backend",
                "tracepoint",
                "--cri-socket",
                "none",
                "--listen",
                listen,
            ],
            None,
        )
    }

    fn start(binary: &Path, args: &[&str], session: Option<&Path>) -> anyhow::Result<Self> {
        let mut child = Command::new(binary)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own peak memory is logged at debug level when it ends.
            .env("RUST_LOG", "warn,netlink_packet_route=error,dad_trace::tracer=debug")
            .spawn()
            .context("start dad-trace")?;
        let mut stderr = BufReader::new(child.stderr.take().context("stderr")?);
        let mut line = String::new();
        while !line.starts_with("Tracing") {
            line.clear();
            if stderr.read_line(&mut line)? == 0 {
                bail!("dad-trace {} exited before tracing", args.join(" "));
            }
        }
        let stderr = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
            rest
        });
        Ok(Self {
            child,
            stderr,
            session: session.map(Path::to_path_buf),
            reaped: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .context("VmRSS in /proc/PID/status")
    }

    pub fn interrupt(&self) {
        let pid = nix::unistd::Pid::from_raw(self.pid().cast_signed());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
    }

    /// Waits for the tracer to end; its session (when it wrote one) and usage.
    pub fn finish(mut self) -> anyhow::Result<(Option<Session>, Usage)> {
        let mut status = 0;
        // SAFETY: an all-zero rusage is valid; wait4 fills it in.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waits for our own child with valid pointers.
        let pid = unsafe { libc::wait4(self.pid().cast_signed(), &raw mut status, 0, &raw mut usage) };
        if pid < 0 {
            bail!("wait4: {}", std::io::Error::last_os_error());
        }
        self.reaped = true;
        let micros = |time: libc::timeval| time.tv_sec as u64 * 1_000_000 + time.tv_usec as u64;
        let cpu = Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime));
        let stderr = std::mem::replace(&mut self.stderr, std::thread::spawn(String::new))
            .join()
            .unwrap_or_default();
        let own_peak_kib = stderr
            .split("peak resident memory: ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let session = self.session.as_deref().map(Session::load).transpose()?;
        Ok((
            session,
            Usage {
                cpu,
                own_peak_kib,
                with_helper_kib: usage.ru_maxrss as u64,
            },
        ))
    }
}

/// A `dad-trace record` that ends after `count` addresses (or 3 minutes).
pub fn record_until(binary: &Path, session: &Path, count: usize) -> anyhow::Result<Tracer> {
    Tracer::record(binary, session, &["--count", &count.to_string(), "--duration", "180"])
}
