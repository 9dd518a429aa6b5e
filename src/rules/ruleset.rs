//! The immutable compiled ruleset the engine evaluates.

use std::sync::Arc;

use crate::refdata::RefData;
use crate::state::{WindowKey, WindowNeeds};

use super::CompiledRule;

/// A rule file a ruleset was built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    /// File name (relative to the rules folder) or the name given to a text.
    pub name: String,
    /// SHA-256 of the file's bytes, hex.
    pub sha256: String,
}

/// Every rule of a rules folder, compiled; swapped in as a whole.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    /// Set by the engine when the ruleset is installed (1, 2, ...); 0 before.
    pub version: u64,
    /// In evaluation order: by file name, then position in the file. Alerts
    /// raised by one tick come out in this order.
    pub rules: Vec<Arc<CompiledRule>>,
    /// The shared window table, indexed by `WindowSlot`.
    pub windows: Vec<(WindowKey, WindowNeeds)>,
    pub sources: Vec<SourceFile>,
    /// The reference data of the same files: scopes that select by it and
    /// targets are resolved against it.
    pub refdata: Arc<RefData>,
}

impl RuleSet {
    pub fn rule(&self, id: &str) -> Option<&Arc<CompiledRule>> {
        self.rules.iter().find(|r| &*r.id == id)
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}
