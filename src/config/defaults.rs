//! Defaults, shared by the code and the documentation.

use std::time::Duration;

pub(crate) const LISTEN: &str = "127.0.0.1:2020";
pub(crate) const MAX_BODY_SIZE: u64 = 1 << 30;
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const MAX_HEADER_SIZE: u64 = 64 << 10;
pub(crate) const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const SHUTDOWN_DELAY: Duration = Duration::ZERO;
pub(crate) const IDLE_EXIT: Duration = Duration::ZERO;
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(600);
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
pub(crate) const MAX_JSON_PEEK: u64 = 1 << 20;
pub(crate) const WEBSOCKET_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
pub(crate) const MAX_REPLAY_BODY: u64 = 1 << 20;
pub(crate) const MAX_CONNECTIONS_PER_IP: u32 = 256;
pub(crate) const HEALTH_INTERVAL: Duration = Duration::from_secs(10);
pub(crate) const HEALTH_BACKOFF: Duration = Duration::from_secs(1);
pub(crate) const HEALTH_BACKOFF_MAX: Duration = Duration::from_secs(30);
pub(crate) const QUEUE_TIMEOUT: Duration = Duration::from_secs(60);
