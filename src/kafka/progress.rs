//! Source positions that wait for a checkpoint. With checkpoints on, a
//! Kafka source commits a message's offset only once a written checkpoint
//! holds the state its ticks made: after a crash the group then resumes
//! at or before the restored state, never after it, and the ticks read
//! again that the state already holds are refused as duplicates by their
//! sequence number. No tick is applied twice and none is skipped.
//!
//! Each applied batch is tagged with the checkpoint round that will hold
//! it ([`crate::checkpoint::CheckpointRounds`]); when that round is
//! written, the newest offset of each partition it covers is stored for
//! commit. Per partition the queue holds one entry per round still
//! unwritten (two, in practice), so this allocates only when a partition
//! is first seen.

use std::collections::VecDeque;

/// The offsets applied and not yet held by a written checkpoint.
#[derive(Debug, Default)]
pub struct Progress {
    partitions: Vec<PartitionProgress>,
}

#[derive(Debug)]
struct PartitionProgress {
    topic: String,
    partition: i32,
    /// (round that holds it, last offset applied), rounds increasing.
    waiting: VecDeque<(u64, i64)>,
}

impl Progress {
    /// The message at `offset` of `topic`/`partition` was applied; round
    /// `round` is the first checkpoint that holds it.
    pub fn applied(&mut self, topic: &str, partition: i32, offset: i64, round: u64) {
        let index = match self
            .partitions
            .iter()
            .position(|p| p.partition == partition && p.topic == topic)
        {
            Some(index) => index,
            None => {
                self.partitions.push(PartitionProgress {
                    topic: topic.to_string(),
                    partition,
                    waiting: VecDeque::with_capacity(4),
                });
                self.partitions.len() - 1
            }
        };
        let waiting = &mut self.partitions[index].waiting;
        match waiting.back_mut() {
            Some((last_round, last_offset)) if *last_round >= round => {
                *last_offset = (*last_offset).max(offset);
            }
            _ => waiting.push_back((round, offset)),
        }
    }

    /// Round `written` is on disk: `store(topic, partition, offset)` once
    /// per partition with the newest offset it holds. Whether any was.
    pub fn covered(&mut self, written: u64, mut store: impl FnMut(&str, i32, i64)) -> bool {
        let mut any = false;
        for p in &mut self.partitions {
            let mut newest = None;
            while let Some(&(round, offset)) = p.waiting.front() {
                if round > written {
                    break;
                }
                newest = Some(offset);
                p.waiting.pop_front();
            }
            if let Some(offset) = newest {
                store(&p.topic, p.partition, offset);
                any = true;
            }
        }
        any
    }

    /// The round that holds everything applied so far (0 if nothing waits).
    pub fn last_round(&self) -> u64 {
        self.partitions
            .iter()
            .filter_map(|p| p.waiting.back().map(|&(round, _)| round))
            .max()
            .unwrap_or(0)
    }

    /// Partitions with applied messages no written checkpoint holds yet.
    pub fn partitions_waiting(&self) -> usize {
        self.partitions.iter().filter(|p| !p.waiting.is_empty()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(progress: &mut Progress, written: u64) -> Vec<(String, i32, i64)> {
        let mut out = Vec::new();
        progress.covered(written, |t, p, o| out.push((t.to_string(), p, o)));
        out.sort();
        out
    }

    #[test]
    fn an_offset_is_stored_only_when_its_round_is_written() {
        let mut progress = Progress::default();
        progress.applied("ticks", 0, 10, 1);
        progress.applied("ticks", 0, 11, 1);
        progress.applied("ticks", 1, 5, 1);
        progress.applied("ticks", 0, 12, 2);
        assert_eq!(progress.last_round(), 2);
        assert!(stored(&mut progress, 0).is_empty());
        assert_eq!(
            stored(&mut progress, 1),
            vec![("ticks".into(), 0, 11), ("ticks".into(), 1, 5)]
        );
        assert_eq!(progress.partitions_waiting(), 1);
        assert!(stored(&mut progress, 1).is_empty());
        assert_eq!(stored(&mut progress, 3), vec![("ticks".into(), 0, 12)]);
        assert_eq!(progress.partitions_waiting(), 0);
        assert_eq!(progress.last_round(), 0);
    }

    #[test]
    fn a_written_round_past_several_stores_the_newest_offset_once() {
        let mut progress = Progress::default();
        for (offset, round) in [(1, 1), (2, 2), (3, 3)] {
            progress.applied("a", 0, offset, round);
        }
        progress.applied("b", 0, 7, 3);
        assert_eq!(stored(&mut progress, 5), vec![("a".into(), 0, 3), ("b".into(), 0, 7)]);
    }

    #[test]
    fn topics_with_the_same_partition_number_are_apart() {
        let mut progress = Progress::default();
        progress.applied("a", 0, 1, 1);
        progress.applied("b", 0, 9, 2);
        assert_eq!(stored(&mut progress, 1), vec![("a".into(), 0, 1)]);
    }
}
