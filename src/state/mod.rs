//! Per-instrument state: the symbol table and each instrument's last
//! values and rolling windows. Knows nothing of rules.
//!
//! - [`instruments`]: symbols interned to small ids, with a cap.
//! - [`instrument`]: one instrument's state.
//! - [`lock`]: the lock around each instrument's state.
//! - [`reorder`]: ticks held back to be applied in event-time order.
//! - [`store`]: a slab of per-instrument values by id, each behind its own
//!   lock, on its own cache lines.
//! - [`window`]: rolling windows over event time.

pub mod instrument;
pub mod instruments;
pub mod lock;
pub mod reorder;
pub mod store;
pub mod window;

pub use instrument::{InstrumentState, LastValues, SequenceStats, WindowSet, WindowSlot};
pub use instruments::{Instruments, SymbolError, MAX_SYMBOL_LEN};
pub use reorder::{HeldTick, ReorderBuffer};
pub use store::{HotPrefix, StateCell, StateStore};
pub use window::{Extreme, Field, Window, WindowKey, WindowNeeds};
