//! Instrument reference data: what each instrument is (its underlying,
//! product type, quote currency, tier and other labels, tick size) and the
//! reference prices that change daily (prior close, settlement), plus named
//! groups of instruments.
//!
//! Reference data lives in the rules folder, in `[[instrument]]` and
//! `[[group]]` tables beside (or instead of) `[[rule]]` tables, so it is
//! validated, reloaded and versioned with the rules as one policy: a reload
//! that moves an instrument to another tier and the rules that select by
//! tier are swapped in together. An instrument missing from the reference
//! data still works as before: only rules that select by reference data
//! pass it by, and its underlying is unknown.
//!
//! - [`spec`]: the tables as written, with source spans for errors.
//! - [`RefData`]: the compiled, immutable view the engine and rules read.

pub mod spec;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::model::Fixed;

/// What kind of product an instrument is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Product {
    Spot,
    Perpetual,
    Future,
    Option,
    Index,
}

impl Product {
    pub const ALL: [Product; 5] = [
        Product::Spot,
        Product::Perpetual,
        Product::Future,
        Product::Option,
        Product::Index,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Product::Spot => "spot",
            Product::Perpetual => "perpetual",
            Product::Future => "future",
            Product::Option => "option",
            Product::Index => "index",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The names, for error messages.
    pub const NAMES: &'static str = "`spot`, `perpetual`, `future`, `option` or `index`";
}

impl fmt::Display for Product {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One instrument's reference data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstrumentRef {
    pub symbol: Arc<str>,
    pub underlying: Option<Arc<str>>,
    pub product: Option<Product>,
    pub quote: Option<Arc<str>>,
    /// A future's or option's expiry, ns since the epoch.
    pub expiry_ns: Option<i64>,
    pub tick_size: Option<Fixed>,
    /// The tier and any other labels the venue gives it.
    pub labels: BTreeMap<String, String>,
    /// The previous session's closing price.
    pub prior_close: Option<Fixed>,
    /// The last settlement price (futures).
    pub settlement: Option<Fixed>,
    /// When the instrument was listed, ns since the epoch.
    pub listing_ns: Option<i64>,
    /// Its weight in a weighted group aggregate (a cap-weighted basket).
    pub weight: Option<Fixed>,
    /// Numbers the venue sets per instrument (multipliers, thresholds,
    /// limits), read by `param(NAME)` in expressions; sorted by name.
    pub params: Vec<(Arc<str>, Fixed)>,
    /// Where it was defined: `file:line`.
    pub source: String,
}

/// A named set of instruments: `group:NAME` in rules.
#[derive(Clone, Debug)]
pub struct GroupRef {
    pub name: Arc<str>,
    /// Symbols or globs as written.
    pub patterns: Vec<String>,
    pub matcher: GlobSet,
    pub source: String,
}

impl InstrumentRef {
    /// The parameter `name` (`param(name)` in expressions), if given.
    #[inline]
    pub fn param(&self, name: &str) -> Option<Fixed> {
        self.params
            .binary_search_by(|(n, _)| (**n).cmp(name))
            .ok()
            .map(|i| self.params[i].1)
    }
}

impl GroupRef {
    pub fn contains(&self, symbol: &str) -> bool {
        self.matcher.is_match(symbol)
    }
}

/// Which instruments a rule acts on when it fires: `targets` in a rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Targets {
    /// Every instrument of the triggering instrument's underlying.
    Underlying,
    /// Every instrument of a named group.
    Group(Arc<str>),
    /// Every instrument.
    Market,
}

impl fmt::Display for Targets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Targets::Underlying => f.write_str("underlying"),
            Targets::Group(name) => write!(f, "group:{name}"),
            Targets::Market => f.write_str("market"),
        }
    }
}

/// All reference data of a rules folder. Immutable; replaced as a whole by
/// a reload.
#[derive(Clone, Debug, Default)]
pub struct RefData {
    by_symbol: HashMap<Arc<str>, Arc<InstrumentRef>>,
    /// Underlying -> its instruments' symbols, sorted.
    by_underlying: BTreeMap<Arc<str>, Vec<Arc<str>>>,
    groups: BTreeMap<Arc<str>, GroupRef>,
}

impl RefData {
    /// Reference data of the instruments and groups given. Symbols and
    /// group names are unique (checked when the tables were read).
    pub fn new(instruments: Vec<InstrumentRef>, groups: Vec<GroupRef>) -> Self {
        let mut by_underlying: BTreeMap<Arc<str>, Vec<Arc<str>>> = BTreeMap::new();
        let mut by_symbol = HashMap::with_capacity(instruments.len());
        for instrument in instruments {
            if let Some(u) = &instrument.underlying {
                by_underlying
                    .entry(u.clone())
                    .or_default()
                    .push(instrument.symbol.clone());
            }
            by_symbol.insert(instrument.symbol.clone(), Arc::new(instrument));
        }
        for symbols in by_underlying.values_mut() {
            symbols.sort();
        }
        let groups = groups.into_iter().map(|g| (g.name.clone(), g)).collect();
        RefData {
            by_symbol,
            by_underlying,
            groups,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_symbol.is_empty() && self.groups.is_empty()
    }

    /// Instruments with reference data.
    pub fn len(&self) -> usize {
        self.by_symbol.len()
    }

    pub fn instrument(&self, symbol: &str) -> Option<&Arc<InstrumentRef>> {
        self.by_symbol.get(symbol)
    }

    pub fn group(&self, name: &str) -> Option<&GroupRef> {
        self.groups.get(name)
    }

    pub fn groups(&self) -> impl Iterator<Item = &GroupRef> {
        self.groups.values()
    }

    /// Every instrument with reference data, by symbol.
    pub fn instruments(&self) -> impl Iterator<Item = &Arc<InstrumentRef>> {
        self.by_symbol.values()
    }

    /// The instruments of `underlying`, sorted by symbol.
    pub fn of_underlying(&self, underlying: &str) -> &[Arc<str>] {
        self.by_underlying.get(underlying).map_or(&[], Vec::as_slice)
    }

    /// The symbols a rule with `targets`, fired on `symbol`, acts on:
    /// `symbol` first, then the others sorted; `known` gives every
    /// instrument the engine has seen (asked only for `market`, and for
    /// group members without reference data).
    pub fn targets_of(&self, targets: &Targets, symbol: &Arc<str>, known: &dyn Fn() -> Vec<Arc<str>>) -> Vec<Arc<str>> {
        let mut out: Vec<Arc<str>> = match targets {
            Targets::Underlying => match self.instrument(symbol).and_then(|i| i.underlying.as_deref()) {
                Some(u) => self.of_underlying(u).to_vec(),
                None => Vec::new(),
            },
            Targets::Group(name) => {
                let Some(group) = self.group(name) else {
                    return vec![symbol.clone()];
                };
                let mut members: Vec<Arc<str>> = self
                    .by_symbol
                    .keys()
                    .filter(|s| group.contains(s))
                    .cloned()
                    .chain(known().into_iter().filter(|s| group.contains(s)))
                    .collect();
                members.sort();
                members.dedup();
                members
            }
            Targets::Market => {
                let mut all: Vec<Arc<str>> = self.by_symbol.keys().cloned().chain(known()).collect();
                all.sort();
                all.dedup();
                all
            }
        };
        out.retain(|s| s != symbol);
        out.insert(0, symbol.clone());
        out
    }
}

/// A glob matcher for group patterns; `None` with the first bad pattern.
pub(crate) fn globs(patterns: &[String]) -> Result<GlobSet, String> {
    let mut builder = GlobSetBuilder::new();
    for p in patterns {
        let glob = GlobBuilder::new(p)
            .literal_separator(false)
            .build()
            .map_err(|e| format!("`{p}` is not a valid glob: {}", e.kind()))?;
        builder.add(glob);
    }
    builder.build().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instrument(symbol: &str, underlying: &str, product: Product) -> InstrumentRef {
        InstrumentRef {
            symbol: symbol.into(),
            underlying: Some(underlying.into()),
            product: Some(product),
            quote: None,
            expiry_ns: None,
            tick_size: None,
            labels: BTreeMap::new(),
            prior_close: None,
            settlement: None,
            listing_ns: None,
            weight: None,
            params: Vec::new(),
            source: "t.toml:1".into(),
        }
    }

    #[test]
    fn targets_put_the_trigger_first_then_the_rest_in_order() {
        let data = RefData::new(
            vec![
                instrument("BTC-USDT-SWAP", "BTC", Product::Perpetual),
                instrument("BTC-USDT", "BTC", Product::Spot),
                instrument("BTC-USDT-241227", "BTC", Product::Future),
                instrument("ETH-USDT", "ETH", Product::Spot),
            ],
            vec![GroupRef {
                name: "majors".into(),
                patterns: vec!["BTC-USDT".into(), "ETH-*".into()],
                matcher: globs(&["BTC-USDT".into(), "ETH-*".into()]).unwrap(),
                source: "t.toml:9".into(),
            }],
        );
        let btc: Arc<str> = "BTC-USDT".into();
        let names = |v: Vec<Arc<str>>| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            names(data.targets_of(&Targets::Underlying, &btc, &Vec::new)),
            ["BTC-USDT", "BTC-USDT-241227", "BTC-USDT-SWAP"]
        );
        assert_eq!(
            names(data.targets_of(&Targets::Group("majors".into()), &btc, &|| vec!["ETH-USDC".into()])),
            ["BTC-USDT", "ETH-USDC", "ETH-USDT"]
        );
        let unknown: Arc<str> = "XRP-USDT".into();
        assert_eq!(
            names(data.targets_of(&Targets::Underlying, &unknown, &Vec::new)),
            ["XRP-USDT"],
            "no reference data: the rule acts on its own instrument"
        );
        assert_eq!(
            data.targets_of(&Targets::Market, &btc, &|| vec!["SOL-USDT".into()])
                .len(),
            5
        );
    }
}
