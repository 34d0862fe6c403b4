//! Accuracy: per address, the tentative delay dad-trace reports vs an independent observer,
//! an rtnetlink listener in each pod namespace (`RTM_NEWADDR` tentative → settled,
//! timestamped on arrival).
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, bail};
use dad_trace::{
    hist::Delays,
    node::{
        netns::{NETNS_DIR, NamedNetns},
        synthetic::SyntheticPod,
    },
    record::clock::monotonic_ns,
    session::Outcome,
};
use futures::StreamExt as _;
use rtnetlink::{
    packet_core::NetlinkPayload,
    packet_route::{
        RouteNetlinkMessage,
        address::{AddressAttribute, AddressFlags, AddressHeaderFlags},
    },
    sys::{AsyncSocket as _, SocketAddr},
};

use crate::tracer;

/// `RTM_NEWADDR` notifications in one namespace, timestamped on arrival.
struct Listener {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: std::thread::JoinHandle<anyhow::Result<Vec<(Ipv6Addr, bool, u64)>>>,
}

impl Listener {
    fn start(netns: &Path) -> anyhow::Result<Self> {
        let file = std::fs::File::open(netns)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, is_ready) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async move {
                let (mut connection, _handle, mut messages) = rtnetlink::new_connection()?;
                connection
                    .socket_mut()
                    .socket_mut()
                    .bind(&SocketAddr::new(0, rtnetlink::constants::RTMGRP_IPV6_IFADDR))?;
                tokio::spawn(connection);
                let _ = ready.send(());
                let mut seen = Vec::new();
                tokio::pin!(stopped);
                loop {
                    tokio::select! {
                        message = messages.next() => {
                            let Some((message, _)) = message else { break };
                            let at = monotonic_ns();
                            if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(address)) = message.payload {
                                let mut addr = None;
                                let mut tentative = address.header.flags.contains(AddressHeaderFlags::Tentative);
                                for attribute in address.attributes {
                                    match attribute {
                                        AddressAttribute::Address(IpAddr::V6(v6)) => addr = Some(v6),
                                        AddressAttribute::Flags(flags) => tentative = flags.contains(AddressFlags::Tentative),
                                        _ => {}
                                    }
                                }
                                if let Some(addr) = addr {
                                    seen.push((addr, tentative, at));
                                }
                            }
                        }
                        _ = &mut stopped => break,
                    }
                }
                anyhow::Ok(seen)
            })
        });
        is_ready
            .recv_timeout(Duration::from_secs(5))
            .context("listener did not start")?;
        Ok(Self {
            stop: Some(stop),
            thread,
        })
    }

    /// (address → tentative delay) as the notifications tell it.
    fn finish(mut self) -> anyhow::Result<HashMap<Ipv6Addr, u64>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let seen = self.thread.join().map_err(|_| anyhow::anyhow!("listener panicked"))??;
        let mut first_tentative = HashMap::new();
        let mut delays = HashMap::new();
        for (addr, tentative, at) in seen {
            if tentative {
                first_tentative.entry(addr).or_insert(at);
            } else if let Some(start) = first_tentative.get(&addr) {
                delays.entry(addr).or_insert(at - start);
            }
        }
        Ok(delays)
    }
}

pub struct Accuracy {
    pub pods: usize,
    pub compared: usize,
    pub median_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

pub fn run(binary: &Path, dir: &Path, pods_wanted: usize) -> anyhow::Result<Accuracy> {
    let session = dir.join("accuracy.json");
    let recorder = tracer::record_until(binary, &session, 3 * pods_wanted)?;
    let mut pods = Vec::new();
    let mut listeners = Vec::new();
    for index in 0..pods_wanted {
        let netns = NamedNetns::create(Path::new(NETNS_DIR), &format!("dta-{index}"))?;
        listeners.push((format!("dta-{index}"), Listener::start(netns.path())?));
        pods.push(SyntheticPod::create_in(netns, "dta-", index)?);
    }
    let session = recorder.finish()?.0.context("the tracer wrote no session")?;
    let mut differences = Vec::new();
    for (name, listener) in listeners {
        let observed = listener.finish()?;
        for event in session
            .events
            .iter()
            .filter(|e| e.netns_name.as_deref() == Some(name.as_str()) && e.outcome == Outcome::Settled)
        {
            if let Some(&delay) = observed.get(&event.addr) {
                differences.push(delay.abs_diff(event.tentative_ns));
            }
        }
    }
    drop(pods);
    if differences.is_empty() {
        bail!("no address was seen by both dad-trace and the listener");
    }
    let summary = Delays::from_values(differences.iter().copied())
        .summary()
        .context("no differences")?;
    Ok(Accuracy {
        pods: pods_wanted,
        compared: differences.len(),
        median_ns: summary.p50_ns,
        p99_ns: summary.p99_ns,
        max_ns: summary.max_ns,
    })
}
