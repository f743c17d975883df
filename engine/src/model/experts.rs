//! Routing the tokens of a step through a sparse mixture of experts (Mixtral): the router's
//! softmax picks each token's top-k experts, and their weights are renormalised to sum to 1
//! over the chosen ones. The result groups tokens by expert, so each expert runs one matmul
//! over all of its tokens (a grouped matmul) rather than the step looping over tokens.

/// The tokens one expert runs, and the weight of its output in each token's sum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExpertRows {
    pub rows: Vec<u32>,
    pub weights: Vec<f32>,
}

/// Per expert, its tokens: `router_logits` is `[tokens, num_experts]`, row-major. Ties go to
/// the lower expert index, as `torch.topk` picks them.
pub fn route_top_k(router_logits: &[f32], num_experts: usize, top_k: usize) -> Vec<ExpertRows> {
    let mut routes = vec![ExpertRows::default(); num_experts];
    let mut order: Vec<usize> = Vec::with_capacity(num_experts);
    for (token, logits) in router_logits.chunks_exact(num_experts).enumerate() {
        let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let probabilities: Vec<f32> = logits.iter().map(|&v| (v - max).exp()).collect();
        order.clear();
        order.extend(0..num_experts);
        order.sort_by(|&a, &b| {
            probabilities[b]
                .total_cmp(&probabilities[a])
                .then(a.cmp(&b))
        });
        let chosen = &order[..top_k];
        // The softmax's denominator cancels in the renormalisation.
        let total: f32 = chosen.iter().map(|&e| probabilities[e]).sum();
        for &expert in chosen {
            routes[expert].rows.push(token as u32);
            routes[expert].weights.push(probabilities[expert] / total);
        }
    }
    routes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_token_goes_to_its_top_experts_with_weights_summing_to_one() {
        // Token 0 prefers experts 2 then 0; token 1 prefers 1 then 3.
        let logits = [1.0, -1.0, 2.0, 0.0, 0.0, 3.0, -2.0, 1.0];
        let routes = route_top_k(&logits, 4, 2);
        assert_eq!(routes[0].rows, [0]);
        assert_eq!(routes[1].rows, [1]);
        assert_eq!(routes[2].rows, [0]);
        assert_eq!(routes[3].rows, [1]);
        let e = std::f32::consts::E;
        assert!((routes[2].weights[0] - e / (e + 1.0)).abs() < 1e-6);
        assert!((routes[2].weights[0] + routes[0].weights[0] - 1.0).abs() < 1e-6);
        assert!((routes[1].weights[0] + routes[3].weights[0] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn ties_go_to_the_lower_expert() {
        let routes = route_top_k(&[0.5, 0.5, 0.5], 3, 1);
        assert_eq!(routes[0].rows, [0]);
        assert!(routes[1].rows.is_empty() && routes[2].rows.is_empty());
        assert_eq!(routes[0].weights, [1.0]);
    }
}
