//! What outlives a reload: the health of each backend server (found again by backend name and
//! URL, so a reload does not send requests to a server it just found down) and, when metrics
//! are on, their counters; the ledger of what was served; backends' queues and clients'
//! counters; where recent responses of the Responses API were created. A reload builds its new proxy (`Proxy`) with the same
//! `Lasting`.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, Weak};

use crate::clients::Clients;
use crate::observe::ledger::Ledger;
use crate::observe::metrics::Metrics;
use crate::sync;
use crate::upstream::affinity::Affinity;
use crate::upstream::health::ServerState;
use crate::upstream::queue::Queue;
use crate::upstream::swap::SwapGroup;

pub struct Lasting {
    servers: Mutex<HashMap<(String, String), Weak<ServerState>>>,
    /// Swap groups, by name: who is in use and what is in flight outlives a reload.
    swap_groups: Mutex<HashMap<String, Weak<SwapGroup>>>,
    /// Backends' queues (`max_concurrent`), by name: what runs and waits outlives a reload.
    queues: Mutex<HashMap<String, Weak<Queue>>>,
    /// Each client's counters against its limits.
    pub clients: Clients,
    /// A graceful stop has begun: `/ready` answers 503.
    pub stopping: AtomicBool,
    /// `None`: metrics are off (nothing is counted).
    pub metrics: Option<Arc<Metrics>>,
    /// What was served, by whom, with which model.
    pub ledger: Arc<Ledger>,
    /// Which backend and server created each recent response of the Responses API.
    pub(crate) affinity: Arc<Affinity>,
}

impl Lasting {
    /// With metrics counted by `workers` workers, or none.
    pub fn new(metrics: Option<usize>) -> Arc<Lasting> {
        Arc::new(Lasting {
            servers: Mutex::new(HashMap::new()),
            swap_groups: Mutex::new(HashMap::new()),
            queues: Mutex::new(HashMap::new()),
            clients: Clients::default(),
            stopping: AtomicBool::new(false),
            metrics: metrics.map(|workers| Arc::new(Metrics::new(workers))),
            ledger: Arc::new(Ledger::default()),
            affinity: Arc::default(),
        })
    }

    /// Takes a configuration's model names and `[usage] file` (at start and each reload);
    /// at start (`first`), the totals and the clients' days the file kept are read back.
    pub fn configure(&self, config: &crate::config::Config, first: bool) {
        let days = self.ledger.configure(config, first);
        if !days.is_empty() {
            self.clients.restore(days);
        }
    }

    /// Writes `[usage] file` when the totals changed (off the serving threads).
    pub fn save(&self) {
        self.ledger.save(&self.clients.days());
    }

    /// The health of server `url` of `backend`: the same as long as a configuration has it.
    pub fn server(&self, backend: &str, url: &str) -> Arc<ServerState> {
        let mut map = sync::lock(&self.servers);
        map.retain(|_, s| s.strong_count() > 0);
        let key = (backend.to_string(), url.to_string());
        if let Some(s) = map.get(&key).and_then(Weak::upgrade) {
            return s;
        }
        let s = Arc::new(ServerState::new(url));
        map.insert(key, Arc::downgrade(&s));
        s
    }

    /// The queue of backend `name`, now with `limit`: the same as long as a configuration
    /// has it.
    pub fn queue(&self, name: &str, limit: u32) -> Arc<Queue> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut map = sync::lock(&self.queues);
        map.retain(|_, q| q.strong_count() > 0);
        if let Some(q) = map.get(name).and_then(Weak::upgrade) {
            q.set_limit(limit);
            return q;
        }
        let q = Queue::new(limit);
        map.insert(name.to_string(), Arc::downgrade(&q));
        q
    }

    /// Swap group `name`: the same as long as a configuration has it.
    pub fn swap_group(&self, name: &str) -> Arc<SwapGroup> {
        let mut map = sync::lock(&self.swap_groups);
        map.retain(|_, g| g.strong_count() > 0);
        if let Some(g) = map.get(name).and_then(Weak::upgrade) {
            return g;
        }
        let g = Arc::new(SwapGroup::new(name));
        map.insert(name.to_string(), Arc::downgrade(&g));
        g
    }
}
