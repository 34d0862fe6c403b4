//! Route netlink in the host namespace, synchronously: one socket for requests (a link by
//! index, the id the host gives another namespace) and one that follows every link the
//! host adds or removes, so veth lookups are answered from memory. No socket is ever opened
//! inside a pod's namespace: a socket holds its namespace alive, and dad-trace must never
//! keep a deleted pod's network from going away.
use std::{collections::HashMap, os::fd::AsRawFd as _, path::Path, time::Duration};

use anyhow::Context as _;
use rtnetlink::{
    packet_core::{
        ErrorBuffer, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer, NetlinkHeader, NetlinkMessage,
        NetlinkPayload, NlaBuffer, NlasIterator, Parseable as _, parse_i32, parse_string, parse_u32,
    },
    packet_route::{
        AddressFamily, RouteNetlinkMessage,
        link::{LinkMessage, LinkMessageBuffer},
        nsid::{NsidAttribute, NsidMessage, NsidMessageBuffer},
    },
    sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE},
};

/// The multicast group of link changes (`RTNLGRP_LINK`).
const LINK_GROUP: u32 = 1;
/// A reply the kernel does not send within this long is not coming.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// A link as the host sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostLink {
    pub name: String,
    /// For a veth: its peer's index, in the namespace `peer_nsid` names (the host's own when
    /// `None`).
    pub veth_peer: Option<u32>,
    pub peer_nsid: Option<i32>,
}

/// Reads the four attributes dad-trace needs from a link message (`RTM_NEWLINK` payload),
/// walking the attributes without parsing the rest: a full parse of every link change
/// the host announces (statistics, per-family configuration) was most of the tracer's CPU
/// while pods were being created.
fn host_link(payload: &[u8]) -> Option<(u32, HostLink)> {
    let message = LinkMessageBuffer::new_checked(payload).ok()?;
    let mut link = HostLink {
        name: String::new(),
        veth_peer: None,
        peer_nsid: None,
    };
    let mut veth = false;
    for attribute in message.attributes().flatten() {
        let value = attribute.value();
        match attribute.kind() {
            libc::IFLA_IFNAME => link.name = parse_string(value).ok()?,
            libc::IFLA_LINK => link.veth_peer = parse_u32(value).ok(),
            libc::IFLA_LINK_NETNSID => link.peer_nsid = parse_i32(value).ok(),
            libc::IFLA_LINKINFO => veth = is_veth(value),
            _ => {}
        }
    }
    if !veth {
        link.veth_peer = None;
        link.peer_nsid = None;
    }
    Some((message.link_index(), link))
}

/// Whether nested link info says kind "veth".
fn is_veth(info: &[u8]) -> bool {
    NlasIterator::new(info).flatten().any(|nested: NlaBuffer<&[u8]>| {
        nested.kind() == libc::IFLA_INFO_KIND && parse_string(nested.value()).is_ok_and(|kind| kind == "veth")
    })
}

/// Room for link changes between two catch-ups: pods set up by the hundred send thousands.
const EVENTS_BUFFER: libc::c_int = 16 << 20;

fn set_option(socket: &Socket, option: libc::c_int, value: &impl Sized) -> std::io::Result<()> {
    // SAFETY: a valid socket and a value of the size given.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            std::ptr::from_ref(value).cast(),
            u32::try_from(size_of_val(value)).unwrap_or(0),
        )
    };
    if set == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn open(group: Option<u32>) -> anyhow::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE).context("netlink socket")?;
    socket.bind_auto().context("bind netlink socket")?;
    if let Some(group) = group {
        socket.add_membership(group).context("follow link changes")?;
        // Past the system's limit where allowed (CAP_NET_ADMIN); the default otherwise, and
        // an overflow then costs a re-read.
        if set_option(&socket, libc::SO_RCVBUFFORCE, &EVENTS_BUFFER).is_err() {
            let _ = set_option(&socket, libc::SO_RCVBUF, &EVENTS_BUFFER);
        }
    }
    socket
        .connect(&SocketAddr::new(0, 0))
        .context("connect netlink socket")?;
    let timeout = libc::timeval {
        tv_sec: libc::time_t::try_from(REPLY_TIMEOUT.as_secs()).unwrap_or(2),
        tv_usec: 0,
    };
    set_option(&socket, libc::SO_RCVTIMEO, &timeout).context("netlink receive timeout")?;
    Ok(socket)
}

/// One netlink message as received: its type, sequence number and payload.
struct Raw<'a> {
    kind: u16,
    sequence: u32,
    payload: &'a [u8],
}

/// Receives one datagram and calls `each` with every whole message in it. A receive error
/// (`EAGAIN` on a non-blocking socket, `ENOBUFS` after an overflow) is returned as is; a
/// malformed message ends the datagram.
fn receive(socket: &Socket, buffer: &mut Vec<u8>, mut each: impl FnMut(Raw<'_>)) -> std::io::Result<()> {
    buffer.clear();
    socket.recv(buffer, 0)?;
    let mut rest = &buffer[..];
    while let Ok(message) = NetlinkBuffer::new_checked(rest) {
        let length = (message.length() as usize).next_multiple_of(4);
        each(Raw {
            kind: message.message_type(),
            sequence: message.sequence_number(),
            payload: message.payload(),
        });
        if length == 0 || length >= rest.len() {
            break;
        }
        rest = &rest[length..];
    }
    Ok(())
}

/// Requests on the host's route netlink.
pub struct Requests {
    socket: Socket,
    sequence: u32,
    buffer: Vec<u8>,
}

impl Requests {
    pub fn open() -> anyhow::Result<Self> {
        Ok(Self {
            socket: open(None)?,
            sequence: 0,
            buffer: Vec::with_capacity(1 << 16),
        })
    }

    /// Sends `message` and hands `each` the type and payload of every reply until the dump
    /// ends (or, for a single request, the reply comes). A netlink error ends it with that
    /// error.
    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        dump: bool,
        mut each: impl FnMut(u16, &[u8]),
    ) -> anyhow::Result<()> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { 0 };
        header.sequence_number = self.sequence;
        let mut request = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        request.finalize();
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        self.socket.send(&bytes, 0).context("netlink request")?;
        let mut done = false;
        let mut failure = None;
        while !done {
            let sequence = self.sequence;
            receive(&self.socket, &mut self.buffer, |reply| {
                if reply.sequence != sequence {
                    return;
                }
                match reply.kind {
                    NLMSG_DONE => done = true,
                    NLMSG_ERROR => {
                        done = true;
                        failure = ErrorBuffer::new_checked(reply.payload)
                            .ok()
                            .and_then(|error| error.code())
                            .map(|code| std::io::Error::from_raw_os_error(-code.get()));
                    }
                    kind => {
                        each(kind, reply.payload);
                        done |= !dump;
                    }
                }
            })
            .context("netlink reply")?;
        }
        match failure {
            Some(error) => Err(error.into()),
            None => Ok(()),
        }
    }

    /// Every link of the host.
    pub fn links(&mut self) -> anyhow::Result<HashMap<u32, HostLink>> {
        let mut links = HashMap::new();
        self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            true,
            |kind, payload| {
                if kind == libc::RTM_NEWLINK
                    && let Some((index, link)) = host_link(payload)
                {
                    links.insert(index, link);
                }
            },
        )?;
        Ok(links)
    }

    /// The id the host gives the namespace at `handle` (`ip netns list-id`), if it has one.
    /// The handle is open only for the question: nothing here keeps the namespace alive.
    pub fn nsid(&mut self, handle: &Path) -> anyhow::Result<Option<i32>> {
        let file = std::fs::File::open(handle).with_context(|| format!("open {}", handle.display()))?;
        let mut message = NsidMessage::default();
        message.header.family = AddressFamily::Unspec;
        let fd = u32::try_from(file.as_raw_fd()).context("descriptor")?;
        message.attributes.push(NsidAttribute::Fd(fd));
        let mut nsid = None;
        self.request(RouteNetlinkMessage::GetNsId(message), false, |kind, payload| {
            if kind != libc::RTM_NEWNSID {
                return;
            }
            let answer = NsidMessageBuffer::new_checked(&payload).and_then(|buffer| NsidMessage::parse(&buffer));
            nsid = answer.ok().and_then(|answer| {
                answer.attributes.iter().find_map(|attribute| match attribute {
                    NsidAttribute::Id(id) if *id >= 0 => Some(*id),
                    _ => None,
                })
            });
        })?;
        drop(file);
        Ok(nsid)
    }
}

/// The host's links by index, and its veths by their peer: a pod's interface finds its
/// host side without a walk through every link of the node.
#[derive(Default)]
struct Links {
    by_index: HashMap<u32, HostLink>,
    /// (peer's namespace id, peer's index) → the host-side veth's index.
    by_peer: HashMap<(i32, u32), u32>,
}

impl Links {
    fn insert(&mut self, index: u32, link: HostLink) {
        self.remove(index);
        if let (Some(nsid), Some(peer)) = (link.peer_nsid, link.veth_peer) {
            self.by_peer.insert((nsid, peer), index);
        }
        self.by_index.insert(index, link);
    }

    fn remove(&mut self, index: u32) {
        let Some(link) = self.by_index.remove(&index) else {
            return;
        };
        if let (Some(nsid), Some(peer)) = (link.peer_nsid, link.veth_peer)
            && self.by_peer.get(&(nsid, peer)) == Some(&index)
        {
            self.by_peer.remove(&(nsid, peer));
        }
    }
}

impl From<HashMap<u32, HostLink>> for Links {
    fn from(read: HashMap<u32, HostLink>) -> Self {
        let mut links = Links::default();
        for (index, link) in read {
            links.insert(index, link);
        }
        links
    }
}

/// The host's links, kept current from the kernel's link notifications.
pub struct HostLinks {
    events: Socket,
    buffer: Vec<u8>,
    links: Links,
    read_at: std::time::Instant,
}

/// The least time between two full reads of the host's links after a miss.
const REREAD_INTERVAL: Duration = Duration::from_secs(1);

impl HostLinks {
    /// Starts following changes, then reads every link (changes meanwhile are queued).
    pub fn follow(requests: &mut Requests) -> anyhow::Result<Self> {
        let events = open(Some(LINK_GROUP))?;
        events.set_non_blocking(true).context("non-blocking link events")?;
        Ok(Self {
            events,
            buffer: Vec::with_capacity(1 << 16),
            links: requests.links()?.into(),
            read_at: std::time::Instant::now(),
        })
    }

    /// Reads every link again, dropping the changes queued meanwhile (they are older than
    /// what the read returns). At most once per [`REREAD_INTERVAL`]; whether it read.
    pub fn reread(&mut self, requests: &mut Requests) -> anyhow::Result<bool> {
        if self.read_at.elapsed() < REREAD_INTERVAL {
            return Ok(false);
        }
        self.reread_now(requests)?;
        Ok(true)
    }

    fn reread_now(&mut self, requests: &mut Requests) -> anyhow::Result<()> {
        while receive(&self.events, &mut self.buffer, |_| {}).is_ok() {}
        self.links = requests.links()?.into();
        self.read_at = std::time::Instant::now();
        Ok(())
    }

    /// Applies the changes the kernel announced since the last call. When the kernel had to
    /// drop some (its queue overflowed), every link is read again.
    pub fn catch_up(&mut self, requests: &mut Requests) -> anyhow::Result<()> {
        loop {
            let links = &mut self.links;
            let received = receive(&self.events, &mut self.buffer, |change| match change.kind {
                libc::RTM_NEWLINK => {
                    if let Some((index, link)) = host_link(change.payload) {
                        links.insert(index, link);
                    }
                }
                libc::RTM_DELLINK => {
                    if let Ok(link) = LinkMessageBuffer::new_checked(change.payload) {
                        links.remove(link.link_index());
                    }
                }
                _ => {}
            });
            match received {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    log::debug!("link changes overflowed: reading every link again");
                    return self.reread_now(requests);
                }
                Err(e) => return Err(e).context("link changes"),
            }
        }
    }

    #[must_use]
    pub fn get(&self, index: u32) -> Option<&HostLink> {
        self.links.by_index.get(&index)
    }

    /// The host-side veth whose peer is interface `index` of the namespace the host calls
    /// `nsid`.
    #[must_use]
    pub fn peer_of(&self, nsid: i32, index: u32) -> Option<(u32, &HostLink)> {
        let host_index = *self.links.by_peer.get(&(nsid, index))?;
        Some((host_index, self.links.by_index.get(&host_index)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn veth(name: &str, nsid: i32, peer: u32) -> HostLink {
        HostLink {
            name: name.into(),
            veth_peer: Some(peer),
            peer_nsid: Some(nsid),
        }
    }

    /// A pod's interface finds its host side by the peer's namespace id and index, and
    /// loses it when the link goes or changes peer; a link without a peer elsewhere is
    /// found by index only.
    #[test]
    fn veths_are_found_by_their_peer() {
        let mut links = Links::from(HashMap::from([
            (10, veth("veth-a", 1, 2)),
            (11, veth("veth-b", 2, 2)),
            (
                1,
                HostLink {
                    name: "eth0".into(),
                    veth_peer: None,
                    peer_nsid: None,
                },
            ),
        ]));
        let peer = |links: &Links, nsid, index| {
            let host = *links.by_peer.get(&(nsid, index))?;
            links.by_index.get(&host).map(|link| (host, link.name.clone()))
        };
        assert_eq!(peer(&links, 1, 2), Some((10, "veth-a".into())));
        assert_eq!(peer(&links, 2, 2), Some((11, "veth-b".into())));
        assert_eq!(links.by_peer.len(), 2, "eth0 has no peer");
        // Its peer moved to another namespace: found there, not here.
        links.insert(10, veth("veth-a", 3, 2));
        assert_eq!(
            (peer(&links, 1, 2), peer(&links, 3, 2)),
            (None, Some((10, "veth-a".into())))
        );
        links.remove(11);
        links.remove(99);
        assert_eq!(peer(&links, 2, 2), None);
        assert_eq!((links.by_index.len(), links.by_peer.len()), (2, 1));
    }
}
