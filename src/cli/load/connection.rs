//! One connection: paced batches over an `Ingest` stream, its acks and
//! round trips, and resuming after the stream fails.

use super::*;

/// What one connection did.
#[derive(Debug)]
pub(super) struct ConnStats {
    pub(super) ticks_sent: u64,
    pub(super) batches_sent: u64,
    pub(super) applied: u64,
    pub(super) rejected: u64,
    pub(super) rejected_by_code: BTreeMap<String, u64>,
    pub(super) rejection_examples: Vec<String>,
    pub(super) last_ack: Option<Instant>,
    /// Ingest round trips, µs (see [`LoadReport::ack_rtt_us`]).
    pub(super) ack_rtt_us: Histogram<u64>,
    pub(super) error: Option<String>,
    /// Failures the connection resumed from.
    pub(super) resumed: Vec<String>,
}

impl Default for ConnStats {
    fn default() -> Self {
        ConnStats {
            ticks_sent: 0,
            batches_sent: 0,
            applied: 0,
            rejected: 0,
            rejected_by_code: BTreeMap::new(),
            rejection_examples: Vec::new(),
            last_ack: None,
            ack_rtt_us: latency_histogram(),
            error: None,
            resumed: Vec::new(),
        }
    }
}

impl ConnStats {
    /// Adds the counts of a stream that ended, keeping the first error.
    pub(super) fn absorb(&mut self, other: ConnStats) {
        self.ticks_sent += other.ticks_sent;
        self.batches_sent += other.batches_sent;
        self.applied += other.applied;
        self.rejected += other.rejected;
        for (code, n) in other.rejected_by_code {
            *self.rejected_by_code.entry(code).or_default() += n;
        }
        let room = EXAMPLES.saturating_sub(self.rejection_examples.len());
        self.rejection_examples
            .extend(other.rejection_examples.into_iter().take(room));
        self.last_ack = self.last_ack.max(other.last_ack);
        let _ = self.ack_rtt_us.add(&other.ack_rtt_us);
        self.error = other.error;
        self.resumed.extend(other.resumed);
    }
}

/// How a connection gets back after its stream failed.
pub(super) struct Resume {
    pub(super) target: wire::Target,
    /// How long to keep trying without a stream that works; zero: never.
    pub(super) retry_for: Duration,
}

/// Runs [`run_stream`] until the plan's duration is up; after a failed
/// stream, with `resume.retry_for` above zero, reconnects, asks the server
/// where this connection's instruments stand and goes on from there (so
/// nothing it applied is sent again and nothing it lost leaves a gap).
pub(super) async fn run_connection(
    mut generator: Generator,
    channel: Connection,
    start: Instant,
    rate: f64,
    book: Arc<Mutex<CrashBook>>,
    resume: Resume,
) -> ConnStats {
    let end = start + generator.plan.duration;
    let mut total = ConnStats::default();
    let mut pacer = Pacer::new(rate, start);
    let mut channel = channel;
    loop {
        let stats = run_stream(&mut generator, channel.clone(), end, &mut pacer, &book).await;
        let failed = stats.error.clone();
        total.absorb(stats);
        let Some(why) = failed else { return total };
        // A stream that fails after the sending phase (while its last acks
        // are on their way) is resumed too: the server's answer settles
        // where the connection's instruments stand, and the next stream
        // ends at once.
        if resume.retry_for.is_zero() {
            return total;
        }
        let give_up = Instant::now() + resume.retry_for;
        let mut backoff = crate::cli::resume::Backoff::default();
        loop {
            backoff.wait().await;
            let Ok(conn) = resume.target.connect().await else {
                if Instant::now() >= give_up {
                    return total;
                }
                continue;
            };
            match crate::cli::resume::last_applied(conn.clone()).await {
                Ok(positions) => {
                    generator.resume_from(&positions);
                    total.resumed.push(why.clone());
                    total.error = None;
                    channel = conn;
                    break;
                }
                Err(_) if Instant::now() < give_up => continue,
                Err(_) => return total,
            }
        }
    }
}

/// Sends paced batches over one `Ingest` stream until `end`, then waits
/// (at most [`ACK_TIMEOUT`]) for the last ack.
pub(super) async fn run_stream(
    generator: &mut Generator,
    channel: Connection,
    end: Instant,
    pacer: &mut Pacer,
    book: &Mutex<CrashBook>,
) -> ConnStats {
    let mut stats = ConnStats::default();
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let mut grpc = tonic::client::Grpc::new(channel);
    if let Err(e) = grpc.ready().await {
        stats.error = Some(format!("connection not ready: {e}"));
        return stats;
    }
    let acks = match grpc
        .streaming(
            tonic::Request::new(ReceiverStream::new(rx)),
            PathAndQuery::from_static(INGEST_PATH),
            BatchCodec,
        )
        .await
    {
        Ok(response) => response.into_inner(),
        Err(status) => {
            stats.error = Some(format!(
                "the server refused the ingest stream: {}",
                wire::status_text(&status)
            ));
            return stats;
        }
    };
    // When each batch in flight was handed to the stream, by batch id, for
    // the ack reader's round trips. Acks come in batch order.
    let in_flight: Arc<Mutex<VecDeque<(u64, Instant)>>> = Arc::default();
    let ack_task = tokio::spawn(read_acks(acks, in_flight.clone()));

    let plan = generator.plan.clone();
    let start = end - plan.duration;
    let mut crashes = Vec::new();
    loop {
        pacer.wait(plan.batch).await;
        let now = Instant::now();
        if now >= end {
            break;
        }
        let elapsed = now - start;
        let time_ns = plan.epoch_ns + i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX);
        let (bytes, count) = generator.build_batch(elapsed, time_ns, &mut crashes);
        let sent = Instant::now();
        if !crashes.is_empty() {
            if let Ok(mut b) = book.lock() {
                b.records.extend(crashes.drain(..).map(|c| CrashRecord {
                    instrument: c.instrument,
                    first_seq: c.first_seq,
                    last_seq: c.last_seq,
                    sent,
                    matched: false,
                }));
            }
        }
        if let Ok(mut in_flight) = in_flight.lock() {
            in_flight.push_back((generator.batch_id, sent));
        }
        if tx.send(bytes).await.is_err() {
            break; // The stream ended; the ack reader has the status.
        }
        stats.ticks_sent += count as u64;
        stats.batches_sent += 1;
    }
    drop(tx);
    match tokio::time::timeout(ACK_TIMEOUT, ack_task).await {
        Ok(Ok((acks, rtt_us))) => {
            stats.ack_rtt_us = rtt_us;
            stats.applied = acks.applied;
            stats.rejected = acks.rejected;
            stats.rejected_by_code = acks.by_code;
            stats.rejection_examples = acks.examples;
            stats.last_ack = acks.last_ack;
            stats.error = acks.error;
            if stats.error.is_none() && acks.acked < stats.batches_sent {
                stats.error = Some(format!(
                    "{} of {} batches were not acknowledged",
                    stats.batches_sent - acks.acked,
                    stats.batches_sent
                ));
            }
        }
        Ok(Err(e)) => stats.error = Some(format!("ack reader failed: {e}")),
        Err(_) => stats.error = Some(format!("no end of the ack stream within {ACK_TIMEOUT:?}")),
    }
    stats
}

/// An `IngestAck` without its `last_applied` list, which `load` does not
/// need: prost skips the unknown field instead of allocating a string per
/// instrument.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct LeanAck {
    #[prost(uint64, tag = "1")]
    pub(super) batch_id: u64,
    #[prost(uint32, tag = "2")]
    pub(super) applied: u32,
    #[prost(message, repeated, tag = "3")]
    pub(super) rejected: Vec<proto::Rejection>,
}

#[derive(Debug, Default)]
pub(super) struct AckTally {
    pub(super) acked: u64,
    pub(super) applied: u64,
    pub(super) rejected: u64,
    pub(super) by_code: BTreeMap<String, u64>,
    pub(super) examples: Vec<String>,
    pub(super) last_ack: Option<Instant>,
    pub(super) error: Option<String>,
}

/// Reads acknowledgements until the stream ends: their tally, and the
/// round trip of each batch found in `in_flight`.
pub(super) async fn read_acks(
    mut acks: Streaming<LeanAck>,
    in_flight: Arc<Mutex<VecDeque<(u64, Instant)>>>,
) -> (AckTally, Histogram<u64>) {
    let mut tally = AckTally::default();
    let mut rtt_us = latency_histogram();
    loop {
        match acks.message().await {
            Ok(Some(ack)) => {
                let now = Instant::now();
                tally.last_ack = Some(now);
                if let Ok(mut in_flight) = in_flight.lock() {
                    while let Some((id, sent)) = in_flight.pop_front() {
                        if id == ack.batch_id {
                            let us = now.saturating_duration_since(sent).as_micros();
                            let _ = rtt_us.record(u64::try_from(us).unwrap_or(u64::MAX).clamp(1, LATENCY_MAX_US));
                            break;
                        }
                    }
                }
                tally.acked += 1;
                tally.applied += u64::from(ack.applied);
                tally.rejected += ack.rejected.len() as u64;
                for r in ack.rejected {
                    if tally.examples.len() < EXAMPLES {
                        tally.examples.push(format!(
                            "batch {} tick {}: {}: {}",
                            ack.batch_id, r.index, r.code, r.reason
                        ));
                    }
                    *tally.by_code.entry(r.code).or_default() += 1;
                }
            }
            Ok(None) => return (tally, rtt_us),
            Err(status) => {
                tally.error = Some(format!(
                    "the server ended the ingest stream: {}",
                    wire::status_text(&status)
                ));
                return (tally, rtt_us);
            }
        }
    }
}

/// Sends pre-encoded `TickBatch` bytes; decodes [`LeanAck`]s.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct BatchCodec;

impl Codec for BatchCodec {
    type Encode = Bytes;
    type Decode = LeanAck;
    type Encoder = BytesEncoder;
    type Decoder = LeanAckDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        LeanAckDecoder(tonic_prost::ProstDecoder::default())
    }
}

#[derive(Debug)]
pub(super) struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put(item);
        Ok(())
    }
}

#[derive(Debug)]
pub(super) struct LeanAckDecoder(tonic_prost::ProstDecoder<LeanAck>);

impl Decoder for LeanAckDecoder {
    type Item = LeanAck;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<LeanAck>, Self::Error> {
        self.0.decode(src)
    }
}
