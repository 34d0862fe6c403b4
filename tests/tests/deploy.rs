//! The deployment files, read with the Kubernetes API types, and checked for the least
//! privilege docs/kubernetes.md documents. No root needed.
use std::net::SocketAddr;

use clap::Parser as _;
use dad_trace::cli::{Cli, Command};
use integration_tests::manifests::{self, deploy_dir, env_field, env_value, expanded_args};
use k8s_openapi::api::{
    core::v1::{Container, PodSpec, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use serde_yaml_ng::Value;

/// The capabilities the agent needs, each explained in docs/kubernetes.md (Privileges in Kubernetes).
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
fn every_kubernetes_object_in_deploy_is_typed() {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(deploy_dir()).expect("deploy/") {
        let path = entry.expect("deploy/ entry").path();
        if path.extension().and_then(|ext| ext.to_str()) != Some("yaml") {
            continue;
        }
        let mut objects = 0;
        for document in manifests::documents(&path).expect("YAML") {
            let typed = manifests::typed_by_kind(&document).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            objects += usize::from(typed);
        }
        if objects > 0 {
            files.push(
                path.file_name()
                    .and_then(|name| name.to_str())
                    .unwrap_or("?")
                    .to_string(),
            );
        }
    }
    files.sort();
    assert_eq!(files, ["daemonset.yaml", "job.yaml", manifests::COLLECTOR]);
}

/// The attributes dad-trace's OTLP exporter puts on each `cni.add`/`cni.del` span to name the
/// pod of the CNI call (`container.id` is the sandbox id, which the Kubernetes API has not).
const SPAN_POD_ATTRIBUTES: &[&str] = &["container.id", "k8s.pod.name", "k8s.namespace.name", "k8s.pod.uid"];

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// The ids of the components a collector config section defines.
fn defined(config: &Value, section: &str) -> Vec<String> {
    let mut ids: Vec<String> = config[section]
        .as_mapping()
        .into_iter()
        .flatten()
        .filter_map(|(id, _)| id.as_str().map(String::from))
        .collect();
    ids.sort();
    ids
}

/// The id, in the traces pipeline, of the one processor of a type (`groupbyattrs/pod` is a
/// `groupbyattrs`), and its place.
fn processor<'a>(processors: &[&'a str], kind: &str) -> (usize, &'a str) {
    let found: Vec<(usize, &str)> = processors
        .iter()
        .enumerate()
        .filter(|(_, id)| id.split('/').next() == Some(kind))
        .map(|(place, id)| (place, *id))
        .collect();
    assert_eq!(found.len(), 1, "one {kind} in {processors:?}");
    found[0]
}

#[test]
fn collector_moves_the_pod_of_a_cni_call_to_a_resource_k8s_attributes_associates() {
    let (_, config) = manifests::collector_config().expect("collector config");
    let traces = &config["service"]["pipelines"]["traces"];
    // Every component the pipeline names is defined, and every defined one is used.
    for section in ["receivers", "processors", "exporters"] {
        let mut used: Vec<String> = strings(&traces[section]).into_iter().map(String::from).collect();
        used.sort();
        assert_eq!(defined(&config, section), used, "{section}");
    }
    let processors = strings(&traces["processors"]);
    assert_eq!(
        processors.first(),
        Some(&"memory_limiter"),
        "refuse data before anything else"
    );
    assert_eq!(processors.last(), Some(&"batch"));
    let (group_at, group) = processor(&processors, "groupbyattrs");
    let (k8s_at, k8s) = processor(&processors, "k8s_attributes");
    assert!(
        group_at < k8s_at,
        "the pod is on a resource before k8s_attributes looks"
    );
    let grouped = strings(&config["processors"][group]["keys"]);
    let k8s = &config["processors"][k8s];
    let extracted = strings(&k8s["extract"]["metadata"]);
    for key in &grouped {
        assert!(SPAN_POD_ATTRIBUTES.contains(key), "{key} is on dad-trace's spans");
    }
    let associations = k8s["pod_association"].as_sequence().expect("pod_association");
    assert!(!associations.is_empty());
    for association in associations {
        for source in association["sources"].as_sequence().expect("sources") {
            // The connection is dad-trace's, not the pod's: only attributes can name the pod.
            assert_eq!(source["from"].as_str(), Some("resource_attribute"), "{source:?}");
            let name = source["name"].as_str().expect("name");
            assert!(grouped.contains(&name), "{name} moved to the resource");
            // Association only works by attributes the processor extracts.
            assert!(extracted.contains(&name), "{name} in extract.metadata");
        }
    }
    assert_eq!(k8s["passthrough"].as_bool(), Some(false));
    // Only this node's pods are watched: the filter's variable holds the agent's node name.
    let agent = manifests::collector_daemonset().expect(manifests::COLLECTOR);
    let spec = agent.spec.expect("spec").template.spec.expect("pod spec");
    let variable = k8s["filter"]["node_from_env_var"].as_str().expect("node filter");
    assert_eq!(env_field(only_container(&spec), variable), Some("spec.nodeName"));
}

#[test]
fn dad_trace_sends_its_traces_to_the_collector_on_its_node() {
    let (key, config) = manifests::collector_config().expect("collector config");
    let agent = manifests::collector_daemonset().expect(manifests::COLLECTOR);
    let agent_spec = agent.spec.expect("spec").template.spec.expect("pod spec");
    let daemonset = manifests::daemonset().expect("daemonset.yaml");
    let spec = daemonset.spec.expect("spec").template.spec.expect("pod spec");
    let container = only_container(&spec);
    // Both in the node's network namespace, so the receiver on its loopback is dad-trace's.
    assert_eq!(agent_spec.host_network, Some(true));
    assert_eq!(spec.host_network, Some(true));
    let http = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
        .as_str()
        .expect("OTLP/HTTP receiver");
    let receiver: SocketAddr = http.parse().expect("receiver address");
    assert!(receiver.ip().is_loopback(), "{receiver}: not exposed off the node");
    // A literal URL: `http://$(HOST_IP):4318` would be no URL on an IPv6 node (no brackets).
    let endpoint = env_value(container, "OTEL_EXPORTER_OTLP_ENDPOINT").expect("OTEL_EXPORTER_OTLP_ENDPOINT");
    assert_eq!(endpoint, format!("http://{receiver}"));
    assert_eq!(env_field(container, "K8S_NODE_NAME"), Some("spec.nodeName"));
    // The agent reads the ConfigMap's key where its --config points, and is probed there.
    let agent_container = only_container(&agent_spec);
    let config_path = agent_container
        .args
        .iter()
        .flatten()
        .find_map(|arg| arg.strip_prefix("--config="))
        .expect("--config");
    let mount = agent_container
        .volume_mounts
        .iter()
        .flatten()
        .find(|mount| config_path == format!("{}/{key}", mount.mount_path))
        .expect("--config in a mount");
    let volume = agent_spec
        .volumes
        .iter()
        .flatten()
        .find(|volume| volume.name == mount.name)
        .expect("mounted volume");
    assert_eq!(
        volume.config_map.as_ref().map(|map| map.name.as_str()),
        Some("otel-agent")
    );
    let probe = agent_container
        .readiness_probe
        .as_ref()
        .and_then(|probe| probe.tcp_socket.as_ref())
        .expect("TCP readiness probe");
    assert_eq!(probe.host.as_deref(), Some(receiver.ip().to_string().as_str()));
    assert_eq!(
        probe.port,
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i32::from(receiver.port()))
    );
    // A pinned release of the contrib distribution (it has groupbyattrs and k8s_attributes).
    let image = agent_container.image.as_deref().expect("image");
    let version = image
        .strip_prefix("otel/opentelemetry-collector-contrib:")
        .expect("contrib image");
    assert_eq!(
        version.split('.').filter(|part| part.parse::<u32>().is_ok()).count(),
        3,
        "{image}"
    );
}

#[test]
fn collector_may_read_what_k8s_attributes_watches() {
    let agent = manifests::collector_daemonset().expect(manifests::COLLECTOR);
    let namespace = agent.metadata.namespace.clone().expect("namespace");
    let account = agent
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod spec")
        .service_account_name
        .expect("serviceAccountName");
    let service_account: ServiceAccount =
        manifests::find(manifests::COLLECTOR, "ServiceAccount").expect("ServiceAccount");
    assert_eq!(service_account.metadata.name.as_deref(), Some(account.as_str()));
    assert_eq!(service_account.metadata.namespace.as_deref(), Some(namespace.as_str()));
    let role: ClusterRole = manifests::find(manifests::COLLECTOR, "ClusterRole").expect("ClusterRole");
    let binding: ClusterRoleBinding =
        manifests::find(manifests::COLLECTOR, "ClusterRoleBinding").expect("ClusterRoleBinding");
    assert_eq!(Some(binding.role_ref.name.as_str()), role.metadata.name.as_deref());
    assert!(
        binding
            .subjects
            .iter()
            .flatten()
            .any(|subject| subject.kind == "ServiceAccount"
                && subject.name == account
                && subject.namespace.as_deref() == Some(namespace.as_str())),
        "bound to the agent's ServiceAccount"
    );
    let rules = role.rules.unwrap_or_default();
    for (group, resource) in [("", "pods"), ("", "namespaces"), ("apps", "replicasets")] {
        assert!(
            rules.iter().any(|rule| {
                let has = |list: Option<&[String]>, item: &str| list.unwrap_or_default().iter().any(|x| x == item);
                has(rule.api_groups.as_deref(), group)
                    && has(rule.resources.as_deref(), resource)
                    && ["get", "list", "watch"]
                        .iter()
                        .all(|verb| rule.verbs.iter().any(|v| v == verb))
            }),
            "get, list, watch on {resource}"
        );
    }
    // Read-only.
    for rule in &rules {
        assert!(
            rule.verbs
                .iter()
                .all(|verb| ["get", "list", "watch"].contains(&verb.as_str())),
            "{rule:?}"
        );
    }
}

#[test]
fn the_docs_explain_every_capability() {
    let readme = std::fs::read_to_string(deploy_dir().join("../docs/kubernetes.md")).expect("docs/kubernetes.md");
    for capability in CAPABILITIES {
        assert!(
            readme.contains(&format!("`CAP_{capability}`")),
            "docs/kubernetes.md explains CAP_{capability}"
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

/// The release workflow builds what `cargo xtask dist` builds, on version tags, and attaches
/// every file it writes: both tarballs, the OCI archive and the checksums.
#[test]
fn release_workflow_attaches_every_dist_file_to_tagged_releases() {
    let root = deploy_dir().join("..");
    let path = root.join(".github/workflows/release.yaml");
    let workflow = manifests::documents(&path).expect("workflow YAML").remove(0);
    let tags = &workflow["on"]["push"]["tags"];
    assert_eq!(tags[0].as_str(), Some("v*"), "runs on version tags: {tags:?}");
    assert_eq!(
        workflow["permissions"]["contents"].as_str(),
        Some("write"),
        "may publish"
    );
    let steps = workflow["jobs"]["release"]["steps"].as_sequence().expect("steps");
    let runs: Vec<&str> = steps.iter().filter_map(|step| step.get("run")?.as_str()).collect();
    assert!(runs.iter().any(|run| run.contains("cargo xtask dist")), "{runs:?}");
    assert!(
        runs.iter().any(|run| run.contains("sha256sum -c SHA256SUMS")),
        "{runs:?}"
    );
    let publish = runs
        .iter()
        .find(|run| run.contains("gh release create"))
        .expect("a step creates the release");
    for files in ["target/dist/*.tar.gz", "target/dist/*.tar", "target/dist/SHA256SUMS"] {
        assert!(publish.contains(files), "{files} not attached: {publish}");
    }
    let help = std::process::Command::new(env!("CARGO"))
        .args(["run", "--quiet", "--package", "xtask", "--", "--help"])
        .current_dir(&root)
        .output()
        .expect("cargo run xtask");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("target/dist"),
        "xtask dist writes where the workflow attaches from:\n{help}"
    );
}

/// `kubectl apply -k deploy/` applies the agent, and `kustomize edit set image dad-trace=…`
/// reaches its container: the kustomization's resources exist and name the image as the
/// manifests spell it.
#[test]
fn the_kustomization_sets_the_agents_image_in_one_place() {
    let documents = manifests::documents(&deploy_dir().join("kustomization.yaml")).expect("kustomization");
    let kustomization = &documents[0];
    assert_eq!(kustomization["kind"].as_str(), Some("Kustomization"));
    let resources: Vec<&str> = kustomization["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .filter_map(|resource| resource.as_str())
        .collect();
    assert!(resources.contains(&"daemonset.yaml"), "{resources:?}");
    for resource in &resources {
        assert!(deploy_dir().join(resource).exists(), "{resource} listed but missing");
    }
    let daemonset = manifests::daemonset().expect("daemonset.yaml");
    let image = daemonset
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod spec")
        .containers[0]
        .image
        .clone()
        .expect("image");
    assert_eq!(
        image.split(':').next(),
        Some("dad-trace"),
        "kustomize matches images by name: dad-trace=REGISTRY/dad-trace:VERSION"
    );
}
