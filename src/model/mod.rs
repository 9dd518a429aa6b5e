//! The engine's vocabulary: exact decimals, ticks and alerts. No I/O, no
//! protobuf: the gRPC layer converts to and from these types.

pub mod alert;
pub mod fixed;
pub mod tick;

pub use alert::{Action, Alert, AlertKind, AlertSink, AlertValue, Mode, Severity};
pub use fixed::{percent_of, Fixed, FixedError, Fraction, FIXED_DECIMALS, FIXED_SCALE};
pub use tick::{InstrumentId, KindMask, Side, Tick, TickKind, TickValues};
