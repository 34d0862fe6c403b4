//! A real Prometheus (Debian's 2.42) for one test, scraping `dad-trace serve`, and its HTTP
//! query API.
#![allow(clippy::missing_panics_doc, reason = "test helpers: a failed expectation panics")]
use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

/// A Prometheus server started for one test, scraping `target` every second.
pub struct Prometheus {
    process: std::process::Child,
    address: SocketAddr,
    _dir: tempfile::TempDir,
}

#[must_use]
pub fn free_loopback_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address")
}

#[must_use]
pub fn prometheus_installed() -> bool {
    std::process::Command::new("prometheus")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success())
}

/// One series of an instant query's answer.
#[derive(Clone, Debug)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Prometheus {
    #[must_use]
    pub fn start(target: SocketAddr) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: dad-trace\n    \
             static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("write config");
        let address = free_loopback_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let process = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={address}"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Self {
            process,
            address,
            _dir: dir,
        }
    }

    /// Every series an instant query returns; `Err` with Prometheus's words when it refuses.
    pub fn query_all(&self, query: &str) -> Result<Vec<Sample>, String> {
        let body = ureq::get(format!("http://{}/api/v1/query", self.address))
            .query("query", query)
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .map_err(|e| e.to_string())?
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        let json: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        if json["status"] != "success" {
            return Err(format!("{}: {}", json["errorType"], json["error"]));
        }
        let results = json
            .pointer("/data/result")
            .and_then(|r| r.as_array())
            .ok_or("no result")?;
        Ok(results
            .iter()
            .map(|result| Sample {
                labels: result["metric"]
                    .as_object()
                    .map(|labels| {
                        labels
                            .iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .unwrap_or_default(),
                value: result
                    .pointer("/value/1")
                    .and_then(|v| v.as_str())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN),
            })
            .collect())
    }

    /// The value of an instant query that returns one sample, if it does yet.
    #[must_use]
    pub fn query(&self, query: &str) -> Option<f64> {
        match self.query_all(query).ok()?.as_slice() {
            [sample] => Some(sample.value),
            _ => None,
        }
    }

    /// Polls until the query returns `expected` (or 60 s pass); returns the last value.
    #[must_use]
    pub fn wait_for(&self, query: &str, expected: f64) -> Option<f64> {
        let deadline = std::time::Instant::now() + Duration::from_mins(1);
        loop {
            let value = self.query(query);
            if value.is_some_and(|v| (v - expected).abs() < 1e-9) || std::time::Instant::now() > deadline {
                return value;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
