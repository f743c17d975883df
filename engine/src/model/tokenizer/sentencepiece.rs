//! SentencePiece BPE vocabularies (GGUF `tokenizer.ggml.model = llama`: Llama 2, Mistral,
//! Mixtral, Phi-3) store a score per token instead of merges. SentencePiece merges the adjacent
//! pair whose joined piece scores best; a BPE model gets the same result from merges ranked by
//! that score, which is how `transformers` rebuilds them (`generate_merges`).

use std::cmp::Ordering;
use std::collections::HashMap;

/// Every way to cut a token into two tokens, best-scoring result first. Ties keep the order
/// `transformers` gives them (longer left piece first, then vocabulary order), so both build
/// the same ranks.
pub(crate) fn merges_from_scores(tokens: &[String], scores: &[f32]) -> Vec<(String, String)> {
    let ids: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(id, t)| (t.as_str(), id))
        .collect();
    let mut merges: Vec<(&str, &str, f32)> = Vec::new();
    let mut local = Vec::new();
    for (token, &score) in tokens.iter().zip(scores) {
        local.clear();
        for (cut, _) in token.char_indices().skip(1) {
            let (left, right) = token.split_at(cut);
            if let (Some(&l), Some(&r)) = (ids.get(left), ids.get(right)) {
                local.push((l, r, left, right));
            }
        }
        local.sort_by_key(|&(l, r, _, _)| (l, r));
        merges.extend(
            local
                .iter()
                .map(|&(_, _, left, right)| (left, right, score)),
        );
    }
    let chars = |s: &str| s.chars().count();
    // Stable, so equal keys keep the order above.
    merges.sort_by(|a, b| {
        b.2.partial_cmp(&a.2)
            .unwrap_or(Ordering::Equal)
            .then_with(|| chars(b.0).cmp(&chars(a.0)))
            .then_with(|| chars(b.1).cmp(&chars(a.1)))
    });
    merges
        .into_iter()
        .map(|(l, r, _)| (l.to_string(), r.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn merges_are_ranked_by_the_score_of_the_piece_they_make() {
        let tokens = strings(&["a", "b", "c", "ab", "bc", "abc"]);
        let scores = [0.0, 0.0, 0.0, -2.0, -1.0, -3.0];
        let merges = merges_from_scores(&tokens, &scores);
        let pairs: Vec<(&str, &str)> = merges
            .iter()
            .map(|(l, r)| (l.as_str(), r.as_str()))
            .collect();
        // "bc" scores best, then "ab"; "abc" can be made two ways, the longer left piece first.
        assert_eq!(pairs, [("b", "c"), ("a", "b"), ("ab", "c"), ("a", "bc")]);
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        let tokens = strings(&["▁", "x", "▁x"]);
        let merges = merges_from_scores(&tokens, &[0.0, 0.0, -1.0]);
        assert_eq!(merges, [("▁".to_string(), "x".to_string())]);
    }
}
