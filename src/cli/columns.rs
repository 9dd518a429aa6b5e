//! The column flags of the commands that read tick files (`replay`,
//! `kafka produce`): a mapping file, overridden flag by flag, giving the
//! [`FieldMapping`] of [`crate::tick_file`].

use std::path::PathBuf;

use crate::tick_file::{FieldMapping, TimeUnit};

/// Which column plays which role in a tick file.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Columns")]
pub struct ColumnArgs {
    /// Column mapping as a TOML file (keys as the flags below without
    /// `-col`: `symbol`, `time`, `time_unit`, `seq`, `size`, ...); flags
    /// override it.
    #[arg(long, value_name = "FILE")]
    pub mapping: Option<PathBuf>,
    /// Every row's instrument, for files without an instrument column.
    #[arg(long, value_name = "NAME")]
    pub symbol: Option<String>,
    /// The instrument column [default: instrument].
    #[arg(long, value_name = "COL")]
    pub instrument_col: Option<String>,
    /// The event time column [default: ts_ms or ts_ns].
    #[arg(long, value_name = "COL")]
    pub time_col: Option<String>,
    /// The time's unit: s, ms, us, ns, iso or auto [default: ms for
    /// ts_ms, ns for ts_ns, auto for a named column].
    #[arg(long, value_name = "UNIT")]
    pub time_unit: Option<TimeUnit>,
    /// The per-instrument sequence number column [default: seq; without
    /// one, ticks are numbered per instrument in merged order].
    #[arg(long, value_name = "COL")]
    pub seq_col: Option<String>,
    /// The tick kind column (trade, quote, mark, index) [default: kind].
    #[arg(long, value_name = "COL")]
    pub kind_col: Option<String>,
    /// The trade (or mark, index) price column [default: price].
    #[arg(long, value_name = "COL")]
    pub price_col: Option<String>,
    /// The trade size column [default: size].
    #[arg(long, value_name = "COL")]
    pub size_col: Option<String>,
    /// The aggressor side column (buy/sell) [default: side].
    #[arg(long, value_name = "COL")]
    pub side_col: Option<String>,
    /// A buyer-is-maker flag column (1/true: the aggressor sold).
    #[arg(long, value_name = "COL")]
    pub buyer_maker_col: Option<String>,
    /// The best bid column [default: bid].
    #[arg(long, value_name = "COL")]
    pub bid_col: Option<String>,
    /// The best ask column [default: ask].
    #[arg(long, value_name = "COL")]
    pub ask_col: Option<String>,
    /// The best bid size column [default: bid_size].
    #[arg(long, value_name = "COL")]
    pub bid_size_col: Option<String>,
    /// The best ask size column [default: ask_size].
    #[arg(long, value_name = "COL")]
    pub ask_size_col: Option<String>,
}

impl ColumnArgs {
    /// The column mapping: the file's, overridden by flags.
    ///
    /// # Errors
    /// The mapping file cannot be read, or the mapping is inconsistent.
    pub fn mapping(&self) -> anyhow::Result<FieldMapping> {
        let base = match &self.mapping {
            Some(path) => FieldMapping::from_file(path)?,
            None => FieldMapping::default(),
        };
        let flags = FieldMapping {
            instrument: self.instrument_col.clone(),
            symbol: self.symbol.clone(),
            time: self.time_col.clone(),
            time_unit: self.time_unit,
            seq: self.seq_col.clone(),
            kind: self.kind_col.clone(),
            price: self.price_col.clone(),
            size: self.size_col.clone(),
            side: self.side_col.clone(),
            buyer_maker: self.buyer_maker_col.clone(),
            bid: self.bid_col.clone(),
            ask: self.ask_col.clone(),
            bid_size: self.bid_size_col.clone(),
            ask_size: self.ask_size_col.clone(),
        };
        let mapping = base.overlay(&flags);
        mapping.validate()?;
        Ok(mapping)
    }
}
