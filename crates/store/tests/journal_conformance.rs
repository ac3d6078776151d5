//! The journal and the memory store, given the same random op sequence, answer `recover()` and
//! `load()` identically: while running, after GC, after a clean reopen, after a reopen without
//! close, and after a full replay.

mod journal_common;

use ferromq_store::journal::{MemDir, StorageDir};
use ferromq_store::{Batch, MemoryStore, MessageStore, Op};
use journal_common::*;

const LISTS: [&str; 4] = ["queue://a", "queue://b", "durable://c:s1", "durable://c:s2"];

fn random_batch(rng: &mut Rng, next_seq: &mut [u64; 4]) -> Batch {
    (0..1 + rng.below(4))
        .map(|_| {
            let l = rng.below(4) as usize;
            let list = LISTS[l];
            match rng.below(100) {
                0..=54 => {
                    let seq = next_seq[l];
                    next_seq[l] += 1;
                    enq(list, seq, body(list, seq, 1 + rng.below(900) as usize))
                }
                55..=89 => deq(list, 1 + rng.below(next_seq[l])),
                90..=93 => Op::PutSubscription(sub(LISTS[2 + rng.below(2) as usize], "t.>")),
                94..=95 => Op::DeleteSubscription {
                    list: LISTS[2 + rng.below(2) as usize].to_string(),
                },
                _ => Op::Purge {
                    list: list.to_string(),
                },
            }
        })
        .collect()
}

#[test]
fn journal_matches_memory_store_through_gc_and_reopens() {
    for seed in 0..6u64 {
        let mut rng = Rng(seed);
        let mut next_seq = [1u64; 4];
        let model = MemoryStore::new();
        let dir = MemDir::new();
        let config = small_config(8 * 1024);
        let mut journal = open_mem(&dir, config.clone());
        for step in 0..300 {
            let batch = random_batch(&mut rng, &mut next_seq);
            model.submit(batch.clone()).wait_blocking().unwrap();
            journal.submit(batch).wait_blocking().unwrap();
            if step % 50 == 49 {
                assert_eq!(state(&journal), state(&model), "seed {seed} step {step}");
                assert_eq!(journal.usage_bytes(), model.usage_bytes());
                match step / 50 % 4 {
                    0 => {
                        journal.gc().unwrap();
                    }
                    1 => {
                        drop(journal);
                        journal = open_mem(&dir, config.clone());
                    }
                    2 => {
                        journal.close().unwrap();
                        journal = open_mem(&dir, config.clone());
                        assert_eq!(journal.recovery_report().replayed_ops, 0);
                    }
                    _ => {
                        journal.gc().unwrap();
                        drop(journal);
                        dir.remove("index.db").unwrap();
                        journal = open_mem(&dir, config.clone());
                        assert!(!journal.recovery_report().from_checkpoint);
                    }
                }
                assert_eq!(
                    state(&journal),
                    state(&model),
                    "seed {seed} after reopen {step}"
                );
                assert_eq!(journal.usage_bytes(), model.usage_bytes());
            }
        }
    }
}
