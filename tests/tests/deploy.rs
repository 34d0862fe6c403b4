//! The deployment files, read with the Kubernetes API types, and checked for the least
//! privilege the README documents. No root needed.
use std::net::SocketAddr;

use clap::Parser as _;
use dad_trace::cli::{Cli, Command};
use integration_tests::manifests::{self, deploy_dir, expanded_args};
use k8s_openapi::api::core::v1::{Container, PodSpec};

/// The capabilities the agent needs, each explained in the README (Privileges in Kubernetes).
const CAPABILITIES: &[&str] = &["BPF", "PERFMON", "SYSLOG", "SYS_ADMIN", "SYS_PTRACE", "SYS_RESOURCE"];

fn only_container(spec: &PodSpec) -> &Container {
    assert_eq!(spec.containers.len(), 1);
    &spec.containers[0]
}

/// Not privileged, every capability dropped but the documented ones, host PID and network,
/// and every host mount read-only except `writable`.
fn check_least_privilege(spec: &PodSpec, writable: &[&str]) {
    assert_eq!(spec.host_network, Some(true), "the node's namespace must be the host's");
    assert_eq!(spec.host_pid, Some(true), "sandbox processes tie namespaces to pods");
    let container = only_container(spec);
    let security = container.security_context.as_ref().expect("securityContext");
    assert_eq!(security.privileged, Some(false));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    let capabilities = security.capabilities.as_ref().expect("capabilities");
    assert_eq!(capabilities.drop.as_deref(), Some(&["ALL".to_string()][..]));
    let mut added = capabilities.add.clone().unwrap_or_default();
    added.sort();
    assert_eq!(added, CAPABILITIES);
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    for mount in container.volume_mounts.iter().flatten() {
        let volume = volumes
            .iter()
            .find(|volume| volume.name == mount.name)
            .unwrap_or_else(|| panic!("mount {} has no volume", mount.name));
        assert!(volume.host_path.is_some(), "{}: a host path", mount.name);
        let read_only = mount.read_only == Some(true);
        assert_eq!(
            read_only,
            !writable.contains(&mount.name.as_str()),
            "{} read-only: {read_only}",
            mount.name
        );
    }
    let mounted: Vec<&str> = container
        .volume_mounts
        .iter()
        .flatten()
        .map(|mount| mount.mount_path.as_str())
        .collect();
    for needed in ["/sys/kernel/btf", "/run/netns", "/run/containerd/containerd.sock"] {
        assert!(mounted.contains(&needed), "{needed} mounted: {mounted:?}");
    }
}

fn parse(args: Vec<String>) -> Command {
    Cli::try_parse_from(std::iter::once("dad-trace".to_string()).chain(args))
        .unwrap_or_else(|e| panic!("dad-trace rejects the manifest's arguments: {e}"))
        .command
}

#[test]
fn daemonset_runs_serve_with_least_privilege() {
    let daemonset = manifests::daemonset().expect("daemonset.yaml");
    let spec = daemonset.spec.expect("spec").template.spec.expect("pod spec");
    check_least_privilege(&spec, &[]);
    let container = only_container(&spec);
    // $(NODE_IP) is the node's address in either family.
    for (node_ip, listen) in [("10.0.0.7", "10.0.0.7:9797"), ("fd00::7", "[fd00::7]:9797")] {
        let args = expanded_args(container, &[("NODE_IP", node_ip)]).expect("args");
        let Command::Serve(serve) = parse(args) else {
            panic!("the DaemonSet must run `serve`");
        };
        assert_eq!(serve.listen, listen.parse::<SocketAddr>().expect("address"));
    }
    let port = container
        .ports
        .iter()
        .flatten()
        .next()
        .expect("metrics port")
        .container_port;
    assert_eq!(port, 9797);
}

#[test]
fn job_records_to_a_host_path() {
    let job = manifests::job().expect("job.yaml");
    let spec = job.spec.expect("spec").template.spec.expect("pod spec");
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    check_least_privilege(&spec, &["sessions"]);
    let container = only_container(&spec);
    let args = expanded_args(container, &[("NODE_NAME", "node-1")]).expect("args");
    let Command::Record(record) = parse(args) else {
        panic!("the Job must run `record`");
    };
    assert!(record.duration.is_some(), "an ad-hoc Job ends by itself");
    let output = record.output.expect("a session file");
    let sessions = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|mount| mount.name == "sessions")
        .expect("sessions mount");
    assert!(output.starts_with(&sessions.mount_path), "{output:?} on the host path");
    assert_eq!(output.file_name().and_then(|n| n.to_str()), Some("session-node-1.json"));
}

#[test]
fn a_typo_in_a_manifest_is_caught() {
    let mut document = manifests::documents(&deploy_dir().join("daemonset.yaml"))
        .expect("yaml")
        .into_iter()
        .find(|document| document.get("kind").and_then(|kind| kind.as_str()) == Some("DaemonSet"))
        .expect("DaemonSet");
    let text = serde_yaml_ng::to_string(&document)
        .expect("yaml")
        .replace("hostPID:", "hostPid:");
    document = serde_yaml_ng::from_str(&text).expect("yaml");
    let error = manifests::typed::<k8s_openapi::api::apps::v1::DaemonSet>(&document).expect_err("typo caught");
    assert!(format!("{error:#}").contains("hostPid"), "{error:#}");
}

#[test]
fn readme_explains_every_capability() {
    let readme = std::fs::read_to_string(deploy_dir().join("../README.md")).expect("README");
    for capability in CAPABILITIES {
        assert!(
            readme.contains(&format!("`CAP_{capability}`")),
            "README explains CAP_{capability}"
        );
    }
}

#[test]
fn image_runs_the_agent_by_default() {
    let containerfile = std::fs::read_to_string(deploy_dir().join("Containerfile")).expect("Containerfile");
    assert!(containerfile.contains(r#"ENTRYPOINT ["/dad-trace"]"#));
    assert!(matches!(parse(vec!["serve".into()]), Command::Serve(_)));
    assert!(containerfile.contains(r#"CMD ["serve"]"#));
}

#[test]
fn kind_workflow_runs_the_shared_scenario_and_keeps_its_reports() {
    let root = deploy_dir().join("..");
    let path = root.join(".github/workflows/kind-e2e.yaml");
    let workflow = manifests::documents(&path).expect("workflow YAML").remove(0);
    assert!(
        workflow.get("on").and_then(|on| on.get("pull_request")).is_some(),
        "runs on pull requests"
    );
    let steps = workflow["jobs"]["kind-e2e"]["steps"].as_sequence().expect("steps");
    let runs: Vec<&str> = steps.iter().filter_map(|step| step.get("run")?.as_str()).collect();
    let e2e = runs
        .iter()
        .find(|run| run.contains("cargo xtask kind-e2e"))
        .expect("a step runs cargo xtask kind-e2e");
    // The binary it hands over is the one `cargo xtask image` builds and the Containerfile copies.
    let containerfile = std::fs::read_to_string(deploy_dir().join("Containerfile")).expect("Containerfile");
    let binary = containerfile
        .lines()
        .find_map(|line| line.strip_prefix("COPY "))
        .and_then(|copy| copy.split_whitespace().next())
        .expect("COPY line");
    assert!(e2e.contains(&format!("--binary {binary}")), "{e2e}");
    assert!(runs.iter().any(|run| run.contains("cargo xtask image")));
    // Every flag the workflow passes exists.
    let help = std::process::Command::new(env!("CARGO"))
        .args(["run", "--quiet", "--package", "xtask", "--", "kind-e2e", "--help"])
        .current_dir(&root)
        .output()
        .expect("cargo run xtask");
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in e2e.split_whitespace().filter(|word| word.starts_with("--")) {
        assert!(help.contains(flag), "xtask kind-e2e has no {flag}:\n{help}");
    }
    let upload = steps
        .iter()
        .find(|step| {
            step.get("uses")
                .and_then(|uses| uses.as_str())
                .is_some_and(|uses| uses.starts_with("actions/upload-artifact"))
        })
        .expect("reports uploaded");
    assert_eq!(
        upload["if"].as_str(),
        Some("always()"),
        "uploaded also when the gate fails"
    );
    assert!(
        help.contains("target/kind-e2e"),
        "xtask writes where the workflow uploads from"
    );
    assert_eq!(upload["with"]["path"].as_str(), Some("target/kind-e2e/"));
}
