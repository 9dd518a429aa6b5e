//! A steady synthetic market for the benches: prices jitter within 1% of
//! 100, so no bundled rule fires, and in a mixed feed every tenth tick of
//! each kind is a quote, a mark or an index price.

use airbag::model::{Fixed, TickValues};

/// Seed of [`SteadyMarket`]'s generator.
const SEED: u64 = 0x2545_f491_4f6c_dd1d;

/// Draws tick values from a seeded linear congruential generator.
pub struct SteadyMarket {
    lcg: u64,
    /// Quotes, marks and index prices among the trades.
    mixed: bool,
}

impl SteadyMarket {
    pub fn new(mixed: bool) -> Self {
        SteadyMarket { lcg: SEED, mixed }
    }

    /// The values of the `n`th tick (its kind follows `n % 10` in a mixed
    /// feed).
    pub fn values(&mut self, n: u64) -> TickValues {
        self.lcg = self
            .lcg
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let jitter = ((self.lcg >> 33) % 99) as i64; // 0..0.98
        let price = Fixed::from_raw(100 * 100_000_000 + jitter * 1_000_000);
        match (self.mixed, n % 10) {
            (true, 7) => TickValues::Quote {
                bid: price,
                ask: Fixed::from_raw(price.raw() + 1_000_000),
                bid_size: Fixed::ONE,
                ask_size: Fixed::ONE,
            },
            (true, 8) => TickValues::Mark { price },
            (true, 9) => TickValues::Index { price },
            _ => TickValues::Trade {
                price,
                size: Fixed::ONE,
                side: None,
            },
        }
    }
}
