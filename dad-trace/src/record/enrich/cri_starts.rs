//! When each pod's first container started, from the runtime (CRI): the end of a pod's start
//! as the runtime sees it. Asked only for sandboxes that have no start yet, a bounded number
//! of status calls per refresh: a node with hundreds of pods costs one listing.
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use k8s_cri::v1::{
    ContainerState, ContainerStatusRequest, ListContainersRequest, runtime_service_client::RuntimeServiceClient,
};
use tonic::transport::Channel;

/// Container status calls per refresh at most; the rest wait for the next refresh.
const MAX_STATUS_CALLS: usize = 64;

/// A CRI timestamp (ns since the epoch; 0 when unset).
#[must_use]
pub fn time_of(ns: i64) -> Option<DateTime<Utc>> {
    (ns > 0).then(|| DateTime::from_timestamp_nanos(ns))
}

/// When the first container of each of the `waiting` sandboxes started, for those that have
/// a started container.
pub(super) async fn first_starts(
    client: &mut RuntimeServiceClient<Channel>,
    waiting: &HashSet<String>,
) -> Result<HashMap<String, DateTime<Utc>>, tonic::Status> {
    let mut firsts: HashMap<String, DateTime<Utc>> = HashMap::new();
    if waiting.is_empty() {
        return Ok(firsts);
    }
    let mut containers = client
        .list_containers(ListContainersRequest { filter: None })
        .await?
        .into_inner()
        .containers;
    // Created never started: nothing to ask. Oldest first: the first container of a pod is
    // among its oldest.
    containers.retain(|container| {
        waiting.contains(&container.pod_sandbox_id) && container.state() != ContainerState::ContainerCreated
    });
    containers.sort_by_key(|container| container.created_at);
    for container in containers.into_iter().take(MAX_STATUS_CALLS) {
        let request = ContainerStatusRequest {
            container_id: container.id,
            verbose: false,
        };
        let status = match client.container_status(request).await {
            Ok(response) => response.into_inner().status,
            // Removed between the two calls.
            Err(status) if status.code() == tonic::Code::NotFound => continue,
            Err(status) => return Err(status),
        };
        if let Some(started) = status.and_then(|status| time_of(status.started_at)) {
            let first = firsts.entry(container.pod_sandbox_id).or_insert(started);
            *first = (*first).min(started);
        }
    }
    Ok(firsts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_times_are_nanoseconds_since_the_epoch_and_zero_is_unset() {
        assert_eq!(time_of(0), None);
        assert_eq!(time_of(-5), None);
        assert_eq!(
            time_of(1_764_237_600_123_456_789).map(|t| t.to_rfc3339()),
            Some("2025-11-27T10:00:00.123456789+00:00".to_string())
        );
    }
}
