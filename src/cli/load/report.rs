//! The outcome of a load run: its table and its one-line summary.

use super::*;

/// The outcome of a load run.
#[derive(Debug)]
pub struct LoadReport {
    pub connections: u32,
    pub instruments: u32,
    pub batch: u32,
    /// The target rate; 0 for flat out.
    pub target_rate: f64,
    pub ticks_sent: u64,
    pub batches_sent: u64,
    pub applied: u64,
    pub rejected: u64,
    pub rejected_by_code: BTreeMap<String, u64>,
    pub rejection_examples: Vec<String>,
    /// From the first batch to the last acknowledgement.
    pub seconds: f64,
    pub crashes: u64,
    /// Seconds between crashes.
    pub crash_every: f64,
    /// `fired` alerts of the expected rule that matched a crash.
    pub alerts: u64,
    pub missing: u64,
    pub unexpected: u64,
    pub unexpected_examples: Vec<String>,
    /// Other alerts of the expected rule, e.g. `resolved` once a crash
    /// leaves the window.
    pub other_alerts: u64,
    /// Tick-to-alert latency of matched alerts, µs.
    pub latency_us: Histogram<u64>,
    /// The server's part of tick-to-alert (receive to emit, from the
    /// alerts' own stamps), µs.
    pub server_latency_us: Histogram<u64>,
    /// Server receive of the batch to this subscriber's receipt (the
    /// journal's sync and the alert's way out included), µs.
    pub delivered_latency_us: Histogram<u64>,
    /// Ingest round trip: from handing a batch to its stream to reading
    /// its acknowledgement, µs. The part of tick-to-alert spent getting a
    /// batch to the server and evaluated, without the alert's way back.
    pub ack_rtt_us: Histogram<u64>,
    pub client_cpu_ns: Option<u64>,
    pub server_cpu_ns: Option<u64>,
    /// `ticks_applied` growth reported by the server's `Status`, if it
    /// answered.
    pub server_ticks_applied: Option<u64>,
    /// Streams that failed, with their status.
    pub stream_errors: Vec<String>,
    /// With `--reload-storm`: write-to-active latency of the reloads.
    pub reloads: Option<ReloadStats>,
}

impl LoadReport {
    /// Achieved ticks per second.
    pub fn ticks_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ticks_sent as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Ticks the server answered for: CPU per tick is over these.
    pub(super) fn ticks_processed(&self) -> u64 {
        let acked = self.applied + self.rejected;
        if acked > 0 {
            acked
        } else {
            self.ticks_sent
        }
    }

    pub(super) fn per_tick(&self, ns: Option<u64>) -> Option<u64> {
        let ticks = self.ticks_processed();
        ns.filter(|_| ticks > 0).map(|ns| ns / ticks)
    }

    /// Latency at quantile `q`, µs; `None` without samples.
    pub fn latency_at(&self, q: f64) -> Option<u64> {
        (!self.latency_us.is_empty()).then(|| self.latency_us.value_at_quantile(q))
    }

    /// The one-line summary scripts parse:
    /// `summary: ticks=N seconds=S ticks_per_s=R p50_us=.. p90_us=.. p99_us=.. p999_us=.. max_us=.. alerts=A missing=M unexpected=U server_cpu_ns_per_tick=..`,
    /// then, when alerts were matched, ` server_p50_us=.. server_p99_us=.. server_max_us=..`
    /// (receive to emit by the alerts' own stamps) and
    /// ` delivered_p50_us=.. delivered_p99_us=.. delivered_max_us=..` (receive
    /// to the subscriber's read, by the server's receive stamp and this
    /// machine's clock), and with
    /// `--reload-storm` ` reload_p50_ms=.. reload_max_ms=.. reloads=N`.
    /// Values without data are `n/a`.
    pub fn summary_line(&self) -> String {
        let opt = |v: Option<u64>| v.map_or_else(|| "n/a".to_owned(), |v| v.to_string());
        let max = (!self.latency_us.is_empty()).then(|| self.latency_us.max());
        let mut line = format!(
            "summary: ticks={} seconds={:.3} ticks_per_s={:.0} p50_us={} p90_us={} p99_us={} p999_us={} max_us={} \
             alerts={} missing={} unexpected={} server_cpu_ns_per_tick={}",
            self.ticks_sent,
            self.seconds,
            self.ticks_per_s(),
            opt(self.latency_at(0.5)),
            opt(self.latency_at(0.9)),
            opt(self.latency_at(0.99)),
            opt(self.latency_at(0.999)),
            opt(max),
            self.alerts,
            self.missing,
            self.unexpected,
            opt(self.per_tick(self.server_cpu_ns)),
        );
        if !self.server_latency_us.is_empty() {
            let h = &self.server_latency_us;
            let _ = write!(
                line,
                " server_p50_us={} server_p99_us={} server_max_us={}",
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.max()
            );
            let d = &self.delivered_latency_us;
            let _ = write!(
                line,
                " delivered_p50_us={} delivered_p99_us={} delivered_max_us={}",
                d.value_at_quantile(0.5),
                d.value_at_quantile(0.99),
                d.max()
            );
        }
        if let Some(r) = &self.reloads {
            let _ = write!(
                line,
                " reload_p50_ms={} reload_max_ms={} reloads={}",
                ms(r.at(0.5)),
                ms(r.max()),
                r.latency_us.len()
            );
        }
        line
    }

    /// The table for people.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let target = if self.target_rate > 0.0 {
            format!("target {} ticks/s", thousands(self.target_rate as u64))
        } else {
            "flat out".to_owned()
        };
        let _ = writeln!(
            t,
            "airbag load: {} connections, {} instruments, batches of {}, {target}",
            self.connections,
            thousands(u64::from(self.instruments)),
            self.batch
        );
        let mut row = |label: &str, value: String| {
            let _ = writeln!(t, "  {label:<22} {value}");
        };
        let below = if self.target_rate > 0.0 && self.ticks_per_s() < 0.95 * self.target_rate {
            "  BELOW TARGET"
        } else {
            ""
        };
        row(
            "ticks sent",
            format!(
                "{} in {} batches over {:.3} s = {} ticks/s{below}",
                thousands(self.ticks_sent),
                thousands(self.batches_sent),
                self.seconds,
                thousands(self.ticks_per_s() as u64)
            ),
        );
        let mut acked = format!(
            "{} applied, {} rejected",
            thousands(self.applied),
            thousands(self.rejected)
        );
        for (code, n) in &self.rejected_by_code {
            let _ = write!(acked, "; {code} {}", thousands(*n));
        }
        row("acknowledged", acked);
        for e in &self.rejection_examples {
            row("", e.clone());
        }
        if let Some(n) = self.server_ticks_applied {
            row("server ticks applied", thousands(n));
        }
        row(
            "crashes",
            format!(
                "{} injected, {} alerted, {} missing, {} unexpected, {} other alerts",
                self.crashes, self.alerts, self.missing, self.unexpected, self.other_alerts
            ),
        );
        if self.crashes > u64::from(self.instruments) {
            row(
                "",
                format!(
                    "instruments crashed again after {:.1} s: more than the rule's window and cooldown?",
                    f64::from(self.instruments) * self.crash_every
                ),
            );
        }
        for e in &self.unexpected_examples {
            row("", format!("unexpected: {e}"));
        }
        let lat = |q: f64| self.latency_at(q).map_or_else(|| "n/a".to_owned(), thousands);
        row(
            "tick-to-alert (µs)",
            format!(
                "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={})",
                lat(0.5),
                lat(0.9),
                lat(0.99),
                lat(0.999),
                if self.latency_us.is_empty() {
                    "n/a".to_owned()
                } else {
                    thousands(self.latency_us.max())
                },
                self.latency_us.len()
            ),
        );
        let rtt = |q: f64| {
            if self.ack_rtt_us.is_empty() {
                "n/a".to_owned()
            } else {
                thousands(self.ack_rtt_us.value_at_quantile(q))
            }
        };
        let server = |q: f64| {
            if self.server_latency_us.is_empty() {
                "n/a".to_owned()
            } else {
                thousands(self.server_latency_us.value_at_quantile(q))
            }
        };
        row(
            "server receive → emit (µs)",
            format!(
                "p50 {}  p99 {}  max {}  (n={})",
                server(0.5),
                server(0.99),
                if self.server_latency_us.is_empty() {
                    "n/a".to_owned()
                } else {
                    thousands(self.server_latency_us.max())
                },
                self.server_latency_us.len()
            ),
        );
        let delivered = &self.delivered_latency_us;
        if !delivered.is_empty() {
            row(
                "receive → subscriber (µs)",
                format!(
                    "p50 {}  p99 {}  max {}  (n={})",
                    thousands(delivered.value_at_quantile(0.5)),
                    thousands(delivered.value_at_quantile(0.99)),
                    thousands(delivered.max()),
                    delivered.len()
                ),
            );
        }
        row(
            "ingest round trip (µs)",
            format!(
                "p50 {}  p90 {}  p99 {}  p99.9 {}  (n={})",
                rtt(0.5),
                rtt(0.9),
                rtt(0.99),
                rtt(0.999),
                self.ack_rtt_us.len()
            ),
        );
        let cpu = |total: Option<u64>, per: Option<u64>, missing: &str| match (total, per) {
            (Some(total), Some(per)) => format!("{} ns/tick ({:.3} s)", thousands(per), total as f64 / 1e9),
            _ => missing.to_owned(),
        };
        row(
            "client CPU",
            cpu(self.client_cpu_ns, self.per_tick(self.client_cpu_ns), "n/a"),
        );
        row(
            "server CPU",
            cpu(
                self.server_cpu_ns,
                self.per_tick(self.server_cpu_ns),
                "n/a (pass --server-pid PID)",
            ),
        );
        if let Some(r) = &self.reloads {
            row(
                "reload write→active",
                format!(
                    "p50 {} ms  p90 {} ms  max {} ms  (n={}, every {} s, {} timed out)",
                    ms(r.at(0.5)),
                    ms(r.at(0.9)),
                    ms(r.max()),
                    r.latency_us.len(),
                    r.every,
                    r.timeouts
                ),
            );
            for e in &r.errors {
                row("reload storm error", e.clone());
            }
        }
        for e in &self.stream_errors {
            row("stream error", e.clone());
        }
        t
    }
}

/// Microseconds as milliseconds with one decimal; `n/a` for none.
pub(super) fn ms(us: Option<u64>) -> String {
    us.map_or_else(|| "n/a".to_owned(), |us| format!("{:.1}", us as f64 / 1_000.0))
}
