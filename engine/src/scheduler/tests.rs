//! Scheduler behaviour without a model: the "model" here is the rule that a sampled token
//! is a pure function of the sequence so far, which is all the scheduler may depend on.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

const BLOCK: usize = 4;

fn scheduler(num_blocks: usize, max_tokens: usize, max_seqs: usize) -> Scheduler {
    Scheduler::new(
        SchedulerConfig {
            max_num_batched_tokens: max_tokens,
            max_num_seqs: max_seqs,
        },
        KvCacheManager::new(num_blocks, BLOCK, true),
    )
}

fn next_token(seq: &Sequence) -> u32 {
    (seq.len() as u32 * 31 + seq.token_ids()[0]) % 1000
}

/// Runs one step and feeds back deterministic tokens; returns the plan.
fn step(s: &mut Scheduler) -> StepPlan {
    let plan = s.schedule().expect("consistent state");
    let sampled: Vec<(SequenceId, u32)> = plan
        .sampling_sequences()
        .map(|id| {
            (
                id,
                next_token(s.sequence(id).expect("scheduled sequences exist")),
            )
        })
        .collect();
    s.complete_step(&plan, &sampled).expect("consistent state");
    plan
}

fn prompt(first: u32, len: usize) -> Vec<u32> {
    (0..len as u32).map(|i| first + i).collect()
}

#[test]
fn decodes_and_prefills_share_a_step_within_the_budget() {
    let mut s = scheduler(64, 8, 8);
    s.add(1, prompt(0, 5), 10).expect("fits");
    let first = step(&mut s);
    assert_eq!(first.num_tokens(), 5);
    assert!(first.batch.chunks[0].needs_logits);
    s.add(2, prompt(100, 20), 10).expect("fits");
    let second = step(&mut s);
    // One decode token for sequence 1, then a 7-token chunk of sequence 2's prompt.
    assert_eq!(
        second.scheduled[0],
        ScheduledChunk {
            sequence: 1,
            num_tokens: 1,
            samples: true
        }
    );
    assert_eq!(
        second.scheduled[1],
        ScheduledChunk {
            sequence: 2,
            num_tokens: 7,
            samples: false
        }
    );
    assert_eq!(second.batch.chunks[0].start_position, 5);
    assert_eq!(second.batch.chunks[1].token_ids, prompt(100, 7));
    assert_eq!(second.num_tokens(), 8);
}

#[test]
fn long_prompt_is_prefilled_in_chunks_and_samples_only_at_its_end() {
    let mut s = scheduler(64, 6, 8);
    s.add(1, prompt(0, 14), 4).expect("fits");
    let chunks: Vec<(usize, usize, bool)> = (0..3)
        .map(|_| {
            let plan = step(&mut s);
            let c = &plan.batch.chunks[0];
            (c.start_position, c.token_ids.len(), c.needs_logits)
        })
        .collect();
    assert_eq!(chunks, vec![(0, 6, false), (6, 6, false), (12, 2, true)]);
    let seq = s.sequence(1).expect("running");
    assert_eq!(seq.output_token_ids().len(), 1);
    assert_eq!(seq.num_computed_tokens(), 14);
}

#[test]
fn block_tables_cover_exactly_the_positions_of_the_step() {
    let mut s = scheduler(64, 64, 8);
    s.add(1, prompt(0, 9), 8).expect("fits");
    let plan = step(&mut s);
    assert_eq!(plan.batch.chunks[0].block_table.len(), 3);
    // Positions 9..=11 stay in the third block; position 12 needs a fourth.
    for expected in [3, 3, 3, 4] {
        let plan = step(&mut s);
        assert_eq!(plan.batch.chunks[0].block_table.len(), expected);
    }
}

#[test]
fn sequence_cap_limits_admissions_in_arrival_order() {
    let mut s = scheduler(64, 100, 2);
    for id in 1..=3 {
        s.add(id, prompt(id as u32 * 10, 3), 5).expect("fits");
    }
    let plan = step(&mut s);
    let ids: Vec<_> = plan.scheduled.iter().map(|c| c.sequence).collect();
    assert_eq!(ids, vec![1, 2]);
    assert_eq!(s.stats().waiting, 1);
    assert_eq!(s.stats().running, 2);
    s.remove(1).expect("consistent");
    let plan = step(&mut s);
    let ids: Vec<_> = plan.scheduled.iter().map(|c| c.sequence).collect();
    assert_eq!(ids, vec![2, 3]);
}

#[test]
fn a_waiting_head_that_does_not_fit_blocks_later_arrivals() {
    // 4 blocks of 4 tokens: sequence 1 takes 3, sequence 2 needs 2, sequence 3 only 1.
    let mut s = scheduler(4, 100, 8);
    s.add(1, prompt(0, 12), 4).expect("fits");
    s.add(2, prompt(100, 8), 4).expect("fits");
    s.add(3, prompt(200, 2), 4).expect("fits");
    let plan = step(&mut s);
    let ids: Vec<_> = plan.scheduled.iter().map(|c| c.sequence).collect();
    assert_eq!(
        ids,
        vec![1],
        "first come, first served: 3 may not overtake 2"
    );
}

#[test]
fn preemption_takes_the_newest_and_resume_recomputes_generated_tokens() {
    // 4 blocks of 4 tokens. Two sequences of 7 prompt tokens take 2 blocks each; the first
    // decode past position 8 needs a fifth block.
    let mut s = scheduler(4, 100, 8);
    s.add(1, prompt(0, 7), 8).expect("fits");
    s.add(2, prompt(100, 7), 8).expect("fits");
    step(&mut s); // both prefilled, each sampled its 8th token
    step(&mut s); // position 7 decoded: both at 9 tokens, 8 computed
    let plan = step(&mut s); // position 8 needs a third block each
    assert_eq!(plan.preempted, vec![2]);
    assert_eq!(plan.scheduled.len(), 1);
    assert_eq!(plan.scheduled[0].sequence, 1);
    let stats = s.stats();
    assert_eq!(
        (stats.running, stats.waiting, stats.preemptions_total),
        (1, 1, 1)
    );
    let seq2 = s.sequence(2).expect("waiting");
    assert_eq!(seq2.num_computed_tokens(), 0);
    assert_eq!(seq2.len(), 9, "generated tokens are kept for recompute");
    let tokens_before = seq2.token_ids().to_vec();

    s.remove(1).expect("consistent");
    let plan = step(&mut s);
    let chunk = &plan.batch.chunks[0];
    assert_eq!(plan.scheduled[0].sequence, 2);
    // Its first block is still cached: recompute starts after it, and feeds the generated
    // tokens back in.
    assert_eq!(chunk.start_position, 4);
    assert_eq!(chunk.token_ids, tokens_before[4..].to_vec());
    assert!(chunk.needs_logits);
}

#[test]
fn removing_a_sequence_frees_its_blocks_at_once() {
    let mut s = scheduler(8, 100, 8);
    s.add(1, prompt(0, 10), 4).expect("fits");
    step(&mut s);
    assert!(s.stats().kv_cache_usage > 0.0);
    let removed = s.remove(1).expect("consistent").expect("existed");
    assert_eq!(removed.output_token_ids().len(), 1);
    assert_eq!(s.stats().kv_cache_usage, 0.0);
    assert_eq!(s.kv_cache().pool().num_free(), 8);
    assert!(!s.has_unfinished());
    // A sequence still waiting can be removed too.
    s.add(2, prompt(0, 3), 1).expect("fits");
    assert!(s.remove(2).expect("consistent").is_some());
    assert_eq!(s.stats().waiting, 0);
}

#[test]
fn second_identical_prompt_starts_after_the_cached_blocks() {
    let mut s = scheduler(16, 100, 8);
    s.add(1, prompt(0, 10), 4).expect("fits");
    step(&mut s);
    s.add(2, prompt(0, 10), 4).expect("fits");
    let plan = step(&mut s);
    let chunk = plan
        .batch
        .chunks
        .iter()
        .find(|c| c.token_ids.len() > 1)
        .expect("prefill");
    assert_eq!(chunk.start_position, 8);
    assert_eq!(
        s.sequence(2).expect("running").num_cached_prompt_tokens(),
        8
    );
    let seq1_table = s.kv_cache().block_table(1).expect("running").to_vec();
    assert_eq!(chunk.block_table[..2], seq1_table[..2]);
}

#[test]
fn a_sequence_id_is_added_once() {
    let mut s = scheduler(2, 100, 8);
    s.add(1, prompt(0, 5), 1).expect("fits");
    assert_eq!(s.add(1, prompt(0, 5), 1), Err(SchedulerError::Duplicate(1)));
}

/// Drives random workloads to completion and checks what must hold for any schedule.
fn simulate(prompts: &[(u32, usize, usize)], num_blocks: usize, budget: usize, max_seqs: usize) {
    let mut s = scheduler(num_blocks, budget, max_seqs);
    let mut remaining: HashMap<SequenceId, usize> = HashMap::new();
    // Where each sequence's next chunk must start (reset on preemption to any cached point).
    let mut expected_start: HashMap<SequenceId, usize> = HashMap::new();
    for (id, &(first, len, new)) in prompts.iter().enumerate() {
        let id = id as SequenceId;
        s.add(id, prompt(first, len), new)
            .expect("workload fits the cache");
        remaining.insert(id, new);
        expected_start.insert(id, 0);
    }
    // Sequences whose next chunk is an admission (first, or after preemption).
    let mut admitting: std::collections::HashSet<SequenceId> = remaining.keys().copied().collect();
    let mut steps = 0;
    while s.has_unfinished() {
        steps += 1;
        assert!(steps < 10_000, "the schedule makes progress");
        let plan = s.schedule().expect("consistent state");
        assert!(plan.num_tokens() <= budget);
        assert!(plan.scheduled.len() <= max_seqs);
        for id in &plan.preempted {
            admitting.insert(*id);
        }
        for (chunk, info) in plan.batch.chunks.iter().zip(&plan.scheduled) {
            let seq = s
                .sequence(info.sequence)
                .expect("scheduled sequences exist");
            if admitting.remove(&info.sequence) {
                // An admission may skip cached full blocks, never the last token.
                assert_eq!(chunk.start_position % BLOCK, 0);
                assert!(chunk.start_position < seq.len());
            } else {
                assert_eq!(chunk.start_position, expected_start[&info.sequence]);
            }
            assert_eq!(
                chunk.token_ids,
                seq.token_ids()[chunk.start_position..][..info.num_tokens]
            );
            assert_eq!(
                chunk.block_table.len(),
                (chunk.start_position + info.num_tokens).div_ceil(BLOCK)
            );
        }
        let sampled: Vec<(SequenceId, u32)> = plan
            .sampling_sequences()
            .map(|id| (id, next_token(s.sequence(id).expect("scheduled"))))
            .collect();
        s.complete_step(&plan, &sampled).expect("consistent");
        for info in &plan.scheduled {
            let seq = s.sequence(info.sequence).expect("scheduled");
            expected_start.insert(info.sequence, seq.num_computed_tokens());
            if info.samples {
                let left = remaining.get_mut(&info.sequence).expect("known");
                *left = left.saturating_sub(1);
                if *left == 0 {
                    // The same rule gives the same tokens however the steps were cut.
                    let mut reference = seq.prompt_token_ids().to_vec();
                    while reference.len() < seq.len() {
                        let probe = Sequence::new(0, reference.clone());
                        reference.push(next_token(&probe));
                    }
                    assert_eq!(seq.token_ids(), reference.as_slice());
                    s.remove(info.sequence).expect("consistent");
                }
            }
        }
    }
    assert_eq!(
        s.kv_cache().pool().num_free(),
        num_blocks,
        "no block leaked"
    );
    assert_eq!(s.stats().running + s.stats().waiting, 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_workloads_finish_with_correct_tokens_and_no_leaks(
        prompts in prop::collection::vec((0..3u32, 1..20usize, 1..12usize), 1..10),
        num_blocks in 8..24usize,
        budget in 1..40usize,
        max_seqs in 1..6usize,
    ) {
        // Prompts repeat their first token often, so prefix-cache hits happen.
        let prompts: Vec<_> = prompts.into_iter().map(|(f, l, n)| (f * 100, l, n)).collect();
        simulate(&prompts, num_blocks, budget, max_seqs);
    }
}

#[test]
fn tight_cache_workload_preempts_and_still_finishes_correctly() {
    let prompts: Vec<_> = (0..6).map(|i| (i * 100, 7, 10)).collect();
    let mut s = scheduler(8, 64, 6);
    for (id, &(first, len, new)) in prompts.iter().enumerate() {
        s.add(id as SequenceId, prompt(first, len), new)
            .expect("fits");
    }
    let mut preempted = 0;
    for _ in 0..5 {
        preempted += step(&mut s).preempted.len();
    }
    assert!(preempted > 0, "8 blocks cannot hold 6 growing sequences");
    simulate(&prompts, 8, 64, 6);
}

#[test]
fn a_fork_shares_the_prompt_blocks_and_copies_the_partial_one_on_its_first_write() {
    let mut s = scheduler(16, 64, 8);
    // 6 tokens: one full block of 4 and a partial one.
    s.add(1, prompt(0, 6), 4).expect("fits");
    step(&mut s);
    let used = s.kv_cache().pool().num_used();
    let parent_token = *s
        .sequence(1)
        .expect("live")
        .token_ids()
        .last()
        .expect("sampled");
    s.fork(1, 2, 999).expect("parent is live");
    assert_eq!(
        s.kv_cache().pool().num_used(),
        used,
        "a fork allocates nothing"
    );
    let child = s.sequence(2).expect("forked");
    assert_eq!(child.prompt_token_ids(), prompt(0, 6));
    assert_eq!(child.output_token_ids(), [999]);
    assert_eq!(
        s.sequence(1).expect("live").output_token_ids(),
        [parent_token]
    );
    assert_eq!(s.fork(1, 2, 5), Err(SchedulerError::Duplicate(2)));

    let plan = step(&mut s);
    // Both decode one token into their own copy of the partial block; the full block stays
    // shared.
    assert_eq!(plan.scheduled.len(), 2);
    assert_eq!(plan.copies.len(), 1);
    let tables: Vec<&[u32]> = plan
        .batch
        .chunks
        .iter()
        .map(|c| &c.block_table[..])
        .collect();
    assert_eq!(tables[0][0], tables[1][0]);
    assert_ne!(tables[0][1], tables[1][1]);
    assert_eq!(s.kv_cache().pool().num_used(), used + 1);
    s.remove(1).expect("live");
    s.remove(2).expect("live");
    assert_eq!(s.kv_cache().pool().num_used(), 0);
}

#[test]
fn a_scored_prompt_skips_the_prefix_cache_and_asks_for_every_tokens_logits() {
    let mut s = scheduler(16, 64, 8);
    s.add(1, prompt(0, 9), 2).expect("fits");
    step(&mut s);
    s.add_scoring_prompt(2, prompt(0, 9), 2).expect("fits");
    let plan = step(&mut s);
    let scored = &plan.batch.chunks[1];
    assert_eq!((scored.start_position, scored.token_ids.len()), (0, 9));
    assert!(scored.every_token_logits && scored.needs_logits);
    // Decoding asks for the last token's logits only.
    let plan = step(&mut s);
    assert!(plan.batch.chunks.iter().all(|c| !c.every_token_logits));
}
