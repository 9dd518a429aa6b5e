//! Where each role sits in a CSV header: the [`Layout`] a
//! [`FieldMapping`] gives one file, once [`FieldMapping::resolve`] has
//! said which column plays which role.

use super::mapping::{FieldMapping, FieldRoles, ResolveError, Role};
use super::time::TimeUnit;
use super::TickFileErrorKind;
use crate::model::TickKind;

/// A mapping resolved against one header: what each column is.
#[derive(Debug)]
pub(super) struct Layout {
    /// The role of each column, in header order (`None`: ignored).
    pub roles: Vec<Option<Role>>,
    /// Which column plays each role, and how to read the time.
    pub fields: FieldRoles,
}

impl Layout {
    /// Resolves `mapping` against the header line `header`: its
    /// comma-separated names, trimmed.
    pub fn resolve(header: &str, mapping: &FieldMapping) -> Result<Layout, TickFileErrorKind> {
        let names: Vec<&str> = header.split(',').map(str::trim).collect();
        let fields = mapping.resolve(&names)?;
        let mut roles = vec![None; names.len()];
        for (role, _) in fields.roles() {
            if let Some(at) = fields.position(role) {
                roles[at] = Some(role);
            }
        }
        Ok(Layout { roles, fields })
    }

    #[inline]
    pub fn has(&self, role: Role) -> bool {
        self.fields.has(role)
    }

    /// The header name of `role`'s column (empty when absent).
    #[inline]
    pub fn name(&self, role: Role) -> &str {
        self.fields.field(role).unwrap_or_default()
    }

    #[inline]
    pub fn time_unit(&self) -> TimeUnit {
        self.fields.time_unit()
    }

    /// The kind of a row without a kind value.
    #[inline]
    pub fn default_kind(&self) -> TickKind {
        self.fields.default_kind()
    }

    /// Every row's instrument, when the mapping fixes it.
    #[inline]
    pub fn symbol(&self) -> Option<&str> {
        self.fields.symbol()
    }
}

/// A mapping that does not fit a header, in the header's terms.
impl From<ResolveError> for TickFileErrorKind {
    fn from(e: ResolveError) -> Self {
        match e {
            ResolveError::Mapping(e) => TickFileErrorKind::Mapping(e.to_string()),
            ResolveError::Duplicate(name) => TickFileErrorKind::DuplicateColumn(name),
            ResolveError::Missing(name) => TickFileErrorKind::MissingColumn(name),
            ResolveError::TwoTimeFields => TickFileErrorKind::TwoTimeColumns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binance_files_resolve_with_a_mapping() {
        let trades = FieldMapping {
            symbol: Some("BTC-USDT".into()),
            time: Some("trade_time_ms".into()),
            seq: Some("trade_id".into()),
            size: Some("qty".into()),
            ..Default::default()
        };
        let l = Layout::resolve(
            "local_ts_ns,event_time_ms,trade_time_ms,trade_id,price,qty,is_buyer_maker",
            &trades,
        )
        .unwrap();
        assert_eq!(l.roles[2], Some(Role::Time));
        assert_eq!(l.roles[4], Some(Role::Price));
        assert_eq!(l.time_unit(), TimeUnit::Auto);
        assert_eq!(l.default_kind(), TickKind::Trade);

        let book = FieldMapping {
            symbol: Some("BTC-USDT".into()),
            time: Some("local_ts_ns".into()),
            seq: Some("update_id".into()),
            bid: Some("bid_px".into()),
            ask: Some("ask_px".into()),
            bid_size: Some("bid_qty".into()),
            ask_size: Some("ask_qty".into()),
            ..Default::default()
        };
        let l = Layout::resolve(
            "local_ts_ns,event_time_ms,txn_time_ms,update_id,bid_px,bid_qty,ask_px,ask_qty",
            &book,
        )
        .unwrap();
        assert_eq!(l.default_kind(), TickKind::Quote);
        assert_eq!(l.name(Role::Ask), "ask_px");

        let err = Layout::resolve("a,b", &trades).unwrap_err().to_string();
        assert_eq!(err, "the header has no `trade_time_ms` column");
    }

    #[test]
    fn header_names_are_trimmed_and_unknown_ones_ignored() {
        let l = Layout::resolve(" size, price ,venue,instrument,ts_ns", &FieldMapping::default()).unwrap();
        assert_eq!(
            l.roles,
            [
                Some(Role::Size),
                Some(Role::Price),
                None,
                Some(Role::Instrument),
                Some(Role::Time)
            ]
        );
        assert_eq!((l.name(Role::Price), l.time_unit()), ("price", TimeUnit::Ns));
        let err = Layout::resolve("instrument,ts_ms,price,price", &FieldMapping::default()).unwrap_err();
        assert_eq!(err.to_string(), "column `price` appears twice in the header");
    }
}
