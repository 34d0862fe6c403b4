//! A pod spec's container as the kubelet passes it to the runtime (CRI `ContainerConfig`).
use anyhow::Context as _;
use k8s_cri::v1::{
    Capability, ContainerConfig, ContainerMetadata, ImageSpec, Int64Value, KeyValue, LinuxContainerConfig,
    LinuxContainerSecurityContext, Mount, MountPropagation, SecurityProfile, security_profile::ProfileType,
};
use k8s_openapi::api::core::v1::PodSpec;

/// A pod spec's only container as the kubelet hands it to the runtime: `$(VAR)` expanded,
/// host paths of volumes mapped by `host_path` (the test's stand-ins for the node's), the
/// security context translated, capabilities limited to `capabilities`.
pub fn container_config(
    spec: &PodSpec,
    host_path: &dyn Fn(&str) -> String,
    env: &[(&str, &str)],
    capabilities: &[String],
) -> anyhow::Result<ContainerConfig> {
    let container = spec.containers.first().context("no container")?;
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let volume = volumes
            .iter()
            .find(|volume| volume.name == mount.name)
            .with_context(|| format!("no volume {}", mount.name))?;
        let path = &volume.host_path.as_ref().context("only hostPath volumes")?.path;
        mounts.push(Mount {
            container_path: mount.mount_path.clone(),
            host_path: host_path(path),
            readonly: mount.read_only == Some(true),
            propagation: match mount.mount_propagation.as_deref() {
                Some("HostToContainer") => MountPropagation::PropagationHostToContainer,
                Some("Bidirectional") => MountPropagation::PropagationBidirectional,
                _ => MountPropagation::PropagationPrivate,
            }
            .into(),
            ..Mount::default()
        });
    }
    let security = container.security_context.clone().unwrap_or_default();
    let drop = security
        .capabilities
        .as_ref()
        .and_then(|capabilities| capabilities.drop.clone())
        .unwrap_or_default();
    Ok(ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: container.name.clone(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: container.image.clone().context("no image")?,
            ..ImageSpec::default()
        }),
        command: container.command.clone().unwrap_or_default(),
        // The kubelet expands $(VAR) before the runtime sees the arguments.
        args: crate::manifests::expanded_args(container, env)?,
        envs: env
            .iter()
            .map(|(key, value)| KeyValue {
                key: (*key).into(),
                value: (*value).into(),
            })
            .collect(),
        mounts,
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                capabilities: Some(Capability {
                    add_capabilities: capabilities.to_vec(),
                    drop_capabilities: drop,
                    ..Capability::default()
                }),
                privileged: security.privileged == Some(true),
                run_as_user: security.run_as_user.map(|value| Int64Value { value }),
                readonly_rootfs: security.read_only_root_filesystem == Some(true),
                no_new_privs: security.allow_privilege_escalation == Some(false),
                seccomp: security.seccomp_profile.as_ref().map(|profile| SecurityProfile {
                    profile_type: if profile.type_ == "RuntimeDefault" {
                        ProfileType::RuntimeDefault
                    } else {
                        ProfileType::Unconfined
                    }
                    .into(),
                    ..SecurityProfile::default()
                }),
                ..LinuxContainerSecurityContext::default()
            }),
            ..LinuxContainerConfig::default()
        }),
        ..ContainerConfig::default()
    })
}
