//! Per-instrument state: the symbol table and each instrument's last
//! values, rolling windows and rule states.
//!
//! - [`instruments`]: symbols interned to small ids, with a cap.
//! - [`instrument`]: one instrument's state.
//! - [`window`]: rolling windows over event time.

pub mod instrument;
pub mod instruments;
pub mod window;

pub use instrument::{BoundRule, InstrumentState, LastValues, WindowSet, WindowSlot};
pub use instruments::{Instruments, SymbolError, MAX_SYMBOL_LEN};
pub use window::{Extreme, Field, Window, WindowKey, WindowNeeds};
