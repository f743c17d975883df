//! Log-probabilities as the OpenAI API reports them: `log_softmax` of one row of logits,
//! for the token that was chosen (or that the prompt has next) and the most likely
//! alternatives.

use super::logits::{log_softmax, top_n};

/// Log-probability of one token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
}

/// One position's log-probabilities: the token at it and the `top` most likely tokens
/// there, most likely first.
#[derive(Debug, Clone, PartialEq)]
pub struct PositionLogprobs {
    pub chosen: TokenLogprob,
    pub top: Vec<TokenLogprob>,
}

/// The log-probabilities of `token` and of the `top` most likely tokens under `logits`.
pub fn position_logprobs(logits: &[f32], token: u32, top: usize) -> PositionLogprobs {
    let lp = log_softmax(logits);
    let chosen = TokenLogprob {
        token,
        logprob: lp.get(token as usize).copied().unwrap_or(f32::NEG_INFINITY),
    };
    let top = top_n(&lp, top)
        .into_iter()
        .map(|(token, logprob)| TokenLogprob { token, logprob })
        .collect();
    PositionLogprobs { chosen, top }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_sum_to_one_and_the_top_are_sorted() {
        let row = [1.0f32, 3.0, -2.0, 0.5];
        let p = position_logprobs(&row, 2, 4);
        let total: f32 = p.top.iter().map(|t| t.logprob.exp()).sum();
        assert!((total - 1.0).abs() < 1e-5, "{total}");
        assert_eq!(p.top[0].token, 1);
        assert!(p.top.windows(2).all(|w| w[0].logprob >= w[1].logprob));
        assert_eq!(p.chosen.token, 2);
        assert_eq!(p.chosen.logprob, p.top[3].logprob);
    }

    #[test]
    fn zero_alternatives_still_report_the_chosen_token() {
        let p = position_logprobs(&[0.0, 0.0], 1, 0);
        assert!(p.top.is_empty());
        assert!((p.chosen.logprob - 0.5f32.ln()).abs() < 1e-6);
    }
}
