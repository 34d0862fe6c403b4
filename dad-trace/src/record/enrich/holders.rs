//! Who holds an address that failed DAD on this node: every address of every namespace
//! dad-trace can enter, indexed by address. One look answers every failure that started
//! before it; a flood of failures (anyone on the link can answer DAD for any address) costs
//! at most one look per [`LOOK_INTERVAL`], not one per failure.
use std::{
    collections::HashMap,
    net::Ipv6Addr,
    path::PathBuf,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};

use crate::{node::netns::addresses_in, session::Holder};

/// The least time between two looks.
const LOOK_INTERVAL: Duration = Duration::from_millis(200);

pub struct HolderIndex {
    built: DateTime<Utc>,
    at: Instant,
    holders: HashMap<Ipv6Addr, Vec<Holder>>,
}

impl HolderIndex {
    /// Reads every namespace's addresses (`namespaces`: inode and a path that opens it);
    /// `name` says what each namespace is called in the report.
    pub fn look(namespaces: Vec<(u32, PathBuf)>, mut name: impl FnMut(u32) -> String) -> Self {
        let built = Utc::now();
        let at = Instant::now();
        let mut holders: HashMap<Ipv6Addr, Vec<Holder>> = HashMap::new();
        for (inode, handle) in namespaces {
            let Ok(rows) = addresses_in(&handle) else {
                continue;
            };
            let mut label = None;
            for row in rows {
                if row.flags & dad_trace_common::IFA_F_DADFAILED == 0 {
                    let label = label.get_or_insert_with(|| name(inode)).clone();
                    holders.entry(row.addr).or_default().push(Holder {
                        netns_inode: inode,
                        name: label,
                        ifname: row.ifname,
                    });
                }
            }
        }
        log::debug!(
            "looked for address holders in every namespace ({} addresses)",
            holders.len()
        );
        Self { built, at, holders }
    }

    /// Whether this index can answer for a failure whose DAD began at `started`: the
    /// holder had the address by then, so an index built since knows it; a younger index is
    /// used anyway (the interval bounds the work).
    #[must_use]
    pub fn answers(&self, started: DateTime<Utc>) -> bool {
        self.built >= started || self.at.elapsed() < LOOK_INTERVAL
    }

    /// The holders of `addr` outside namespace `except_inode` (the failed copy's own).
    #[must_use]
    pub fn of(&self, addr: Ipv6Addr, except_inode: u32) -> Vec<Holder> {
        self.holders
            .get(&addr)
            .into_iter()
            .flatten()
            .filter(|holder| holder.netns_inode != except_inode)
            .cloned()
            .collect()
    }
}
