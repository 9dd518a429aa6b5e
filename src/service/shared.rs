//! What an instance shows of the partitions it shares with other
//! instances in a Kafka consumer group (see [`crate::kafka::group`]), for
//! `RuleAdmin.Status` and `/metrics`. The Kafka side fills it in; the
//! transports only read it.

/// One tick partition owned now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnedPartition {
    pub topic: String,
    pub partition: i32,
    /// Instruments whose state this instance holds for it.
    pub instruments: u64,
    /// The newest offset applied (-1: none yet).
    pub applied_offset: i64,
    /// The newest offset a written state record holds (-1: none).
    pub written_offset: i64,
    /// Messages behind the partition's end, by the client's latest fetch
    /// (-1: not known yet).
    pub lag: i64,
}

/// The group side of an instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedStatus {
    pub partitions: Vec<OwnedPartition>,
    /// Rebalance callbacks run (revocations and assignments).
    pub rebalances: u64,
    /// How long the last one took (its state written or restored), ns.
    pub last_rebalance_ns: u64,
    pub states_written: u64,
    pub state_write_failures: u64,
    pub last_state_bytes: u64,
    /// Assignments that restored state.
    pub restores: u64,
    /// How long the last assignment's restore took, ns.
    pub last_restore_ns: u64,
    pub last_restore_bytes: u64,
    /// Alerts raised again after a take-over and dropped, because the
    /// previous owner had published them.
    pub handed_over_dropped: u64,
}

/// Something that reports the shared partitions (the Kafka group source).
pub trait SharedPartitions: Send + Sync {
    fn status(&self) -> SharedStatus;
}
