//! Which field of a tick source plays which role, and how its time is
//! written: the [`FieldMapping`] a person gives (flags or a TOML file) and
//! the [`FieldRoles`] it resolves to against one source's field names.
//!
//! Nothing here knows a file format. The CSV reader resolves a mapping
//! against a header's column names (its `columns` module then places each
//! role at its column); a source of JSON messages resolves the same
//! mapping against a message's keys and looks each role's value up by the
//! key it names. So one mapping file describes a venue's trades however
//! they arrive.
//!
//! Every role has a default field name (`instrument`, `ts_ms`/`ts_ns`,
//! `seq`, `kind`, `price`, `size`, `side`, `bid`, `ask`, `bid_size`,
//! `ask_size`); a mapping renames roles, gives the time's unit, or fixes the
//! instrument for sources that carry none. Mark and index prices are the
//! `price` of a row whose `kind` is `mark` or `index`.
//!
//! ```
//! use airbag::tick_file::{FieldMapping, Role, TimeUnit};
//!
//! // A venue's trade message: {"s":"BTC-USDT","T":"2024-08-08T23:54:15.342Z","p":"65000.5","q":"0.25","t":"42"}
//! let mapping = FieldMapping {
//!     instrument: Some("s".into()),
//!     time: Some("T".into()),
//!     time_unit: Some(TimeUnit::Iso),
//!     price: Some("p".into()),
//!     size: Some("q".into()),
//!     seq: Some("t".into()),
//!     ..Default::default()
//! };
//! let roles = mapping.resolve(["s", "T", "p", "q", "t"]).unwrap();
//! assert_eq!(roles.field(Role::Price), Some("p"));
//! assert_eq!(roles.field(Role::Bid), None);
//! assert_eq!(roles.time_unit().parse("2024-08-08T23:54:15.342Z"), Ok(1_723_161_255_342_000_000));
//! ```

use std::path::Path;

use super::time::TimeUnit;
use crate::model::TickKind;

/// The part a field plays in a tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The symbol, e.g. `BTC-USDT`.
    Instrument,
    /// The event time, written as the mapping's [`TimeUnit`] says.
    Time,
    /// The source's per-instrument sequence number.
    Seq,
    /// `trade`, `quote`, `mark` or `index`.
    Kind,
    /// A trade's price, or the mark or index price.
    Price,
    /// A trade's size.
    Size,
    /// A trade's aggressor side: `buy`/`b`, `sell`/`s` or empty.
    Side,
    /// A trade's side as a buyer-is-maker flag.
    BuyerMaker,
    /// A quote's best bid.
    Bid,
    /// A quote's best ask.
    Ask,
    /// The size at the best bid.
    BidSize,
    /// The size at the best ask.
    AskSize,
}

impl Role {
    /// How many roles there are; `role as usize` is below it.
    pub const COUNT: usize = 12;

    /// Every role, in the order of their discriminants.
    pub const ALL: [Role; Role::COUNT] = [
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

    /// The role's key in a mapping (flags and TOML files): `instrument`,
    /// `time`, `bid_size`, ...
    pub fn key(self) -> &'static str {
        match self {
            Role::Instrument => "instrument",
            Role::Time => "time",
            Role::Seq => "seq",
            Role::Kind => "kind",
            Role::Price => "price",
            Role::Size => "size",
            Role::Side => "side",
            Role::BuyerMaker => "buyer_maker",
            Role::Bid => "bid",
            Role::Ask => "ask",
            Role::BidSize => "bid_size",
            Role::AskSize => "ask_size",
        }
    }

    /// The field name used when the mapping does not name one (`None`:
    /// the role must be mapped explicitly). Time has two, see
    /// [`FieldMapping::resolve`].
    fn default_field(self) -> Option<&'static str> {
        match self {
            Role::Time | Role::BuyerMaker => None,
            role => Some(role.key()),
        }
    }
}

/// Field names by role, as given on the command line or in a mapping
/// file. `None` means the role's default name. In TOML:
///
/// ```toml
/// symbol = "BTC-USDT"        # no instrument field: every row is BTC-USDT
/// time = "trade_time_ms"
/// time_unit = "ms"           # s, ms, us, ns, iso or auto (the default for a named time field)
/// seq = "trade_id"
/// size = "qty"
/// buyer_maker = "is_buyer_maker"
/// ```
///
/// Unknown keys are errors.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMapping {
    /// The instrument's field.
    pub instrument: Option<String>,
    /// A fixed instrument for every row (the source has no instrument
    /// field, or it is ignored).
    pub symbol: Option<String>,
    /// The event time's field.
    pub time: Option<String>,
    pub time_unit: Option<TimeUnit>,
    /// The per-instrument sequence number's field.
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

/// The name the CSV reader gives a [`FieldMapping`]: the fields are a
/// header's columns.
pub type ColumnMapping = FieldMapping;

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

/// Why a mapping does not fit a source's field names. The CSV reader
/// reports each in terms of its header (see [`super::TickFileErrorKind`]).
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The mapping is inconsistent in itself ([`FieldMapping::validate`]).
    #[error("{0}")]
    Mapping(#[from] MappingError),
    /// A field the mapping needs is named twice among the source's fields.
    #[error("field `{0}` appears twice")]
    Duplicate(String),
    /// A field the mapping names, or a required default, is absent.
    #[error("there is no `{0}` field")]
    Missing(String),
    /// No time field is named and both defaults are present.
    #[error("both `ts_ms` and `ts_ns` are present; give one")]
    TwoTimeFields,
}

impl FieldMapping {
    /// Reads a TOML mapping file.
    ///
    /// # Errors
    /// The file cannot be read, is not TOML, has unknown keys, or the
    /// mapping is inconsistent (see [`FieldMapping::validate`]).
    pub fn from_file(path: &Path) -> Result<Self, MappingError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| MappingError::Read {
            path: shown.clone(),
            source,
        })?;
        let mapping: FieldMapping = toml::from_str(&text).map_err(|e| MappingError::Parse {
            path: shown,
            message: e.message().to_owned(),
        })?;
        mapping.validate()?;
        Ok(mapping)
    }

    /// `self` with every role `over` names replaced by `over`'s.
    pub fn overlay(mut self, over: &FieldMapping) -> FieldMapping {
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

    /// Checks what can be checked without a source.
    ///
    /// # Errors
    /// Both an instrument field and a fixed symbol, both a side and a
    /// buyer-maker field, an empty name, or one field given two roles.
    pub fn validate(&self) -> Result<(), MappingError> {
        let invalid = |m: String| Err(MappingError::Invalid(m));
        if self.instrument.is_some() && self.symbol.is_some() {
            return invalid("give an instrument field or a fixed symbol, not both".into());
        }
        if self.side.is_some() && self.buyer_maker.is_some() {
            return invalid("give a side field or a buyer-maker field, not both".into());
        }
        if self.symbol.as_deref().is_some_and(|s| s.trim().is_empty()) {
            return invalid("the fixed symbol is empty".into());
        }
        let named: Vec<(Role, &str)> = Role::ALL
            .iter()
            .filter_map(|&r| self.field(r).map(|c| (r, c)))
            .collect();
        for (i, (role, name)) in named.iter().enumerate() {
            if name.trim().is_empty() {
                return invalid(format!("the {} field name is empty", role.key()));
            }
            if let Some((other, _)) = named[..i].iter().find(|(_, n)| n == name) {
                return invalid(format!(
                    "field `{name}` is mapped twice ({} and {})",
                    other.key(),
                    role.key()
                ));
            }
        }
        Ok(())
    }

    /// The field this mapping names for `role`, if it names one.
    pub fn field(&self, role: Role) -> Option<&str> {
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
        }
    }

    /// Resolves the mapping against a source's field names (a header's
    /// columns, a message's keys), compared exactly: which of them plays
    /// each role.
    ///
    /// Roles the mapping names must be present; the others take their
    /// default names when present. The time is the named field, else
    /// `ts_ms` (unit ms unless given) or `ts_ns` (unit ns), never both;
    /// a named time's unit is [`TimeUnit::Auto`] unless given. Without a
    /// kind field every row is a trade, so a price field is required,
    /// unless there is no price but a bid and an ask: then every row is a
    /// quote.
    ///
    /// # Errors
    /// The mapping is inconsistent, a name it needs appears twice, or a
    /// required field is absent.
    pub fn resolve<I>(&self, names: I) -> Result<FieldRoles, ResolveError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.validate()?;
        let names: Vec<I::Item> = names.into_iter().collect();
        let names: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
        let find = |name: &str| -> Result<Option<usize>, ResolveError> {
            let mut hits = names.iter().enumerate().filter(|(_, n)| **n == name).map(|(i, _)| i);
            let first = hits.next();
            if first.is_some() && hits.next().is_some() {
                return Err(ResolveError::Duplicate(name.to_owned()));
            }
            Ok(first)
        };
        let mut b = Builder {
            taken: vec![false; names.len()],
            fields: Default::default(),
            names: &names,
        };

        // Named roles first: a name given explicitly must exist.
        for role in Role::ALL {
            if let Some(name) = self.field(role) {
                let at = find(name)?.ok_or_else(|| ResolveError::Missing(name.to_owned()))?;
                b.assign(role, at);
            }
        }
        // The time: named, or `ts_ms` / `ts_ns`.
        let mut time_unit = self.time_unit.unwrap_or(TimeUnit::Auto);
        if self.time.is_none() {
            let ms = find("ts_ms")?.filter(|&i| !b.taken[i]);
            let ns = find("ts_ns")?.filter(|&i| !b.taken[i]);
            match (ms, ns) {
                (Some(_), Some(_)) => return Err(ResolveError::TwoTimeFields),
                (Some(at), None) => {
                    b.assign(Role::Time, at);
                    time_unit = self.time_unit.unwrap_or(TimeUnit::Ms);
                }
                (None, Some(at)) => {
                    b.assign(Role::Time, at);
                    time_unit = self.time_unit.unwrap_or(TimeUnit::Ns);
                }
                (None, None) => return Err(ResolveError::Missing("ts_ms".into())),
            }
        }
        // Other roles by their default names, on fields not yet taken.
        for role in Role::ALL {
            if b.has(role) || (role == Role::Instrument && self.symbol.is_some()) {
                continue;
            }
            if role == Role::Side && self.buyer_maker.is_some() {
                continue;
            }
            if let Some(at) = role.default_field().map(find).transpose()?.flatten() {
                if !b.taken[at] {
                    b.assign(role, at);
                }
            }
        }
        if self.symbol.is_none() && !b.has(Role::Instrument) {
            return Err(ResolveError::Missing("instrument".into()));
        }
        // Without a kind field every row is a trade (which needs a price),
        // or, in a source of best bids and asks without prices, a quote.
        let default_kind = if b.has(Role::Kind) || b.has(Role::Price) {
            TickKind::Trade
        } else if b.has(Role::Bid) && b.has(Role::Ask) {
            TickKind::Quote
        } else {
            return Err(ResolveError::Missing(
                self.price.clone().unwrap_or_else(|| "price".into()),
            ));
        };
        Ok(FieldRoles {
            fields: b.fields,
            time_unit,
            default_kind,
            symbol: self.symbol.as_deref().map(|s| s.trim().into()),
        })
    }
}

/// A [`FieldMapping`] resolved against one source's field names: which
/// field plays each role (by name, and by position among the names it was
/// resolved against), how the time is written, the kind of a row that
/// does not say, and the fixed instrument if there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRoles {
    /// Each role's field: its position and name.
    fields: [Option<(usize, Box<str>)>; Role::COUNT],
    time_unit: TimeUnit,
    default_kind: TickKind,
    symbol: Option<Box<str>>,
}

impl FieldRoles {
    /// The name of the field that plays `role`, if one does.
    #[inline]
    pub fn field(&self, role: Role) -> Option<&str> {
        self.fields[role as usize].as_ref().map(|(_, name)| &**name)
    }

    /// The position of `role`'s field among the names resolved against
    /// (a CSV column's index), if one plays it.
    #[inline]
    pub fn position(&self, role: Role) -> Option<usize> {
        self.fields[role as usize].as_ref().map(|(at, _)| *at)
    }

    /// Whether a field plays `role`.
    #[inline]
    pub fn has(&self, role: Role) -> bool {
        self.fields[role as usize].is_some()
    }

    /// The roles that a field plays, with their fields' names.
    pub fn roles(&self) -> impl Iterator<Item = (Role, &str)> + '_ {
        Role::ALL.into_iter().filter_map(|role| Some((role, self.field(role)?)))
    }

    /// How the time field is written.
    #[inline]
    pub fn time_unit(&self) -> TimeUnit {
        self.time_unit
    }

    /// The kind of a row without a kind value.
    #[inline]
    pub fn default_kind(&self) -> TickKind {
        self.default_kind
    }

    /// Every row's instrument, when the mapping fixes it.
    #[inline]
    pub fn symbol(&self) -> Option<&str> {
        self.symbol.as_deref()
    }
}

/// The roles assigned so far while resolving.
struct Builder<'n> {
    /// Whether each name has a role.
    taken: Vec<bool>,
    fields: [Option<(usize, Box<str>)>; Role::COUNT],
    names: &'n [&'n str],
}

impl Builder<'_> {
    fn assign(&mut self, role: Role, at: usize) {
        self.taken[at] = true;
        self.fields[role as usize] = Some((at, self.names[at].into()));
    }

    fn has(&self, role: Role) -> bool {
        self.fields[role as usize].is_some()
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
        let m = FieldMapping::from_file(&path).unwrap();
        assert_eq!(m.symbol.as_deref(), Some("BTC-USDT"));
        assert_eq!(m.time_unit, Some(TimeUnit::Ms));

        std::fs::write(&path, "tyme = \"x\"\n").unwrap();
        let err = FieldMapping::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("unknown field `tyme`"), "{err}");
        std::fs::write(&path, "time_unit = \"fortnights\"\n").unwrap();
        assert!(FieldMapping::from_file(&path).is_err());
        std::fs::write(&path, "symbol = \"X\"\ninstrument = \"sym\"\n").unwrap();
        assert!(FieldMapping::from_file(&path).is_err());
        std::fs::write(&path, "price = \"px\"\nsize = \"px\"\n").unwrap();
        let err = FieldMapping::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("mapped twice"), "{err}");
    }

    #[test]
    fn flags_overlay_a_file() {
        let file = FieldMapping {
            time: Some("a".into()),
            seq: Some("id".into()),
            ..Default::default()
        };
        let flags = FieldMapping {
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
    fn every_role_has_its_discriminant_as_index() {
        for (i, role) in Role::ALL.into_iter().enumerate() {
            assert_eq!(role as usize, i, "{role:?}");
        }
    }

    /// The keys of a JSON trade message, as a venue sends them (no CSV
    /// header involved): each role is found by its key, the time with the
    /// unit the mapping gives.
    #[test]
    fn a_mapping_resolves_against_the_keys_of_a_json_message() {
        let message: serde_json::Value = serde_json::from_str(
            r#"{"e":"trade","E":1723161255350,"s":"BTCUSDT","t":42,"p":"65000.5","q":"0.25","T":"2024-08-08T23:54:15.342+00:00","m":true}"#,
        )
        .unwrap();
        let keys: Vec<&str> = message.as_object().unwrap().keys().map(String::as_str).collect();
        let mapping = FieldMapping {
            instrument: Some("s".into()),
            time: Some("T".into()),
            time_unit: Some(TimeUnit::Iso),
            seq: Some("t".into()),
            price: Some("p".into()),
            size: Some("q".into()),
            buyer_maker: Some("m".into()),
            ..Default::default()
        };
        let roles = mapping.resolve(&keys).unwrap();
        let value = |role| message[roles.field(role).unwrap()].clone();
        assert_eq!(value(Role::Instrument), "BTCUSDT");
        assert_eq!(value(Role::Price), "65000.5");
        assert_eq!(value(Role::BuyerMaker), true);
        assert_eq!(value(Role::Seq), 42);
        let time = value(Role::Time);
        assert_eq!(
            roles.time_unit().parse(time.as_str().unwrap()),
            Ok(1_723_161_255_342_000_000)
        );
        assert_eq!(roles.default_kind(), TickKind::Trade);
        assert!(!roles.has(Role::Side) && !roles.has(Role::Bid) && !roles.has(Role::Kind));
        assert_eq!(
            roles.roles().map(|(role, _)| role).collect::<Vec<_>>(),
            [
                Role::Instrument,
                Role::Time,
                Role::Seq,
                Role::Price,
                Role::Size,
                Role::BuyerMaker
            ]
        );
        // Positions are among the names given, whatever their source.
        assert_eq!(roles.position(Role::Price).map(|at| keys[at]), Some("p"));

        // A message without the price key does not fit, and says which.
        let err = mapping.resolve(["s", "T", "t", "q", "m"]).unwrap_err();
        assert_eq!(err.to_string(), "there is no `p` field");
        // Default names apply to keys as to columns.
        let roles = FieldMapping::default()
            .resolve(["instrument", "ts_ns", "bid", "ask"].map(String::from))
            .unwrap();
        assert_eq!(
            (roles.field(Role::Time), roles.time_unit(), roles.default_kind()),
            (Some("ts_ns"), TimeUnit::Ns, TickKind::Quote)
        );
        assert!(matches!(
            FieldMapping::default().resolve(["instrument", "ts_ms", "ts_ns", "price"]),
            Err(ResolveError::TwoTimeFields)
        ));
    }
}
