//! Which column of a tick file means what: the [`ColumnMapping`] a person
//! gives (flags or a TOML file) and the [`Layout`] it resolves to against
//! one file's header.
//!
//! Every role has a default column name (`instrument`, `ts_ms`/`ts_ns`,
//! `seq`, `kind`, `price`, `size`, `side`, `bid`, `ask`, `bid_size`,
//! `ask_size`); a mapping renames roles, gives the time's unit, or fixes the
//! instrument for files that have no instrument column.

use std::path::Path;

use super::time::TimeUnit;
use super::TickFileErrorKind;
use crate::model::TickKind;

/// What a header column means. `Ignored` columns are skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    Instrument,
    Time,
    Seq,
    Kind,
    Price,
    Size,
    Side,
    BuyerMaker,
    Bid,
    Ask,
    BidSize,
    AskSize,
    Ignored,
}

pub(super) const ROLE_COUNT: usize = Role::Ignored as usize;

const ROLES: [Role; ROLE_COUNT] = [
    Role::Instrument,
    Role::Time,
    Role::Seq,
    Role::Kind,
    Role::Price,
    Role::Size,
    Role::Side,
    Role::BuyerMaker,
    Role::Bid,
    Role::Ask,
    Role::BidSize,
    Role::AskSize,
];

impl Role {
    /// The column name used when the mapping does not name one (`None`:
    /// the role must be mapped explicitly). Time has two, see
    /// [`Layout::resolve`].
    fn default_column(self) -> Option<&'static str> {
        match self {
            Role::Instrument => Some("instrument"),
            Role::Seq => Some("seq"),
            Role::Kind => Some("kind"),
            Role::Price => Some("price"),
            Role::Size => Some("size"),
            Role::Side => Some("side"),
            Role::Bid => Some("bid"),
            Role::Ask => Some("ask"),
            Role::BidSize => Some("bid_size"),
            Role::AskSize => Some("ask_size"),
            Role::Time | Role::BuyerMaker | Role::Ignored => None,
        }
    }
}

/// Column names by role, as given on the command line or in a mapping
/// file. `None` means the role's default name. In TOML:
///
/// ```toml
/// symbol = "BTC-USDT"        # no instrument column: every row is BTC-USDT
/// time = "trade_time_ms"
/// time_unit = "ms"           # s, ms, us, ns, iso or auto (the default for a named time column)
/// seq = "trade_id"
/// size = "qty"
/// buyer_maker = "is_buyer_maker"
/// ```
///
/// Unknown keys are errors.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnMapping {
    /// The instrument's column.
    pub instrument: Option<String>,
    /// A fixed instrument for every row (the file has no instrument
    /// column, or it is ignored).
    pub symbol: Option<String>,
    /// The event time's column.
    pub time: Option<String>,
    pub time_unit: Option<TimeUnit>,
    /// The per-instrument sequence number's column.
    pub seq: Option<String>,
    pub kind: Option<String>,
    pub price: Option<String>,
    pub size: Option<String>,
    /// Aggressor side: `buy`/`b`, `sell`/`s` or empty.
    pub side: Option<String>,
    /// The side as a buyer-is-maker flag (`1`/`true`: the aggressor sold;
    /// `0`/`false`: it bought), as Binance writes it.
    pub buyer_maker: Option<String>,
    pub bid: Option<String>,
    pub ask: Option<String>,
    pub bid_size: Option<String>,
    pub ask_size: Option<String>,
}

/// A mapping that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("cannot read mapping file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("mapping file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl ColumnMapping {
    /// Reads a TOML mapping file.
    ///
    /// # Errors
    /// The file cannot be read, is not TOML, has unknown keys, or the
    /// mapping is inconsistent (see [`ColumnMapping::validate`]).
    pub fn from_file(path: &Path) -> Result<Self, MappingError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| MappingError::Read {
            path: shown.clone(),
            source,
        })?;
        let mapping: ColumnMapping = toml::from_str(&text).map_err(|e| MappingError::Parse {
            path: shown,
            message: e.message().to_owned(),
        })?;
        mapping.validate()?;
        Ok(mapping)
    }

    /// `self` with every role `over` names replaced by `over`'s.
    pub fn overlay(mut self, over: &ColumnMapping) -> ColumnMapping {
        let pairs: [(&mut Option<String>, &Option<String>); 13] = [
            (&mut self.instrument, &over.instrument),
            (&mut self.symbol, &over.symbol),
            (&mut self.time, &over.time),
            (&mut self.seq, &over.seq),
            (&mut self.kind, &over.kind),
            (&mut self.price, &over.price),
            (&mut self.size, &over.size),
            (&mut self.side, &over.side),
            (&mut self.buyer_maker, &over.buyer_maker),
            (&mut self.bid, &over.bid),
            (&mut self.ask, &over.ask),
            (&mut self.bid_size, &over.bid_size),
            (&mut self.ask_size, &over.ask_size),
        ];
        for (mine, theirs) in pairs {
            if theirs.is_some() {
                mine.clone_from(theirs);
            }
        }
        if over.time_unit.is_some() {
            self.time_unit = over.time_unit;
        }
        self
    }

    /// Checks what can be checked without a file.
    ///
    /// # Errors
    /// Both an instrument column and a fixed symbol, both a side and a
    /// buyer-maker column, an empty name, or one column given two roles.
    pub fn validate(&self) -> Result<(), MappingError> {
        let invalid = |m: String| Err(MappingError::Invalid(m));
        if self.instrument.is_some() && self.symbol.is_some() {
            return invalid("give an instrument column or a fixed symbol, not both".into());
        }
        if self.side.is_some() && self.buyer_maker.is_some() {
            return invalid("give a side column or a buyer-maker column, not both".into());
        }
        if self.symbol.as_deref().is_some_and(|s| s.trim().is_empty()) {
            return invalid("the fixed symbol is empty".into());
        }
        let named: Vec<(Role, &str)> = ROLES.iter().filter_map(|&r| self.column(r).map(|c| (r, c))).collect();
        for (i, (role, name)) in named.iter().enumerate() {
            if name.trim().is_empty() {
                return invalid(format!("the {role:?} column name is empty").to_lowercase());
            }
            if let Some((other, _)) = named[..i].iter().find(|(_, n)| n == name) {
                return invalid(format!("column `{name}` is mapped twice ({other:?} and {role:?})"));
            }
        }
        Ok(())
    }

    fn column(&self, role: Role) -> Option<&str> {
        match role {
            Role::Instrument => self.instrument.as_deref(),
            Role::Time => self.time.as_deref(),
            Role::Seq => self.seq.as_deref(),
            Role::Kind => self.kind.as_deref(),
            Role::Price => self.price.as_deref(),
            Role::Size => self.size.as_deref(),
            Role::Side => self.side.as_deref(),
            Role::BuyerMaker => self.buyer_maker.as_deref(),
            Role::Bid => self.bid.as_deref(),
            Role::Ask => self.ask.as_deref(),
            Role::BidSize => self.bid_size.as_deref(),
            Role::AskSize => self.ask_size.as_deref(),
            Role::Ignored => None,
        }
    }
}

/// A mapping resolved against one header: what each column is.
#[derive(Debug)]
pub(super) struct Layout {
    /// The role of each column, in header order.
    pub roles: Vec<Role>,
    /// The header name of each role's column (empty when absent).
    pub names: [Box<str>; ROLE_COUNT],
    pub present: [bool; ROLE_COUNT],
    pub time_unit: TimeUnit,
    /// The kind of a row without a kind value.
    pub default_kind: TickKind,
    /// Every row's instrument, when the mapping fixes it.
    pub symbol: Option<Box<str>>,
}

impl Layout {
    /// Resolves `mapping` against the header line `header`.
    pub fn resolve(header: &str, mapping: &ColumnMapping) -> Result<Layout, TickFileErrorKind> {
        mapping
            .validate()
            .map_err(|e| TickFileErrorKind::Mapping(e.to_string()))?;
        let header: Vec<&str> = header.split(',').map(str::trim).collect();
        let mut b = Builder {
            roles: vec![Role::Ignored; header.len()],
            names: Default::default(),
            present: [false; ROLE_COUNT],
            header: &header,
        };
        let find = |name: &str| -> Result<Option<usize>, TickFileErrorKind> {
            let mut hits = header.iter().enumerate().filter(|(_, h)| **h == name).map(|(i, _)| i);
            let first = hits.next();
            if first.is_some() && hits.next().is_some() {
                return Err(TickFileErrorKind::DuplicateColumn(name.to_owned()));
            }
            Ok(first)
        };

        // Named roles first: a name given explicitly must exist.
        for role in ROLES {
            if let Some(name) = mapping.column(role) {
                let at = find(name)?.ok_or_else(|| TickFileErrorKind::MissingColumn(name.to_owned()))?;
                b.assign(role, at);
            }
        }
        // The time: named, or `ts_ms` / `ts_ns`.
        let mut time_unit = mapping.time_unit.unwrap_or(TimeUnit::Auto);
        if mapping.time.is_none() {
            let ms = find("ts_ms")?.filter(|&i| b.roles[i] == Role::Ignored);
            let ns = find("ts_ns")?.filter(|&i| b.roles[i] == Role::Ignored);
            match (ms, ns) {
                (Some(_), Some(_)) => return Err(TickFileErrorKind::TwoTimeColumns),
                (Some(at), None) => {
                    b.assign(Role::Time, at);
                    time_unit = mapping.time_unit.unwrap_or(TimeUnit::Ms);
                }
                (None, Some(at)) => {
                    b.assign(Role::Time, at);
                    time_unit = mapping.time_unit.unwrap_or(TimeUnit::Ns);
                }
                (None, None) => return Err(TickFileErrorKind::MissingColumn("ts_ms".into())),
            }
        }
        // Other roles by their default names, on columns not yet taken.
        for role in ROLES {
            if b.present[role as usize] || (role == Role::Instrument && mapping.symbol.is_some()) {
                continue;
            }
            if role == Role::Side && mapping.buyer_maker.is_some() {
                continue;
            }
            if let Some(at) = role.default_column().map(find).transpose()?.flatten() {
                if b.roles[at] == Role::Ignored {
                    b.assign(role, at);
                }
            }
        }
        if mapping.symbol.is_none() && !b.present[Role::Instrument as usize] {
            return Err(TickFileErrorKind::MissingColumn("instrument".into()));
        }
        // Without a kind column every row is a trade (which needs a price),
        // or, in a file of best bids and asks without prices, a quote.
        let present = b.present;
        let default_kind = if present[Role::Kind as usize] || present[Role::Price as usize] {
            TickKind::Trade
        } else if present[Role::Bid as usize] && present[Role::Ask as usize] {
            TickKind::Quote
        } else {
            return Err(TickFileErrorKind::MissingColumn(
                mapping.price.clone().unwrap_or_else(|| "price".into()),
            ));
        };
        Ok(Layout {
            roles: b.roles,
            names: b.names,
            present,
            time_unit,
            default_kind,
            symbol: mapping.symbol.as_deref().map(|s| s.trim().into()),
        })
    }

    pub fn has(&self, role: Role) -> bool {
        self.present[role as usize]
    }

    pub fn name(&self, role: Role) -> &str {
        &self.names[role as usize]
    }
}

/// The roles assigned so far while resolving a header.
struct Builder<'h> {
    roles: Vec<Role>,
    names: [Box<str>; ROLE_COUNT],
    present: [bool; ROLE_COUNT],
    header: &'h [&'h str],
}

impl Builder<'_> {
    fn assign(&mut self, role: Role, at: usize) {
        self.roles[at] = role;
        self.names[role as usize] = self.header[at].into();
        self.present[role as usize] = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_files_reject_unknown_keys_and_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        std::fs::write(
            &path,
            "symbol = \"BTC-USDT\"\ntime = \"trade_time_ms\"\ntime_unit = \"ms\"\n",
        )
        .unwrap();
        let m = ColumnMapping::from_file(&path).unwrap();
        assert_eq!(m.symbol.as_deref(), Some("BTC-USDT"));
        assert_eq!(m.time_unit, Some(TimeUnit::Ms));

        std::fs::write(&path, "tyme = \"x\"\n").unwrap();
        let err = ColumnMapping::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("unknown field `tyme`"), "{err}");
        std::fs::write(&path, "time_unit = \"fortnights\"\n").unwrap();
        assert!(ColumnMapping::from_file(&path).is_err());
        std::fs::write(&path, "symbol = \"X\"\ninstrument = \"sym\"\n").unwrap();
        assert!(ColumnMapping::from_file(&path).is_err());
        std::fs::write(&path, "price = \"px\"\nsize = \"px\"\n").unwrap();
        let err = ColumnMapping::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("mapped twice"), "{err}");
    }

    #[test]
    fn flags_overlay_a_file() {
        let file = ColumnMapping {
            time: Some("a".into()),
            seq: Some("id".into()),
            ..Default::default()
        };
        let flags = ColumnMapping {
            time: Some("b".into()),
            time_unit: Some(TimeUnit::Ns),
            ..Default::default()
        };
        let m = file.overlay(&flags);
        assert_eq!(
            (m.time.as_deref(), m.seq.as_deref(), m.time_unit),
            (Some("b"), Some("id"), Some(TimeUnit::Ns))
        );
    }

    #[test]
    fn binance_files_resolve_with_a_mapping() {
        let trades = ColumnMapping {
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
        assert_eq!(l.roles[2], Role::Time);
        assert_eq!(l.roles[4], Role::Price);
        assert_eq!(l.time_unit, TimeUnit::Auto);
        assert_eq!(l.default_kind, TickKind::Trade);

        let book = ColumnMapping {
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
        assert_eq!(l.default_kind, TickKind::Quote);
        assert_eq!(l.name(Role::Ask), "ask_px");

        let err = Layout::resolve("a,b", &trades).unwrap_err().to_string();
        assert_eq!(err, "the header has no `trade_time_ms` column");
    }
}
