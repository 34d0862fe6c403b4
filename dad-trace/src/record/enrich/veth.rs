//! The other end of a veth pair, over rtnetlink.
use futures::TryStreamExt as _;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo};

/// The peer index of `ifindex` in the calling thread's namespace, with the interface's own
/// name, if it is a veth.
pub fn veth_peer_here(ifindex: u32) -> anyhow::Result<Option<(u32, String)>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    runtime.block_on(async move {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        let mut links = handle.link().get().match_index(ifindex).execute();
        let Some(link) = links.try_next().await? else {
            return Ok(None);
        };
        let mut peer = None;
        let mut veth = false;
        let mut name = String::new();
        for attribute in link.attributes {
            match attribute {
                LinkAttribute::Link(index) => peer = Some(index),
                LinkAttribute::IfName(ifname) => name = ifname,
                LinkAttribute::LinkInfo(infos) => {
                    veth = infos.iter().any(|info| matches!(info, LinkInfo::Kind(InfoKind::Veth)));
                }
                _ => {}
            }
        }
        Ok(peer.filter(|_| veth).map(|peer| (peer, name)))
    })
}
