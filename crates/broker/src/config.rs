//! Broker policy, with ActiveMQ's names and defaults where ActiveMQ has them.

/// Broker-wide policy.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `brokerName`; part of every message id.
    pub name: String,
    /// Where poison and expired messages go (`ActiveMQ.DLQ`, ActiveMQ's shared DLQ strategy).
    pub dead_letter_queue: String,
    /// Redeliveries after the first delivery before a message is dead (`maximumRedeliveries`,
    /// default 6); -1 means never.
    pub maximum_redeliveries: i32,
    /// Dead-letter expired messages instead of dropping them (`processExpired`, default true).
    pub process_expired: bool,
    /// Dead-letter non-persistent messages too (`processNonPersistent`, default false).
    pub process_non_persistent: bool,
    /// Memory one queue or durable subscription may hold before producers wait
    /// (`memoryLimit` of the destination policy).
    pub destination_memory_limit_bytes: u64,
    /// Memory one non-durable topic subscriber may hold before its oldest pending messages are
    /// discarded.
    pub topic_subscriber_memory_limit_bytes: u64,
    /// How long a producer waits for space before its send fails
    /// (`sendFailIfNoSpaceAfterTimeout`); 0 waits as long as it takes, as ActiveMQ does.
    pub send_fail_if_no_space_after_timeout_ms: u64,
    /// Most destinations (queues, topics, subscriptions) the broker creates.
    pub max_destinations: usize,
    /// Stored message bytes above which producers of persistent messages wait (the store
    /// usage limit); 0 = no limit.
    pub store_usage_limit_bytes: u64,
    /// Duplicate ids (`_AMQ_DUPL_ID`) remembered per destination (Artemis's `id-cache-size`);
    /// 0 disables duplicate detection.
    pub id_cache_size: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            name: "localhost".to_string(),
            dead_letter_queue: "ActiveMQ.DLQ".to_string(),
            maximum_redeliveries: 6,
            process_expired: true,
            process_non_persistent: false,
            destination_memory_limit_bytes: 64 * 1024 * 1024,
            topic_subscriber_memory_limit_bytes: 16 * 1024 * 1024,
            send_fail_if_no_space_after_timeout_ms: 0,
            max_destinations: 100_000,
            store_usage_limit_bytes: 0,
            id_cache_size: 20_000,
        }
    }
}
