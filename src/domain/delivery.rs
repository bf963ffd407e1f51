//! How a batch is answered: after EventBridge (SYNC) or once it is on the
//! gateway's disk (DURABLE), and the error codes of the durable queue.

use serde::{Deserialize, Serialize};

/// A batch's delivery mode, once the request's choice and the defaults are
/// settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// The answer waits for EventBridge, within the caller's deadline.
    #[default]
    Sync,
    /// The answer comes once the entries are on disk; delivery follows.
    Durable,
}

impl Delivery {
    /// The mode a batch gets: the request's, else the tenant's, else the
    /// gateway's default.
    pub fn settle(
        requested: Option<Delivery>,
        tenant: Option<Delivery>,
        default: Delivery,
    ) -> Self {
        requested.or(tenant).unwrap_or(default)
    }
}

/// Codes of the durable queue.
pub mod codes {
    /// A DURABLE batch refused whole: the queue is at `durable.max_bytes`.
    pub const QUEUE_FULL: &str = "QueueFull";
    /// A DURABLE batch refused whole: the queue could not write to disk.
    pub const QUEUE_UNAVAILABLE: &str = "QueueUnavailable";
    /// A dead letter's reason: still failing retryably when its
    /// `durable.max_delivery_age_ms` ran out.
    pub const MAX_DELIVERY_AGE_EXCEEDED: &str = "MaxDeliveryAgeExceeded";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_then_the_tenant_then_the_default_decide() {
        use Delivery::*;
        assert_eq!(Delivery::settle(Some(Sync), Some(Durable), Durable), Sync);
        assert_eq!(Delivery::settle(None, Some(Durable), Sync), Durable);
        assert_eq!(Delivery::settle(None, None, Durable), Durable);
        assert_eq!(Delivery::settle(None, None, Sync), Sync);
    }
}
