//! A long-lived agent through many pods: `dad-trace serve` while synthetic pods are created
//! and deleted in batches. Its caches must shrink as namespaces die (a node agent lives
//! for months), so resident memory at the end stays near what it was after the first pods.
use std::{net::TcpListener, path::Path, time::Duration};

use anyhow::{Context as _, bail};
use dad_trace::node::synthetic;

use crate::tracer::Tracer;

pub struct Soak {
    pub pods: usize,
    pub batch: usize,
    /// (pods so far, RSS in KiB) after each 2,000 pods.
    pub rss_kib: Vec<(usize, u64)>,
    /// Addresses the agent's metrics counted at the end.
    pub counted: u64,
    pub lost: u64,
    pub cpu: Duration,
}

impl Soak {
    /// RSS at the end minus RSS after the first 2,000 pods, KiB.
    pub fn growth_kib(&self) -> i64 {
        let at = |index: usize| self.rss_kib.get(index).map_or(0, |(_, kib)| kib.cast_signed());
        at(self.rss_kib.len().saturating_sub(1)) - at(0)
    }
}

/// The value of every series of a counter, summed.
fn sum_of(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn scrape(listen: &str) -> anyhow::Result<String> {
    ureq::get(format!("http://{listen}/metrics"))
        .config()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .call()
        .context("scrape the agent")?
        .body_mut()
        .read_to_string()
        .context("read the metrics")
}

pub fn run(binary: &Path, pods: usize, batch: usize) -> anyhow::Result<Soak> {
    let listen = {
        // A port the OS gives, free again once this listener is dropped.
        let probe = TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?.to_string()
    };
    let agent = Tracer::serve(binary, &listen)?;
    let mut rss_kib = Vec::new();
    let mut done = 0;
    while done < pods {
        // A name of its own per batch: the kernel removes a deleted namespace's veths later.
        let prefix = format!("dts{}-", (done / batch) % 1000);
        let made = synthetic::create_pods(&prefix, batch.min(pods - done))?;
        // Most addresses settle (DAD ~1-2 s); the rest are aborted by the deletion.
        std::thread::sleep(Duration::from_millis(2500));
        scrape(&listen)?;
        drop(made);
        done += batch.min(pods - done);
        if done % 2000 == 0 || done == pods {
            // Let the agent see the namespaces go before it is measured.
            std::thread::sleep(Duration::from_secs(3));
            rss_kib.push((done, agent.rss_kib()?));
            println!("soak: {done} pods, agent RSS {} KiB", rss_kib.last().map_or(0, |r| r.1));
        }
    }
    let metrics = scrape(&listen)?;
    let counted = sum_of(&metrics, "dad_trace_addresses_total");
    let lost = sum_of(&metrics, "dad_trace_lost_events_total");
    agent.interrupt();
    let (_, usage) = agent.finish()?;
    if counted < 3 * pods as u64 * 9 / 10 {
        bail!("the agent counted {counted} addresses of {pods} pods");
    }
    Ok(Soak {
        pods,
        batch,
        rss_kib,
        counted,
        lost,
        cpu: usage.cpu,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_are_summed_over_their_series_only() {
        let text = "# TYPE dad_trace_addresses counter\n\
                    dad_trace_addresses_total{outcome=\"settled\",namespace=\"a\"} 5\n\
                    dad_trace_addresses_total{outcome=\"aborted\",namespace=\"b\"} 2\n\
                    dad_trace_addresses_totally 100\n\
                    dad_trace_lost_events_total 1\n";
        assert_eq!(super::sum_of(text, "dad_trace_addresses_total"), 7);
        assert_eq!(super::sum_of(text, "dad_trace_lost_events_total"), 1);
    }
}
