//! The docs' sample output is the real thing: pods started by a real containerd, traced by
//! the release binary (`record`, `serve`'s /metrics, `doctor`, `report` before and after the
//! fix), and every `<!-- sample: NAME -->` block of README.md and docs/ checked against this
//! run's output by shape (see `integration_tests::samples`). A format change that the docs do
//! not follow fails here; `DAD_TRACE_BLESS=1` rewrites the blocks from the run instead.
//! Root only; skips with a reason otherwise.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use integration_tests::{
    containerd::{self, Containerd},
    needs_root,
    prometheus::free_loopback_port,
    samples::{self, BLESS_ENV},
    stock_dad_settings,
};
use nix::sys::signal::Signal;
use test_support::{Running, skip, spawn_record};

const CNI_DIR: &str = "/usr/lib/cni";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The static release binary `cargo xtask image` builds for this machine.
fn release_binary() -> Option<PathBuf> {
    let binary = workspace().join(format!(
        "target/{}-unknown-linux-gnu/release/dad-trace",
        std::env::consts::ARCH
    ));
    if binary.exists() {
        Some(binary)
    } else {
        skip(format_args!(
            "no release binary at {} (cargo xtask image builds it; cargo xtask test does first)",
            binary.display()
        ));
        None
    }
}

/// `$ COMMAND` and what the binary printed to standard output for it.
fn shown(command: &str, stdout: &[u8]) -> String {
    format!("$ {command}\n{}", String::from_utf8_lossy(stdout))
}

fn run(binary: &Path, args: &[&str]) -> Vec<u8> {
    let output = Command::new(binary).args(args).output().expect("run dad-trace");
    assert!(
        output.status.success(),
        "dad-trace {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn start_pods(containerd: &Containerd, pods: &[(&str, &str, &str)]) {
    for (namespace, name, uid) in pods {
        containerd
            .run_pod_with_container(namespace, name, uid)
            .expect("pod starts");
    }
    // Let the last events arrive.
    std::thread::sleep(Duration::from_secs(1));
}

/// The metrics a reader looks at first, from a scrape: the DAD and pod-start families.
fn metrics_excerpt(scrape: &str) -> String {
    const FAMILIES: [&str; 3] = [
        "dad_trace_tentative_seconds",
        "dad_trace_pod_dad_wait_seconds",
        "dad_trace_cni_add_seconds",
    ];
    scrape
        .lines()
        .filter(|line| {
            FAMILIES.iter().any(|family| {
                line.starts_with(&format!("# HELP {family} "))
                    || line.starts_with(&format!("# TYPE {family} "))
                    || line.starts_with(&format!("{family}_count"))
                    || line.starts_with(&format!("{family}_sum"))
            })
        })
        .fold(String::new(), |text, line| text + line + "\n")
}

fn scrape_when(port: u16, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let scrape = ureq::get(format!("http://127.0.0.1:{port}/metrics"))
            .call()
            .ok()
            .and_then(|mut response| response.body_mut().read_to_string().ok())
            .unwrap_or_default();
        if done(&scrape) {
            return scrape;
        }
        assert!(Instant::now() < deadline, "metrics never showed the pods:\n{scrape}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// What each sample shows, by name.
type Outputs = BTreeMap<&'static str, String>;

/// The node the samples come from: a containerd, the release binary, the sessions' directory.
struct Node<'a> {
    binary: &'a Path,
    containerd: &'a Containerd,
    socket: String,
    dir: &'a Path,
}

impl Node<'_> {
    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// With the kernel's defaults: `serve`'s metrics and `record --per-pod` while pods start,
    /// then `doctor`.
    fn before_the_fix(&self, outputs: &mut Outputs) {
        let port = free_loopback_port().port();
        let listen = format!("127.0.0.1:{port}");
        let serve =
            spawn_record(Command::new(self.binary).args(["serve", "--listen", &listen, "--cri-socket", &self.socket]));
        let before = self.path("before.json");
        let record = spawn_record(Command::new(self.binary).args([
            "record",
            "--per-pod",
            "--cri-socket",
            &self.socket,
            "-o",
            &before,
        ]));
        start_pods(
            self.containerd,
            &[
                ("team-a", "web-0", "6a1c3c1e-0000-4000-8000-0000000000e1"),
                ("team-a", "web-1", "6a1c3c1e-0000-4000-8000-0000000000e2"),
                ("team-b", "db-0", "6a1c3c1e-0000-4000-8000-0000000000e3"),
                ("team-b", "db-1", "6a1c3c1e-0000-4000-8000-0000000000e4"),
                ("team-c", "api-0", "6a1c3c1e-0000-4000-8000-0000000000e5"),
            ],
        );
        let scrape = scrape_when(port, |scrape| {
            scrape.contains(r#"dad_trace_pod_dad_wait_seconds_count{k8s_namespace_name="team-c"} 1"#)
        });
        outputs.insert(
            "metrics",
            format!("$ curl -s http://{listen}/metrics\n{}", metrics_excerpt(&scrape)),
        );
        stop(serve);
        let printed = stop(record);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&printed.stdout),
            String::from_utf8_lossy(&printed.stderr),
        );
        outputs.insert(
            "record-live",
            format!("$ sudo dad-trace record --per-pod -o before.json\n{stderr}{stdout}"),
        );
        outputs.insert("record-per-pod", section(&stdout, "Per-pod delay"));
        outputs.insert("doctor", shown("sudo dad-trace doctor", &run(self.binary, &["doctor"])));
    }

    /// After `tune --apply` (put back after, and by the caller's guard if this fails): a
    /// recording of as many new pods, and the report of both.
    fn after_the_fix(&self, outputs: &mut Outputs) {
        let state = self.path("tune.json");
        run(self.binary, &["tune", "--apply", "--yes", "--state", &state]);
        let after = self.path("after.json");
        let record =
            spawn_record(Command::new(self.binary).args(["record", "--cri-socket", &self.socket, "-o", &after]));
        start_pods(
            self.containerd,
            &[
                ("team-a", "web-2", "6a1c3c1e-0000-4000-8000-0000000000f1"),
                ("team-a", "web-3", "6a1c3c1e-0000-4000-8000-0000000000f2"),
                ("team-b", "db-2", "6a1c3c1e-0000-4000-8000-0000000000f3"),
                ("team-b", "db-3", "6a1c3c1e-0000-4000-8000-0000000000f4"),
                ("team-c", "api-1", "6a1c3c1e-0000-4000-8000-0000000000f5"),
            ],
        );
        stop(record);
        run(self.binary, &["tune", "--revert", "--state", &state]);
        let report = run(self.binary, &["report", &self.path("before.json"), &after]);
        let report = shown("dad-trace report before.json after.json", &report);
        let verdicts: String = report
            .lines()
            .filter(|line| line.contains("Kolmogorov"))
            .fold(String::new(), |text, line| text + line + "\n");
        assert!(
            verdicts.contains("per-pod delay before -> after: a real change"),
            "the fix is a real change for the report:\n{report}"
        );
        outputs.insert("report-verdict", verdicts);
        outputs.insert("report", report);
    }
}

#[test]
fn the_docs_samples_are_what_real_pods_print() {
    if !needs_root() {
        return;
    }
    if let Some(why) = containerd::unavailable(Path::new(CNI_DIR)) {
        skip(why);
        return;
    }
    let Some(binary) = release_binary() else {
        return;
    };
    let expected = samples::all_samples(&workspace()).expect("the docs' samples");
    assert!(
        !expected.is_empty(),
        "no <!-- sample: NAME --> block in README.md or docs/"
    );
    let _sysctls = stock_dad_settings();
    let dir = containerd::test_dir("dts-");
    // As on a node: the doctor finds the pods' namespaces in /run/netns.
    let containerd = Containerd::start_with_node_netns(dir.path(), Path::new(CNI_DIR)).expect("containerd starts");
    let node = Node {
        binary: &binary,
        containerd: &containerd,
        socket: containerd.socket().display().to_string(),
        dir: dir.path(),
    };
    let mut outputs = Outputs::new();
    node.before_the_fix(&mut outputs);
    node.after_the_fix(&mut outputs);
    as_on_any_node(&mut outputs, dir.path());
    check_or_bless(&expected, &outputs);
}

/// The docs name files as the user gave them and a node, not this test's directory and machine.
fn as_on_any_node(outputs: &mut Outputs, dir: &Path) {
    let hostname = nix::unistd::gethostname()
        .expect("hostname")
        .to_string_lossy()
        .into_owned();
    for output in outputs.values_mut() {
        *output = output.replace(&format!("{}/", dir.display()), "");
        if hostname.len() >= 4 {
            *output = output.replace(&hostname, "node-1");
        }
    }
}

fn check_or_bless(expected: &[samples::Sample], outputs: &Outputs) {
    let bless = std::env::var_os(BLESS_ENV).is_some();
    let mut drifted = Vec::new();
    for sample in expected {
        let output = outputs
            .get(sample.name.as_str())
            .unwrap_or_else(|| panic!("{}: no output named {}", sample.file.display(), sample.name));
        if bless {
            samples::bless(sample, output).expect("rewrite the sample");
        } else if let Some(drift) = samples::drift(&sample.text, output) {
            drifted.push(format!("{} ({}):\n{drift}", sample.name, sample.file.display()));
        }
    }
    for name in outputs.keys() {
        assert!(
            expected.iter().any(|sample| sample.name == *name),
            "no <!-- sample: {name} --> in the docs"
        );
    }
    assert!(
        drifted.is_empty(),
        "the docs' samples no longer look like the output ({BLESS_ENV}=1 rewrites them):\n{}",
        drifted.join("\n")
    );
}

/// Stops a tracer as Ctrl-C does; returns what it printed.
fn stop(running: Running) -> std::process::Output {
    let output = running.stop(Signal::SIGINT);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    output
}

/// The lines of `text` from the one starting with `first` to the next blank line.
fn section(text: &str, first: &str) -> String {
    let start = text
        .find(&format!("\n{first}"))
        .map_or_else(|| panic!("no {first:?} in:\n{text}"), |at| at + 1);
    let block = &text[start..];
    let end = block.find("\n\n").map_or(block.len(), |end| end + 1);
    block[..end].to_string()
}
