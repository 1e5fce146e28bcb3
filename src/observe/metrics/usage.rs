//! The ledger's series: requests and tokens by route, backend, model and client, and the
//! speeds of streams by route, backend and model. Their labels are bounded as the ledger
//! bounds them (models: the config's and those backends answered with, capped; clients: the
//! names of the client tokens file).

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use crate::observe::ledger::{Key, Ledger, Speeds, FIRST_BYTE_BUCKETS, SPEED_BUCKETS};

/// A histogram for the encoder: cumulative-free bucket counts with their bounds.
fn buckets(bounds: &[f64; 12], counts: &[u64; 13]) -> Vec<(f64, u64)> {
    bounds
        .iter()
        .copied()
        .chain([f64::INFINITY])
        .zip(counts.iter().copied())
        .collect()
}

fn key_labels(k: &Key) -> [(&'static str, &str); 4] {
    [
        ("route", &*k.route),
        ("backend", &*k.backend),
        ("model", &*k.model),
        ("client", &*k.client),
    ]
}

/// Writes the ledger's series.
pub(super) fn encode(ledger: &Ledger, enc: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
    let (mut totals, mut speeds) = ledger.read(|b| {
        let totals: Vec<_> = b.totals.iter().map(|(k, t)| (k.clone(), *t)).collect();
        let speeds: Vec<_> = b
            .speeds
            .iter()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        (totals, speeds)
    });
    totals.sort_by(|a, b| a.0.cmp(&b.0));
    speeds.sort_by(|a, b| a.0.cmp(&b.0));

    let mut m = enc.encode_descriptor(
        "openai_proxy_model_requests",
        "Requests a backend answered, by route, backend, model (the config's names and those backends answered with; others are \"other\") and client (the client token's name)",
        None,
        MetricType::Counter,
    )?;
    for (k, t) in &totals {
        m.encode_family(&key_labels(k))?
            .encode_counter::<NoLabelSet, _, u64>(&t.requests, None)?;
    }
    let mut m = enc.encode_descriptor(
        "openai_proxy_tokens",
        "Tokens counted in answers' usage, by route, backend, model, client and kind (prompt, completion); answers without usage add none",
        None,
        MetricType::Counter,
    )?;
    for (k, t) in &totals {
        for (kind, n) in [
            ("prompt", t.prompt_tokens),
            ("completion", t.completion_tokens),
        ] {
            let [a, b, c, d] = key_labels(k);
            m.encode_family(&[a, b, c, d, ("kind", kind)])?
                .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }
    }

    type Pick = fn(&Speeds) -> &crate::observe::ledger::Hist;
    /// Name, help, unit, which histogram, its bounds.
    type Family = (
        &'static str,
        &'static str,
        Option<Unit>,
        Pick,
        &'static [f64; 12],
    );
    let families: [Family; 2] = [
        (
            "openai_proxy_time_to_first_token",
            "Streams: from the request's arrival until the first byte of its answer's body (its first event)",
            Some(Unit::Seconds),
            |s| &s.first_byte,
            &FIRST_BYTE_BUCKETS,
        ),
        (
            "openai_proxy_generation_tokens_per_second",
            "Streams: tokens generated per second (llama.cpp's own measure when it sends one, else the completion tokens over the time from the first byte to the end)",
            None,
            |s| &s.per_second,
            &SPEED_BUCKETS,
        ),
    ];
    for (name, help, unit, pick, bounds) in families {
        let mut m = enc.encode_descriptor(name, help, unit.as_ref(), MetricType::Histogram)?;
        for ((route, backend, model), s) in &speeds {
            let h = pick(s);
            if h.count == 0 {
                continue;
            }
            let labels = [
                ("route", &**route),
                ("backend", &**backend),
                ("model", &**model),
            ];
            m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                h.sum,
                h.count,
                &buckets(bounds, &h.buckets),
                None,
            )?;
        }
    }
    Ok(())
}
