//! The deployment files in deploy/, read with the Kubernetes API types, so a typo (an unknown
//! field, a wrong type) fails instead of being ignored as the API server would ignore it.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use k8s_openapi::api::{
    apps::v1::DaemonSet,
    batch::v1::Job,
    core::v1::{ConfigMap, Container, Namespace, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use serde::{Deserialize as _, Serialize, de::DeserializeOwned};
use serde_yaml_ng::Value;

#[must_use]
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every YAML document of a file.
pub fn documents(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).with_context(|| format!("YAML in {}", path.display())))
        .collect()
}

/// Where `original` has something the typed round trip lost: a field the type does not know.
fn lost_fields(original: &Value, typed: &Value, at: &str, lost: &mut Vec<String>) {
    match (original, typed) {
        (Value::Mapping(original), Value::Mapping(typed)) => {
            for (key, value) in original {
                let name = key.as_str().unwrap_or("?");
                match typed.get(key) {
                    Some(kept) => lost_fields(value, kept, &format!("{at}.{name}"), lost),
                    None => lost.push(format!("{at}.{name}")),
                }
            }
        }
        (Value::Sequence(original), Value::Sequence(typed)) => {
            for (index, (value, kept)) in original.iter().zip(typed).enumerate() {
                lost_fields(value, kept, &format!("{at}[{index}]"), lost);
            }
        }
        _ => {}
    }
}

/// A document as a Kubernetes type; fails on any field the type does not have.
pub fn typed<T: DeserializeOwned + Serialize>(document: &Value) -> anyhow::Result<T> {
    let value: T = serde_yaml_ng::from_value(document.clone())?;
    let round_trip = serde_yaml_ng::to_value(&value)?;
    let mut lost = Vec::new();
    lost_fields(document, &round_trip, "", &mut lost);
    if !lost.is_empty() {
        bail!("unknown fields (typos?): {lost:?}");
    }
    Ok(value)
}

/// The one document of `kind` in a file, typed.
pub fn find<T: DeserializeOwned + Serialize>(file: &str, kind: &str) -> anyhow::Result<T> {
    let path = deploy_dir().join(file);
    let document = documents(&path)?
        .into_iter()
        .find(|document| document.get("kind").and_then(Value::as_str) == Some(kind))
        .with_context(|| format!("no {kind} in {}", path.display()))?;
    typed(&document).with_context(|| format!("{kind} in {}", path.display()))
}

pub fn daemonset() -> anyhow::Result<DaemonSet> {
    find("daemonset.yaml", "DaemonSet")
}

pub fn job() -> anyhow::Result<Job> {
    find("job.yaml", "Job")
}

/// The file of the node-local collector that dad-trace sends its traces to.
pub const COLLECTOR: &str = "otel-collector.yaml";

pub fn collector_daemonset() -> anyhow::Result<DaemonSet> {
    find(COLLECTOR, "DaemonSet")
}

/// The collector's own configuration: the one key of its `ConfigMap`, parsed.
pub fn collector_config() -> anyhow::Result<(String, Value)> {
    let config_map: ConfigMap = find(COLLECTOR, "ConfigMap")?;
    let data = config_map.data.unwrap_or_default();
    let [(key, text)] = <[(String, String); 1]>::try_from(data.into_iter().collect::<Vec<_>>())
        .map_err(|data| anyhow::anyhow!("one key in the collector's ConfigMap, not {}", data.len()))?;
    let config = serde_yaml_ng::from_str(&text).with_context(|| format!("collector config {key}"))?;
    Ok((key, config))
}

/// A document typed as its kind, when it is a Kubernetes object: `Ok(false)` for a document
/// that is not (Prometheus rules, their tests, the `PrometheusRule` custom resource).
pub fn typed_by_kind(document: &Value) -> anyhow::Result<bool> {
    let Some(kind) = document.get("kind").and_then(Value::as_str) else {
        return Ok(false);
    };
    let checked = match kind {
        "Namespace" => typed::<Namespace>(document).map(drop),
        "ServiceAccount" => typed::<ServiceAccount>(document).map(drop),
        "ConfigMap" => typed::<ConfigMap>(document).map(drop),
        "ClusterRole" => typed::<ClusterRole>(document).map(drop),
        "ClusterRoleBinding" => typed::<ClusterRoleBinding>(document).map(drop),
        "DaemonSet" => typed::<DaemonSet>(document).map(drop),
        "Job" => typed::<Job>(document).map(drop),
        // Not API objects: read by their tools (the deploy tests check the kustomization).
        "PrometheusRule" | "Kustomization" => return Ok(false),
        other => bail!("kind {other}: add its type here"),
    };
    let name = document.get("metadata").and_then(|metadata| metadata.get("name"));
    checked.with_context(|| format!("{kind} {name:?}"))?;
    Ok(true)
}

/// The value of a container's environment variable, when it is a plain value.
#[must_use]
pub fn env_value<'a>(container: &'a Container, name: &str) -> Option<&'a str> {
    container
        .env
        .iter()
        .flatten()
        .find(|var| var.name == name)
        .and_then(|var| var.value.as_deref())
}

/// The downward-API field a container's environment variable comes from.
#[must_use]
pub fn env_field<'a>(container: &'a Container, name: &str) -> Option<&'a str> {
    container
        .env
        .iter()
        .flatten()
        .find(|var| var.name == name)
        .and_then(|var| var.value_from.as_ref()?.field_ref.as_ref())
        .map(|field| field.field_path.as_str())
}

/// The container's arguments with `$(VAR)` references replaced as the kubelet would.
pub fn expanded_args(container: &Container, values: &[(&str, &str)]) -> anyhow::Result<Vec<String>> {
    let defined: Vec<&str> = container.env.iter().flatten().map(|var| var.name.as_str()).collect();
    container
        .args
        .iter()
        .flatten()
        .map(|arg| {
            let mut expanded = arg.clone();
            while let Some(start) = expanded.find("$(") {
                let end = expanded[start..].find(')').context("unclosed $(")? + start;
                let name = expanded[start + 2..end].to_string();
                if !defined.contains(&name.as_str()) {
                    bail!("{arg} uses $({name}), which the container's env does not define");
                }
                let value = values
                    .iter()
                    .find(|(var, _)| *var == name)
                    .map(|(_, value)| *value)
                    .with_context(|| format!("no test value for $({name})"))?;
                expanded.replace_range(start..=end, value);
            }
            Ok(expanded)
        })
        .collect()
}

/// The pod `kubectl debug node/NODE -it --profile=sysadmin --image=IMAGE -- COMMAND…` makes
/// (kubectl's node debugger): the node's root at /host, host PID, network and IPC, privileged.
pub fn debug_node_pod(image: &str, command: &[&str]) -> anyhow::Result<k8s_openapi::api::core::v1::PodSpec> {
    let command: Vec<String> = command.iter().map(ToString::to_string).collect();
    let pod = serde_json::json!({
        "containers": [{
            "name": "debugger",
            "image": image,
            "command": command,
            "stdin": true,
            "tty": true,
            "securityContext": {"privileged": true},
            "volumeMounts": [{"name": "host-root", "mountPath": "/host"}],
        }],
        "hostIPC": true,
        "hostNetwork": true,
        "hostPID": true,
        "restartPolicy": "Never",
        "tolerations": [{"operator": "Exists"}],
        "volumes": [{"name": "host-root", "hostPath": {"path": "/"}}],
    });
    serde_json::from_value(pod).context("kubectl's node debugger pod")
}
