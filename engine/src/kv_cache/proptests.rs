//! Random operation sequences against the KV cache manager, checking the accounting after
//! every step: no block leaks or is freed twice, free + used = total, and cached prefixes
//! lead back to the very blocks that hold them.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::backend::BlockId;

const BLOCK_SIZE: usize = 4;
const NUM_BLOCKS: usize = 24;

#[derive(Debug, Clone)]
enum Op {
    /// Admit a sequence whose prompt is the first `len` tokens of template `template`
    /// (few templates, so prefixes repeat), computing up to `chunk` tokens at once.
    Add {
        template: usize,
        len: usize,
        chunk: usize,
    },
    /// Compute `n` more tokens of a live sequence, appending a sampled token if it is done.
    Grow {
        seq: usize,
        n: usize,
        token: u32,
    },
    Fork {
        seq: usize,
    },
    Free {
        seq: usize,
    },
    /// Free a sequence and immediately look its tokens up again.
    FreeAndLookUp {
        seq: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3usize, 1..30usize, 1..30usize)
            .prop_map(|(template, len, chunk)| Op::Add { template, len, chunk }),
        4 => (any::<usize>(), 1..10usize, 0..5u32)
            .prop_map(|(seq, n, token)| Op::Grow { seq, n, token }),
        1 => any::<usize>().prop_map(|seq| Op::Fork { seq }),
        2 => any::<usize>().prop_map(|seq| Op::Free { seq }),
        1 => any::<usize>().prop_map(|seq| Op::FreeAndLookUp { seq }),
    ]
}

#[derive(Debug, Clone)]
struct Seq {
    tokens: Vec<u32>,
    computed: usize,
}

fn template(index: usize) -> Vec<u32> {
    (0..40u32)
        .map(|i| (i * 7 + index as u32 * 3) % 11)
        .collect()
}

fn chain_hashes(tokens: &[u32]) -> Vec<BlockHash> {
    let mut parent = None;
    tokens
        .chunks_exact(BLOCK_SIZE)
        .map(|chunk| {
            let h = hash_block(parent, chunk);
            parent = Some(h);
            h
        })
        .collect()
}

fn check_invariants(kv: &KvCacheManager, live: &HashMap<SequenceId, Seq>) {
    let pool = kv.pool();
    assert_eq!(pool.num_free() + pool.num_used(), NUM_BLOCKS);
    let mut owners = [0u32; NUM_BLOCKS];
    for (&id, seq) in live {
        let table = kv.block_table(id).expect("live sequences have tables");
        assert!(table.len() >= blocks_for_tokens(seq.computed, BLOCK_SIZE));
        for &b in table {
            owners[b as usize] += 1;
        }
    }
    assert_eq!(
        kv.sequence_ids().count(),
        live.len(),
        "no table outlives its sequence"
    );
    let mut free = 0;
    for (b, &n) in owners.iter().enumerate() {
        assert_eq!(pool.ref_count(b as BlockId), Ok(n), "block {b} ref count");
        if n == 0 {
            free += 1;
        }
        // A hashed block is exactly the one its hash leads to.
        if let Ok(Some(h)) = pool.block_hash(b as BlockId) {
            assert_eq!(pool.lookup(h), Some(b as BlockId));
        }
    }
    assert_eq!(pool.num_free(), free);
    // Prefix hits only ever return blocks holding exactly that prefix.
    for seq in live.values() {
        let hit = kv.find_prefix(&seq.tokens);
        let expected = chain_hashes(&seq.tokens);
        for (i, &b) in hit.blocks.iter().enumerate() {
            assert_eq!(pool.block_hash(b), Ok(Some(expected[i])));
        }
    }
}

fn pick(live: &HashMap<SequenceId, Seq>, index: usize) -> Option<SequenceId> {
    let mut ids: Vec<_> = live.keys().copied().collect();
    ids.sort_unstable();
    (!ids.is_empty()).then(|| ids[index % ids.len()])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn accounting_holds_under_random_operations(ops in prop::collection::vec(op(), 1..60)) {
        let mut kv = KvCacheManager::new(NUM_BLOCKS, BLOCK_SIZE, true);
        let mut live: HashMap<SequenceId, Seq> = HashMap::new();
        let mut next_id: SequenceId = 0;
        for op in ops {
            match op {
                Op::Add { template: t, len, chunk } => {
                    let tokens = template(t)[..len].to_vec();
                    let hit = kv.find_prefix(&tokens);
                    prop_assert!(hit.num_tokens < tokens.len());
                    let target = (hit.num_tokens + chunk).min(tokens.len());
                    if let Some(alloc) = kv.admit(next_id, &hit, target).expect("valid") {
                        prop_assert!(alloc.copies.is_empty());
                        kv.cache_full_blocks(next_id, &tokens, target).expect("live");
                        live.insert(next_id, Seq { tokens, computed: target });
                    } else {
                        prop_assert!(!kv.has_sequence(next_id));
                    }
                    next_id += 1;
                }
                Op::Grow { seq, n, token } => {
                    let Some(id) = pick(&live, seq) else { continue };
                    let s = live.get_mut(&id).expect("picked from live");
                    if s.computed == s.tokens.len() {
                        s.tokens.push(token);
                    }
                    let target = (s.computed + n).min(s.tokens.len());
                    if let Some(alloc) = kv.allocate(id, s.computed, target).expect("valid") {
                        for (src, dst) in alloc.copies {
                            prop_assert_ne!(src, dst);
                            prop_assert_eq!(kv.pool().ref_count(dst), Ok(1));
                        }
                        s.computed = target;
                        kv.cache_full_blocks(id, &s.tokens, s.computed).expect("live");
                    }
                }
                Op::Fork { seq } => {
                    let Some(id) = pick(&live, seq) else { continue };
                    kv.fork(id, next_id).expect("valid");
                    let copy = live[&id].clone();
                    live.insert(next_id, copy);
                    next_id += 1;
                }
                Op::Free { seq } => {
                    let Some(id) = pick(&live, seq) else { continue };
                    kv.free(id).expect("live");
                    live.remove(&id);
                    prop_assert!(kv.free(id).is_err(), "a second free is refused");
                }
                Op::FreeAndLookUp { seq } => {
                    let Some(id) = pick(&live, seq) else { continue };
                    let s = live.remove(&id).expect("picked from live");
                    let table = kv.block_table(id).expect("live").to_vec();
                    let expected = chain_hashes(&s.tokens[..s.computed]);
                    // The leading blocks this sequence published itself.
                    let published = table
                        .iter()
                        .zip(&expected)
                        .take_while(|&(&b, &h)| kv.pool().block_hash(b) == Ok(Some(h)))
                        .count();
                    kv.free(id).expect("live");
                    let hit = kv.find_prefix(&s.tokens);
                    let reusable = published.min((s.tokens.len() - 1) / BLOCK_SIZE);
                    prop_assert!(hit.blocks.len() >= reusable);
                    prop_assert_eq!(&hit.blocks[..reusable], &table[..reusable]);
                }
            }
            check_invariants(&kv, &live);
        }
        for id in live.keys().copied().collect::<Vec<_>>() {
            kv.free(id).expect("live");
        }
        prop_assert_eq!(kv.pool().num_free(), NUM_BLOCKS, "every block comes back");
    }
}
