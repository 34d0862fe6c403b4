//! A phase's pods: added one after another and timed, then removed.
use std::{
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::bail;

use super::{
    app::{App, AppRun},
    plugin::{Plugin, cni},
};
use crate::node::{
    netns::{Inet6Row, NETNS_DIR, NamedNetns, addresses_here, in_netns},
    synthetic::SyntheticPod,
};

/// Waits, as CNI plugins do, until no address of `eth0` in the namespace is tentative.
fn settle(netns: &Path) -> anyhow::Result<()> {
    in_netns(netns, || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if !addresses_here()?.iter().any(Inet6Row::tentative) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("addresses still tentative after 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    })
}

/// A pod set up for a phase: held until its DEL, then dropped with its namespace.
pub(super) enum Pod {
    Cni(#[expect(dead_code, reason = "held for its Drop, which removes the namespace")] NamedNetns),
    Veth(#[expect(dead_code, reason = "held for its Drop, which removes the namespace")] SyntheticPod),
}

/// One pod set up: its namespace name, the whole setup time (namespace and ADD; `None` for
/// the untimed warm-up pod), the CNI ADD's own wall time (a CNI plugin only), and what its
/// application saw.
pub(super) struct Added {
    pub pod: Pod,
    pub name: String,
    pub add_ns: Option<u64>,
    pub cni_add_ns: Option<u64>,
    pub app: Option<AppRun>,
}

/// Sets up `count` pods one after another, timing each; stops early when `cancelled`.
pub(super) fn add_pods(
    plugin: Plugin,
    cni_dir: &Path,
    config: Option<&str>,
    prefix: &str,
    count: usize,
    cancelled: &AtomicBool,
    progress: &super::progress::PodProgress,
) -> anyhow::Result<Vec<Added>> {
    let add_cni = |config: &str, name: &str| -> anyhow::Result<(Pod, u64, AppRun)> {
        let netns = NamedNetns::create(Path::new(NETNS_DIR), name)?;
        // The application runs while the plugin sets the pod up.
        let app = App::start(netns.path())?;
        // On failure the namespace is dropped, and its interfaces with it.
        let wall_ns = cni(plugin, "ADD", cni_dir, config, name)?;
        Ok((Pod::Cni(netns), wall_ns, app.wait()?))
    };
    let mut pods = Vec::new();
    if let Some(config) = config {
        // The first sandbox of a phase pays for cold caches (plugin binaries, IPAM store,
        // the tracer's first lookups): set one up untimed, as a warm node would have.
        let name = format!("{prefix}warm");
        let (pod, _, _) = add_cni(config, &name)?;
        pods.push(Added {
            pod,
            name,
            add_ns: None,
            cni_add_ns: None,
            app: None,
        });
    }
    for index in 0..count {
        if cancelled.load(Ordering::Relaxed) {
            break;
        }
        let name = format!("{prefix}{index}");
        let started = Instant::now();
        let (pod, cni_add_ns, app) = if let Some(config) = config {
            let (pod, wall_ns, app) = add_cni(config, &name)?;
            (pod, Some(wall_ns), app)
        } else {
            let netns = NamedNetns::create(Path::new(NETNS_DIR), &name)?;
            let app = App::start(netns.path())?;
            let pod = SyntheticPod::create_in(netns, prefix, index)?;
            settle(pod.netns.path())?;
            (Pod::Veth(pod), None, app.wait()?)
        };
        let add_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        pods.push(Added {
            pod,
            name,
            add_ns: Some(add_ns),
            cni_add_ns,
            app: Some(app),
        });
        progress.pod_done();
    }
    Ok(pods)
}

/// Tears pods down (CNI DEL first, so IPAM releases its addresses).
pub(super) fn remove_pods(plugin: Plugin, cni_dir: &Path, config: Option<&str>, pods: Vec<Added>) {
    for Added { pod, name, .. } in pods {
        if let (Pod::Cni(_), Some(config)) = (&pod, config)
            && let Err(e) = cni(plugin, "DEL", cni_dir, config, &name)
        {
            log::warn!("{e:#}");
        }
        drop(pod);
    }
}
