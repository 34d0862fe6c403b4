//! Synthetic pods: a network namespace with a veth pair and an IPv6 address, set up the way
//! a CNI plugin does it for a pod sandbox. Used by the built-in demo and the kernel tests.
use std::{net::Ipv6Addr, os::fd::AsRawFd as _, path::Path};

use anyhow::Context as _;
use futures::TryStreamExt as _;
use rtnetlink::{LinkUnspec, LinkVeth};

use super::netns::{NETNS_DIR, NamedNetns, in_netns};

/// One synthetic pod: its namespace, host-side veth name and pod address.
pub struct SyntheticPod {
    pub netns: NamedNetns,
    pub name: String,
    pub host_veth: String,
    pub addr: Ipv6Addr,
}

async fn link_index(handle: &mut rtnetlink::Handle, name: &str) -> anyhow::Result<u32> {
    let link = handle
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await?
        .with_context(|| format!("link {name} not found"))?;
    Ok(link.header.index)
}

fn netlink_runtime() -> anyhow::Result<(tokio::runtime::Runtime, rtnetlink::Handle)> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    let (connection, handle, _) = runtime.block_on(async { rtnetlink::new_connection() })?;
    runtime.spawn(connection);
    Ok((runtime, handle))
}

impl SyntheticPod {
    /// Creates `<prefix><index>` with `eth0` ↔ `<prefix>h<index>` and `fd00:dad::<index+1>/64`.
    pub fn create(prefix: &str, index: usize) -> anyhow::Result<Self> {
        let netns = NamedNetns::create(Path::new(NETNS_DIR), &format!("{prefix}{index}"))?;
        Self::create_in(netns, prefix, index)
    }

    /// The same in a namespace made beforehand (to watch it from the start, say).
    pub fn create_in(netns: NamedNetns, prefix: &str, index: usize) -> anyhow::Result<Self> {
        let name = format!("{prefix}{index}");
        let host_veth = format!("{prefix}h{index}");
        let peer_tmp = format!("{prefix}p{index}");
        let addr = Ipv6Addr::new(
            0xfd00,
            0x0dad,
            0,
            0,
            0,
            0,
            0,
            u16::try_from(index + 1).context("too many pods")?,
        );

        // Host side: create the pair and move one end into the pod namespace.
        let ns_file = std::fs::File::open(netns.path())?;
        let (runtime, mut handle) = netlink_runtime()?;
        runtime.block_on(async {
            handle
                .link()
                .add(LinkVeth::new(&host_veth, &peer_tmp).build())
                .execute()
                .await
                .context("add veth pair")?;
            let peer = link_index(&mut handle, &peer_tmp).await?;
            handle
                .link()
                .set(
                    LinkUnspec::new_with_index(peer)
                        .setns_by_fd(ns_file.as_raw_fd())
                        .build(),
                )
                .execute()
                .await
                .context("move veth into the pod namespace")?;
            let host = link_index(&mut handle, &host_veth).await?;
            handle
                .link()
                .set(LinkUnspec::new_with_index(host).up().build())
                .execute()
                .await
                .context("host veth up")?;
            anyhow::Ok(())
        })?;

        // Pod side, as a CNI plugin does it: rename to eth0, bring up, add the IPAM address.
        in_netns(netns.path(), move || {
            let (runtime, mut handle) = netlink_runtime()?;
            runtime.block_on(async {
                let lo = link_index(&mut handle, "lo").await?;
                handle
                    .link()
                    .set(LinkUnspec::new_with_index(lo).up().build())
                    .execute()
                    .await?;
                let eth = link_index(&mut handle, &peer_tmp).await?;
                handle
                    .link()
                    .set(LinkUnspec::new_with_index(eth).name("eth0".into()).up().build())
                    .execute()
                    .await
                    .context("eth0 up")?;
                handle
                    .address()
                    .add(eth, addr.into(), 64)
                    .execute()
                    .await
                    .context("add pod address")?;
                anyhow::Ok(())
            })
        })?;
        Ok(Self {
            netns,
            name,
            host_veth,
            addr,
        })
    }
}

/// Creates `count` pods; on any failure the ones already made are removed.
pub fn create_pods(prefix: &str, count: usize) -> anyhow::Result<Vec<SyntheticPod>> {
    (0..count)
        .map(|index| SyntheticPod::create(prefix, index).with_context(|| format!("synthetic pod {prefix}{index}")))
        .collect()
}
