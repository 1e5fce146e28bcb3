//! The servers of each pool (and of each backend with health checks), as the proxy itself
//! sees them: its `/` page asked for JSON. One result line per server: ✓ when it is in, ✗
//! with the reason when it is out after failures or failing its health check.

use serde_json::Value;

use super::report::{Ask, Report, Verdict};
use super::{CheckName, Checker};
use crate::commands::client::SendError;

impl Checker {
    /// One report per server of the backends worth reporting: pools, and backends with
    /// active checks. None when there are none, or when the proxy gives no such list.
    pub(super) async fn servers(&self) -> anyhow::Result<Vec<Report>> {
        let answer = match self.send(Ask::get("/")).await {
            Ok(a) => a,
            Err(SendError::Connect(e)) => return Err(anyhow::anyhow!(e)),
            Err(SendError::Failed(e)) => {
                return Ok(vec![report("servers", Verdict::Fail(e))]);
            }
        };
        let status = answer.json().unwrap_or(Value::Null);
        let Some(backends) = status["backends"].as_array() else {
            return Ok(Vec::new());
        };
        let mut reports = Vec::new();
        for b in backends {
            let servers = b["servers"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            if servers.len() < 2 && b["health_path"].is_null() {
                continue;
            }
            let name = b["name"].as_str().unwrap_or("?");
            for (i, s) in servers.iter().enumerate() {
                let url = s["url"].as_str().unwrap_or("?");
                let detail = s["detail"].as_str().unwrap_or("?");
                let text = match s["in_flight"].as_u64() {
                    Some(n) if servers.len() > 1 => format!("{url}: {detail}, {n} in flight"),
                    _ => format!("{url}: {detail}"),
                };
                let verdict = if s["state"] == "up" {
                    Verdict::Pass(text)
                } else {
                    Verdict::Fail(text)
                };
                reports.push(report(&format!("{name}[{i}]"), verdict));
            }
        }
        Ok(reports)
    }
}

/// A line under the health check, named `BACKEND[I]`.
fn report(label: &str, verdict: Verdict) -> Report {
    Report {
        name: CheckName::Health,
        label: Some(label.to_string()),
        verdict,
        answer: None,
    }
}
