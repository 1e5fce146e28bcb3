//! `/metrics` as Prometheus reads it: fetched over HTTP and parsed by the Prometheus client
//! library's own parsers (Python `prometheus_client`, from tests/requirements.txt), the
//! Prometheus text format or the stricter OpenMetrics one, never by looking for substrings.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http::Request;

use super::client::{body_bytes, full, send};
use super::tools::{python, require_python_module};

/// One sample: its name (`..._total`, `..._bucket`), labels and value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The parsed scrape.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub samples: Vec<Sample>,
    /// Family name → type (`counter`, `gauge`, `histogram`, `info`, ...).
    pub types: BTreeMap<String, String>,
}

const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families as prometheus
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
parse = openmetrics if sys.argv[1] == "openmetrics" else prometheus
samples, types = [], {}
for family in parse(sys.stdin.read()):
    types[family.name] = family.type
    for s in family.samples:
        samples.append([s.name, s.labels, s.value])
print(json.dumps({"samples": samples, "types": types}))
"#;

/// Parses a scrape with the Prometheus client's parser for `openmetrics` or Prometheus text;
/// fails the test when it does not parse.
pub fn parse(text: &str, openmetrics: bool) -> Scrape {
    require_python_module("prometheus_client");
    let mut child = Command::new(python())
        .args([
            "-c",
            PARSE,
            if openmetrics {
                "openmetrics"
            } else {
                "prometheus"
            },
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the scrape does not parse ({}): {}\n{text}",
        if openmetrics {
            "OpenMetrics"
        } else {
            "Prometheus text"
        },
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let samples = v["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Sample {
            name: s[0].as_str().unwrap().to_string(),
            labels: serde_json::from_value(s[1].clone()).unwrap(),
            value: s[2].as_f64().unwrap(),
        })
        .collect();
    let types = serde_json::from_value(v["types"].clone()).unwrap();
    Scrape { samples, types }
}

impl Scrape {
    /// The value of the sample `name` whose labels include `labels`; fails when there is not
    /// exactly one.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self.matching(name, labels).collect();
        assert_eq!(
            found.len(),
            1,
            "{name}{labels:?}: expected one sample, found {found:?}"
        );
        found[0].value
    }

    /// The samples `name` whose labels include `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// Whether some sample of `name` has these labels.
    pub fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.matching(name, labels).next().is_some()
    }
}

/// `GET /metrics` on `addr`, in Prometheus text (or OpenMetrics, as Prometheus asks), parsed.
pub async fn scrape(addr: SocketAddr, openmetrics: bool) -> Scrape {
    scrape_as(addr, openmetrics, None).await
}

/// [`scrape`] with a client token (the proxy has `client_tokens_file`).
pub async fn scrape_as(addr: SocketAddr, openmetrics: bool, token: Option<&str>) -> Scrape {
    let accept = if openmetrics {
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    } else {
        "text/plain"
    };
    let mut req = Request::get(format!("http://{addr}/metrics")).header("accept", accept);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let res = send(req.body(full("")).unwrap()).await;
    assert_eq!(res.status(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_string();
    assert_eq!(
        ct.starts_with("application/openmetrics-text"),
        openmetrics,
        "content type {ct}"
    );
    let text = String::from_utf8(body_bytes(res).await.to_vec()).unwrap();
    parse(&text, openmetrics)
}

/// The metrics address the binary logs (`metrics: http://ADDR/metrics`).
pub async fn metrics_addr(proc: &super::bin::Proc) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = proc.log_text();
        if let Some(addr) = log
            .lines()
            .find_map(|l| l.split("metrics: http://").nth(1))
            .and_then(|rest| rest.strip_suffix("/metrics"))
            .and_then(|a| a.parse().ok())
        {
            return addr;
        }
        assert!(
            Instant::now() < deadline,
            "no metrics address in the log: {log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
