//! Per-instrument state: the symbol table and each instrument's last
//! values, rolling windows and rule states.
//!
//! - [`instruments`]: symbols interned to small ids, with a cap.
//! - [`instrument`]: one instrument's state.
//! - [`lock`]: the lock around each instrument's state.
//! - [`reorder`]: ticks held back to be applied in event-time order.
//! - [`store`]: every instrument's state, by id.
//! - [`window`]: rolling windows over event time.

pub mod instrument;
pub mod instruments;
pub mod lock;
pub mod reorder;
pub mod store;
pub mod window;

pub use instrument::{BoundRule, BoundRules, InstrumentState, LastValues, SequenceStats, WindowSet, WindowSlot};
pub use instruments::{Instruments, SymbolError, MAX_SYMBOL_LEN};
pub use reorder::{HeldTick, ReorderBuffer};
pub use store::{StateCell, StateStore};
pub use window::{Extreme, Field, Window, WindowKey, WindowNeeds};
