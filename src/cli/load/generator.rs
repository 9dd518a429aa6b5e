//! Synthetic ticks: per-instrument random walks, crashes at planned
//! times, batches encoded straight into a reused buffer.

use super::*;

/// What every connection's generator shares.
#[derive(Debug)]
pub(super) struct Plan {
    pub(super) instruments: u32,
    pub(super) connections: u32,
    pub(super) batch: usize,
    pub(super) duration: Duration,
    pub(super) crash_every: f64,
    pub(super) crash_count: u64,
    /// Each crash tick multiplies the price by this.
    pub(super) step_factor: f64,
    /// Wall-clock time at the start, ns since the epoch.
    pub(super) epoch_ns: i64,
    /// First sequence number minus one, for every instrument.
    pub(super) seq_base: u64,
    /// The instrument crash 0 hits: the wall-clock crash slot of the run's
    /// first crash, modulo the instrument count.
    pub(super) crash_offset: u64,
    /// `--market-crash-at`: when every instrument crashes at once.
    pub(super) market_crash_at: Option<Duration>,
}

/// Most crashes of a market crash in one batch: with their ticks the batch
/// stays within the server's default `max_batch_ticks` (10,000).
pub(super) fn market_crash_chunk(batch: usize) -> usize {
    (10_000usize.saturating_sub(batch) / (CRASH_STEPS as usize + 1)).max(1)
}

impl Plan {
    /// When crash `j` is due, from the start.
    pub(super) fn crash_at(&self, j: u64) -> Duration {
        Duration::from_secs_f64(self.crash_every * (j + 1) as f64)
    }

    /// The instrument crash `j` hits.
    pub(super) fn crash_instrument(&self, j: u64) -> u32 {
        ((self.crash_offset + j) % u64::from(self.instruments)) as u32
    }

    pub(super) fn owner(&self, instrument: u32) -> u32 {
        instrument % self.connections
    }

    /// The first crash at or after `from` that connection `conn` injects.
    pub(super) fn next_crash(&self, conn: u32, from: u64) -> Option<u64> {
        let end = self.crash_count.min(from.saturating_add(u64::from(self.instruments)));
        (from..end).find(|&j| self.owner(self.crash_instrument(j)) == conn)
    }
}

/// SplitMix64: a small, fast, seedable generator; plenty for a random walk.
#[derive(Debug)]
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// One instrument's random walk, in raw [`Fixed`] units.
#[derive(Debug)]
pub(super) struct Walker {
    pub(super) symbol: String,
    /// Where the price started: a crash never takes it below a quarter.
    pub(super) initial: i64,
    /// The walk's centre.
    pub(super) base: i64,
    /// One basis point of `base`.
    pub(super) step: i64,
    /// Steps away from `base`, within ±[`WALK_BAND_BP`].
    pub(super) offset: i32,
    /// The last sequence number sent.
    pub(super) seq: u64,
}

impl Walker {
    pub(super) fn new(index: u32, seq_base: u64) -> Self {
        // Prices from 100 to 999 so instruments differ.
        let initial = (100 + i64::from(index % 900)) * Fixed::ONE.raw();
        let mut w = Walker {
            symbol: symbol(index),
            initial,
            base: initial,
            step: 0,
            offset: 0,
            seq: seq_base,
        };
        w.rebase(initial);
        w
    }

    pub(super) fn price(&self) -> i64 {
        self.base + i64::from(self.offset) * self.step
    }

    pub(super) fn rebase(&mut self, price: i64) {
        self.base = price;
        self.step = (price / 10_000).max(1);
        self.offset = 0;
    }

    /// One step of the walk: -1, 0 or +1 basis point, turned back at the
    /// edge of the band.
    pub(super) fn advance(&mut self, random: u64) -> i64 {
        let dir = (random % 3) as i32 - 1;
        let next = self.offset + dir;
        self.offset = if next.abs() > WALK_BAND_BP {
            self.offset - dir
        } else {
            next
        };
        self.price()
    }
}

/// Builds one connection's batches.
pub(super) struct Generator {
    pub(super) plan: Arc<Plan>,
    pub(super) conn: u32,
    /// This connection's instruments: global index `conn + i × K` is
    /// `walkers[i]`.
    pub(super) walkers: Vec<Walker>,
    pub(super) cursor: usize,
    pub(super) rng: Rng,
    pub(super) next_crash: Option<u64>,
    /// In a market crash: the next of this connection's walkers to crash;
    /// `walkers.len()` once all have.
    pub(super) market_cursor: usize,
    /// The one `Tick` message every tick is encoded from.
    pub(super) tick: proto::Tick,
    pub(super) buf: BytesMut,
    pub(super) batch_id: u64,
}

/// A crash just generated, before it is sent.
pub(super) struct NewCrash {
    pub(super) instrument: u32,
    pub(super) first_seq: u64,
    pub(super) last_seq: u64,
}

impl Generator {
    pub(super) fn new(plan: Arc<Plan>, conn: u32, seed: u64) -> Self {
        let walkers: Vec<Walker> = (conn..plan.instruments)
            .step_by(plan.connections as usize)
            .map(|i| Walker::new(i, plan.seq_base))
            .collect();
        let next_crash = plan.next_crash(conn, 0);
        let tick = proto::Tick {
            instrument: String::with_capacity(16),
            event_time_ns: 0,
            seq: 0,
            values: Some(proto::tick::Values::Trade(proto::Trade::default())),
        };
        Generator {
            buf: BytesMut::with_capacity(plan.batch * 48 + 64),
            plan,
            conn,
            walkers,
            cursor: 0,
            rng: Rng(seed ^ u64::from(conn).wrapping_mul(0xA076_1D64_78BD_642F)),
            next_crash,
            market_cursor: 0,
            tick,
            batch_id: 0,
        }
    }

    /// After a failed stream: each instrument goes on from the server's
    /// last applied sequence number (ticks lost in flight are numbered
    /// again, so the server sees no gap and no duplicate).
    pub(super) fn resume_from(&mut self, last_applied: &std::collections::HashMap<String, u64>) {
        for walker in &mut self.walkers {
            walker.seq = last_applied.get(&walker.symbol).copied().unwrap_or(self.plan.seq_base);
        }
    }

    /// Encodes the next batch: any crashes due by `elapsed`, then `batch`
    /// walk ticks, all at event time `time_ns`. Returns the encoded
    /// `TickBatch` and its tick count; new crashes go to `crashes`.
    pub(super) fn build_batch(
        &mut self,
        elapsed: Duration,
        time_ns: i64,
        crashes: &mut Vec<NewCrash>,
    ) -> (Bytes, usize) {
        self.batch_id += 1;
        self.buf.clear();
        prost::encoding::uint64::encode(1, &self.batch_id, &mut self.buf);
        let mut count = 0;
        while let Some(j) = self.next_crash {
            if self.plan.crash_at(j) > elapsed {
                break;
            }
            count += self.crash(self.plan.crash_instrument(j), time_ns, crashes);
            self.next_crash = self.plan.next_crash(self.conn, j + 1);
        }
        if self.plan.market_crash_at.is_some_and(|at| at <= elapsed) {
            count += self.market_crash(time_ns, crashes);
        }
        for _ in 0..self.plan.batch {
            let i = self.cursor;
            self.cursor = if i + 1 == self.walkers.len() { 0 } else { i + 1 };
            let random = self.rng.next_u64();
            let price = self.walkers[i].advance(random);
            let size = ((random >> 20) % 1_000 + 1) * 100_000; // 0.001 to 1
            self.push_tick(i, price, size as i64, time_ns);
            count += 1;
        }
        (self.buf.split().freeze(), count)
    }

    /// In a market crash, the next chunk of this connection's instruments
    /// that have not crashed yet (all of them within a few batches, at the
    /// same event time); returns the number of ticks added.
    fn market_crash(&mut self, time_ns: i64, crashes: &mut Vec<NewCrash>) -> usize {
        let end = (self.market_cursor + market_crash_chunk(self.plan.batch)).min(self.walkers.len());
        let mut added = 0;
        for i in self.market_cursor..end {
            let instrument = self.conn + i as u32 * self.plan.connections;
            added += self.crash(instrument, time_ns, crashes);
        }
        self.market_cursor = end;
        added
    }

    /// Appends a crash of `instrument` (owned by this connection); returns
    /// the number of ticks added.
    pub(super) fn crash(&mut self, instrument: u32, time_ns: i64, crashes: &mut Vec<NewCrash>) -> usize {
        let i = (instrument / self.plan.connections) as usize;
        let mut added = 0;
        let mut price = self.walkers[i].price();
        let initial = self.walkers[i].initial;
        if price < initial / 4 {
            price = initial;
            self.push_tick(i, price, Fixed::ONE.raw(), time_ns);
            added += 1;
        }
        let first_seq = self.walkers[i].seq + 1;
        for _ in 0..CRASH_STEPS {
            price = ((price as f64) * self.plan.step_factor) as i64;
            self.push_tick(i, price.max(1), Fixed::ONE.raw(), time_ns);
            added += 1;
        }
        self.walkers[i].rebase(price.max(1));
        crashes.push(NewCrash {
            instrument,
            first_seq,
            last_seq: self.walkers[i].seq,
        });
        added
    }

    /// Encodes one trade of walker `i` as field 2 of the batch.
    pub(super) fn push_tick(&mut self, i: usize, price: i64, size: i64, time_ns: i64) {
        let w = &mut self.walkers[i];
        w.seq += 1;
        self.tick.instrument.clear();
        self.tick.instrument.push_str(&w.symbol);
        self.tick.event_time_ns = time_ns;
        self.tick.seq = w.seq;
        if let Some(proto::tick::Values::Trade(trade)) = &mut self.tick.values {
            trade.price = Some(wire::decimal(Fixed::from_raw(price)));
            trade.size = Some(wire::decimal(Fixed::from_raw(size)));
        }
        prost::encoding::message::encode(2, &self.tick, &mut self.buf);
    }
}
