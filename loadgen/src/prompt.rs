//! Prompt text for requests: filler words, different for each request.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::config::Prompt;

/// Common English words: each is one or two tokens for most tokenizers.
const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "was", "that", "for", "on", "with", "as", "by", "at",
    "from", "his", "her", "they", "river", "city", "music", "water", "house", "light", "garden",
    "winter", "summer", "morning", "evening", "people", "story", "history", "market", "bridge",
    "mountain", "forest", "ocean", "letter", "window", "school", "friend", "family", "road",
    "train", "paper", "stone", "field", "color", "number", "little", "great", "small", "old",
    "new", "long", "early", "quiet", "bright", "warm", "cold", "walked", "found", "made", "told",
    "saw", "built", "wrote", "opened", "carried", "followed",
];

/// The prompt text of the request with this index in a run seeded by `seed`.
pub fn prompt_text(prompt: &Prompt, seed: u64, index: u64) -> String {
    match prompt {
        Prompt::Text(text) => text.clone(),
        Prompt::Words(n) => {
            // One stream per request: the text depends only on (seed, index), not on the
            // order in which concurrent requests were built.
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(index);
            let mut text = String::with_capacity(n * 7);
            for i in 0..*n {
                if i > 0 {
                    text.push(' ');
                }
                text.push_str(WORDS[rng.random_range(0..WORDS.len())]);
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filler_has_the_requested_word_count_and_differs_per_request() {
        let a = prompt_text(&Prompt::Words(40), 1, 0);
        let b = prompt_text(&Prompt::Words(40), 1, 1);
        assert_eq!(a.split(' ').count(), 40);
        assert_ne!(a, b);
        assert_eq!(a, prompt_text(&Prompt::Words(40), 1, 0));
        assert_ne!(a, prompt_text(&Prompt::Words(40), 2, 0));
    }

    #[test]
    fn a_given_text_is_sent_unchanged() {
        let p = Prompt::Text("The capital of France is".into());
        assert_eq!(prompt_text(&p, 9, 3), "The capital of France is");
    }
}
