//! Pure transformations of a logits row: penalties, filtering into a candidate
//! distribution, and picking from it. No state, no randomness: the caller supplies the
//! uniform number for a draw.

use std::collections::HashMap;

/// Hugging Face's repetition penalty: every token already seen becomes less likely,
/// dividing positive logits and multiplying negative ones by `penalty`.
pub fn apply_repetition_penalty(logits: &mut [f32], seen: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut done = vec![false; logits.len()];
    for &token in seen {
        let index = token as usize;
        if index < logits.len() && !done[index] {
            done[index] = true;
            let l = logits[index];
            logits[index] = if l > 0.0 { l / penalty } else { l * penalty };
        }
    }
}

/// OpenAI's additive penalties over the generated tokens: `frequency` per occurrence,
/// `presence` once for any occurrence.
pub fn apply_frequency_presence(
    logits: &mut [f32],
    output_counts: &HashMap<u32, u32>,
    frequency: f32,
    presence: f32,
) {
    if frequency == 0.0 && presence == 0.0 {
        return;
    }
    for (&token, &count) in output_counts {
        if let Some(l) = logits.get_mut(token as usize) {
            *l -= frequency * count as f32 + if count > 0 { presence } else { 0.0 };
        }
    }
}

/// Index of the largest logit; the lowest index wins ties and NaNs never win.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    let mut best_value = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_value {
            best = i;
            best_value = v;
        }
    }
    best as u32
}

/// Natural-log probabilities of the row.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let log_sum = sum.ln() as f32;
    logits.iter().map(|&l| l - max - log_sum).collect()
}

/// The `n` largest values with their indices, largest first (lower index first on ties).
pub fn top_n(values: &[f32], n: usize) -> Vec<(u32, f32)> {
    let mut indexed: Vec<(u32, f32)> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as u32, v))
        .collect();
    let by_value_desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if n < indexed.len() && n > 0 {
        indexed.select_nth_unstable_by(n - 1, by_value_desc);
        indexed.truncate(n);
    }
    indexed.sort_by(by_value_desc);
    indexed.truncate(n);
    indexed
}

/// The distribution a draw picks from: `(token, probability)` sorted from most to least
/// likely, renormalised after applying, in order, temperature, top-k, top-p and min-p.
pub fn candidate_distribution(
    logits: &[f32],
    temperature: f32,
    top_k: usize,
    top_p: f32,
    min_p: f32,
) -> Vec<(u32, f32)> {
    let k = if top_k == 0 {
        logits.len()
    } else {
        top_k.min(logits.len())
    };
    let mut candidates = top_n(logits, k);
    let Some(&(_, max_logit)) = candidates.first() else {
        return candidates;
    };
    let mut total = 0.0f64;
    for c in candidates.iter_mut() {
        let p = f64::from((c.1 - max_logit) / temperature).exp();
        c.1 = p as f32;
        total += p;
    }
    for c in candidates.iter_mut() {
        c.1 = (f64::from(c.1) / total) as f32;
    }
    if top_p < 1.0 {
        let mut cumulative = 0.0f32;
        let keep = candidates
            .iter()
            .position(|&(_, p)| {
                cumulative += p;
                cumulative >= top_p
            })
            .map_or(candidates.len(), |i| i + 1);
        candidates.truncate(keep);
    }
    if min_p > 0.0 {
        let threshold = candidates[0].1 * min_p;
        candidates.retain(|&(_, p)| p >= threshold);
    }
    let total: f32 = candidates.iter().map(|&(_, p)| p).sum();
    for c in candidates.iter_mut() {
        c.1 /= total;
    }
    candidates
}

/// Picks from a distribution with a uniform number `u` in `[0, 1)` by inverting its
/// cumulative sum; rounding leftovers fall on the last candidate.
pub fn draw(candidates: &[(u32, f32)], u: f64) -> Option<u32> {
    let mut cumulative = 0.0f64;
    for &(token, p) in candidates {
        cumulative += f64::from(p);
        if u < cumulative {
            return Some(token);
        }
    }
    candidates.last().map(|&(token, _)| token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_penalty_pushes_seen_tokens_down_once() {
        let mut logits = vec![2.0, -2.0, 1.0];
        apply_repetition_penalty(&mut logits, &[0, 1, 0], 2.0);
        assert_eq!(logits, vec![1.0, -4.0, 1.0]);
    }

    #[test]
    fn frequency_counts_and_presence_applies_once() {
        let mut logits = vec![1.0, 1.0, 1.0];
        let counts = HashMap::from([(0, 3), (2, 1)]);
        apply_frequency_presence(&mut logits, &counts, 0.5, 0.25);
        assert_eq!(logits, vec![1.0 - 1.5 - 0.25, 1.0, 1.0 - 0.5 - 0.25]);
    }

    #[test]
    fn argmax_prefers_lowest_index_on_ties_and_ignores_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, f32::NAN]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5]), 1);
    }

    #[test]
    fn log_softmax_sums_to_one_in_probability() {
        let lp = log_softmax(&[1.0, 2.0, 3.0]);
        let total: f32 = lp.iter().map(|l| l.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert!(lp[2] > lp[1] && lp[1] > lp[0]);
    }

    #[test]
    fn top_k_keeps_the_k_most_likely() {
        let d = candidate_distribution(&[0.0, 5.0, 1.0, 4.0], 1.0, 2, 1.0, 0.0);
        let tokens: Vec<u32> = d.iter().map(|c| c.0).collect();
        assert_eq!(tokens, vec![1, 3]);
        assert!((d.iter().map(|c| c.1).sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        // Probabilities 0.5, 0.3, 0.2 (logits are their logs).
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let d = candidate_distribution(&logits, 1.0, 0, 0.7, 0.0);
        assert_eq!(d.iter().map(|c| c.0).collect::<Vec<_>>(), vec![0, 1]);
        assert!((d[0].1 - 0.625).abs() < 1e-5);
    }

    #[test]
    fn min_p_drops_tokens_far_below_the_best() {
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let d = candidate_distribution(&logits, 1.0, 0, 1.0, 0.5);
        assert_eq!(d.iter().map(|c| c.0).collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn low_temperature_sharpens_high_temperature_flattens() {
        let logits = [1.0, 2.0];
        let cold = candidate_distribution(&logits, 0.1, 0, 1.0, 0.0);
        let hot = candidate_distribution(&logits, 10.0, 0, 1.0, 0.0);
        assert!(cold[0].1 > 0.99);
        assert!(hot[0].1 < 0.6);
    }

    #[test]
    fn draw_inverts_the_cumulative_distribution() {
        let d = [(7, 0.25), (3, 0.75)];
        assert_eq!(draw(&d, 0.0), Some(7));
        assert_eq!(draw(&d, 0.24), Some(7));
        assert_eq!(draw(&d, 0.26), Some(3));
        assert_eq!(draw(&d, 0.999_999), Some(3));
        assert_eq!(draw(&[], 0.5), None);
    }
}
