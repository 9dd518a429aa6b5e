//! The `[[instrument]]` and `[[group]]` tables of a rules folder's files,
//! as written (serde types that remember where each value was), and their
//! checks. Errors carry the byte offset of the value they are about; the
//! rules loader turns offsets into lines and columns.
//!
//! ```toml
//! [[instrument]]
//! symbol = "BTC-USDT-241227"
//! underlying = "BTC"
//! product = "future"
//! quote = "USDT"
//! expiry = "2024-12-27T08:00:00Z"
//! tick_size = "0.1"
//! labels = { tier = "1" }
//! prior_close = "65000"
//! settlement = "64950.5"
//!
//! [[group]]
//! name = "majors"
//! instruments = ["BTC-*", "ETH-*"]
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::model::Fixed;
use crate::state::instruments::check_symbol;

use super::{globs, GroupRef, InstrumentRef, Product};

/// A number written as a TOML integer, float or string.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(untagged)]
pub enum Decimal {
    Int(i64),
    Float(f64),
    Text(String),
}

impl Decimal {
    fn text(&self) -> String {
        match self {
            Decimal::Int(v) => v.to_string(),
            Decimal::Float(v) => v.to_string(),
            Decimal::Text(v) => v.clone(),
        }
    }
}

/// One `[[instrument]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstrumentSpec {
    pub symbol: Spanned<String>,
    pub underlying: Option<Spanned<String>>,
    pub product: Option<Spanned<String>>,
    pub quote: Option<Spanned<String>>,
    /// ISO-8601 (RFC 3339) time.
    pub expiry: Option<Spanned<String>>,
    pub tick_size: Option<Spanned<Decimal>>,
    pub labels: Option<BTreeMap<String, String>>,
    pub prior_close: Option<Spanned<Decimal>>,
    pub settlement: Option<Spanned<Decimal>>,
    /// ISO-8601 (RFC 3339) time.
    pub listing_time: Option<Spanned<String>>,
    pub weight: Option<Spanned<Decimal>>,
    /// Numbers read by `param(NAME)`: `{ multiplier_up = 5, trigger_protect = "0.05" }`.
    #[serde(default)]
    pub params: BTreeMap<String, Spanned<Decimal>>,
}

/// One `[[group]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    pub name: Spanned<String>,
    /// Symbols or globs.
    pub instruments: Spanned<Vec<String>>,
}

/// A problem with one value, at a byte offset of its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub offset: usize,
    pub message: String,
}

fn err(offset: usize, message: impl Into<String>) -> SpecError {
    SpecError {
        offset,
        message: message.into(),
    }
}

/// A name (underlying, quote, label) of 1 to 64 printable characters.
fn name(value: &Spanned<String>, key: &str, errors: &mut Vec<SpecError>) -> Option<std::sync::Arc<str>> {
    let text = value.get_ref();
    if text.is_empty() || text.len() > 64 || text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        errors.push(err(
            value.span().start,
            format!("`{key}` `{text}` must be 1 to 64 characters, none of them spaces or control characters"),
        ));
        return None;
    }
    Some(text.as_str().into())
}

fn price(value: &Option<Spanned<Decimal>>, key: &str, errors: &mut Vec<SpecError>) -> Option<Fixed> {
    let value = value.as_ref()?;
    let text = value.get_ref().text();
    match Fixed::parse(&text) {
        Ok(v) if v.is_positive() => Some(v),
        Ok(_) => {
            errors.push(err(
                value.span().start,
                format!("`{key}` must be above zero, got {text}"),
            ));
            None
        }
        Err(e) => {
            errors.push(err(value.span().start, format!("`{key}` `{text}` {e}")));
            None
        }
    }
}

fn time(value: &Option<Spanned<String>>, key: &str, errors: &mut Vec<SpecError>) -> Option<i64> {
    let value = value.as_ref()?;
    let text = value.get_ref();
    match text.parse::<jiff::Timestamp>() {
        Ok(t) => match i64::try_from(t.as_nanosecond()) {
            Ok(ns) => Some(ns),
            Err(_) => {
                errors.push(err(value.span().start, format!("`{key}` `{text}` is out of range")));
                None
            }
        },
        Err(e) => {
            errors.push(err(
                value.span().start,
                format!("`{key}` `{text}` is not an ISO-8601 time with an offset (e.g. 2024-12-27T08:00:00Z): {e}"),
            ));
            None
        }
    }
}

impl InstrumentSpec {
    /// The instrument's reference data, or every problem found.
    ///
    /// # Errors
    /// Each value that is malformed or out of range, at its offset.
    pub fn compile(&self, source: String) -> Result<InstrumentRef, Vec<SpecError>> {
        let mut errors = Vec::new();
        let symbol = self.symbol.get_ref();
        if let Err(e) = check_symbol(symbol) {
            errors.push(err(self.symbol.span().start, format!("`symbol` `{symbol}`: {e}")));
        }
        let underlying = self
            .underlying
            .as_ref()
            .and_then(|u| name(u, "underlying", &mut errors));
        let quote = self.quote.as_ref().and_then(|q| name(q, "quote", &mut errors));
        let product = self.product.as_ref().and_then(|p| {
            let parsed = Product::from_name(p.get_ref());
            if parsed.is_none() {
                errors.push(err(
                    p.span().start,
                    format!("unknown product `{}`: use {}", p.get_ref(), Product::NAMES),
                ));
            }
            parsed
        });
        let expiry_ns = time(&self.expiry, "expiry", &mut errors);
        if let (Some(p), Some(e)) = (product, &self.expiry) {
            if !matches!(p, Product::Future | Product::Option) {
                errors.push(err(
                    e.span().start,
                    format!("`expiry` applies to futures and options, not to a {p}"),
                ));
            }
        }
        let labels = self.labels.clone().unwrap_or_default();
        for (key, value) in &labels {
            if key.is_empty() || key.len() > 64 || value.len() > 128 {
                errors.push(err(
                    self.symbol.span().start,
                    format!("label `{key}` must have a name of 1 to 64 characters and a value of at most 128"),
                ));
            }
        }
        let mut params = Vec::with_capacity(self.params.len());
        for (key, value) in &self.params {
            let text = value.get_ref().text();
            let ok_name = !key.is_empty()
                && key.len() <= 64
                && key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok_name {
                errors.push(err(
                    value.span().start,
                    format!("parameter name `{key}` must be 1 to 64 lowercase letters, digits or `_`"),
                ));
                continue;
            }
            match Fixed::parse(&text) {
                Ok(v) => params.push((std::sync::Arc::from(key.as_str()), v)),
                Err(e) => errors.push(err(value.span().start, format!("parameter `{key}` `{text}` {e}"))),
            }
        }
        let instrument = InstrumentRef {
            symbol: symbol.as_str().into(),
            underlying,
            product,
            quote,
            expiry_ns,
            tick_size: price(&self.tick_size, "tick_size", &mut errors),
            labels,
            prior_close: price(&self.prior_close, "prior_close", &mut errors),
            settlement: price(&self.settlement, "settlement", &mut errors),
            listing_ns: time(&self.listing_time, "listing_time", &mut errors),
            weight: price(&self.weight, "weight", &mut errors),
            params,
            source,
        };
        if errors.is_empty() {
            Ok(instrument)
        } else {
            Err(errors)
        }
    }
}

impl GroupSpec {
    /// The group, or every problem found.
    ///
    /// # Errors
    /// A malformed name or pattern, at its offset.
    pub fn compile(&self, source: String) -> Result<GroupRef, Vec<SpecError>> {
        let mut errors = Vec::new();
        let group = self.name.get_ref();
        if group.is_empty()
            || group.len() > 64
            || !group.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            errors.push(err(
                self.name.span().start,
                format!("group name `{group}` must be 1 to 64 letters, digits, `-`, `_` or `.`"),
            ));
        }
        let patterns = self.instruments.get_ref();
        if patterns.is_empty() {
            errors.push(err(
                self.instruments.span().start,
                "`instruments` of a group must not be empty",
            ));
        }
        let matcher = match globs(patterns) {
            Ok(m) => Some(m),
            Err(e) => {
                errors.push(err(self.instruments.span().start, format!("`instruments`: {e}")));
                None
            }
        };
        match matcher {
            Some(matcher) if errors.is_empty() => Ok(GroupRef {
                name: group.as_str().into(),
                patterns: patterns.clone(),
                matcher,
                source,
            }),
            _ => Err(errors),
        }
    }
}
