//! Merging the members' lists of one kind: each model once (by `id` or `name`), the first
//! backend to list it keeping it, each backend's aliases added, and which backends listed or
//! were left out.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;

use super::fetch::Outcome;
use super::shapes::Kind;
use super::{Asker, Catalog, Member};
use crate::routing::routes::ModelSet;

/// The merged entries of the chosen members.
#[derive(Default)]
pub(super) struct Listing<'c> {
    /// Each entry with the index of the member it came from.
    pub(super) data: Vec<(usize, Value)>,
    /// The members that listed their models.
    pub(super) listed: Vec<&'c str>,
    /// Those left out, and why.
    pub(super) skipped: Vec<String>,
}

impl Catalog {
    /// The chosen members' entries of the `kind` list merged (each with the member it came
    /// from), and which members listed or were left out.
    pub(super) async fn listing(
        self: &Arc<Self>,
        kind: Kind,
        chosen: &[usize],
        asker: Asker<'_>,
    ) -> Listing<'_> {
        let members = &self.list(kind).members;
        let asked: Vec<usize> = chosen
            .iter()
            .copied()
            .filter(|&i| members[i].asked)
            .collect();
        let mut outcomes = (self.outcomes(kind, &asked, asker).await).into_iter();
        let mut seen = HashSet::new();
        let mut list = Listing::default();
        for &i in chosen {
            let m = &members[i];
            let name = m.backend.config.name.as_str();
            let mut data = Vec::new();
            if !m.asked {
                if kind.names_from_config() {
                    merge(kind, m, &named_models(kind, m), &mut seen, &mut data);
                }
            } else {
                match outcomes.next() {
                    Some(Outcome::Listed(models)) => {
                        list.listed.push(name);
                        merge(kind, m, &models, &mut seen, &mut data);
                    }
                    Some(Outcome::Skipped { why, .. }) => {
                        list.skipped.push(format!("{name} ({why})"));
                        // Its aliases are still what the config says (whisper.cpp lists
                        // nothing).
                        merge(kind, m, &[], &mut seen, &mut data);
                    }
                    None => {}
                }
            }
            list.data.extend(data.into_iter().map(|v| (i, v)));
        }
        list
    }
}

/// The models a backend that is not asked has: those its routes name exactly, in a plain
/// entry each.
fn named_models(kind: Kind, m: &Member) -> Vec<Value> {
    let names = m.filter.as_ref().map_or(&[][..], ModelSet::patterns);
    names
        .iter()
        .filter(|n| !n.contains('*'))
        .map(|id| kind.plain(id, &m.backend.config.name))
        .collect()
}

/// Adds one backend's entries (those its filter lets through) and its aliases to the list,
/// each name once: the first backend to list it keeps it. An alias is its model's entry
/// under its own name; a plain one when the backend does not list that model (none in a list
/// of what runs).
fn merge(
    kind: Kind,
    m: &Member,
    models: &[Value],
    seen: &mut HashSet<String>,
    data: &mut Vec<Value>,
) {
    for model in models {
        let Some(id) = kind.name(model) else {
            continue;
        };
        if m.filter.as_ref().map_or(true, |f| f.matches(id)) && seen.insert(id.to_string()) {
            data.push(model.clone());
        }
    }
    for (alias, target) in &m.backend.config.aliases {
        let entry = match models.iter().find(|v| kind.name(v) == Some(target)) {
            Some(v) => kind.renamed(v, alias),
            None if kind.names_from_config() => kind.plain(alias, &m.backend.config.name),
            None => continue,
        };
        if seen.insert(alias.clone()) {
            data.push(entry);
        }
    }
}
