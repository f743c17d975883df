//! The OpenAI API's optional fields over real HTTP: `logprobs` / `top_logprobs` on chat and
//! completions (and `echo` scoring the prompt), `n` choices, streamed and whole, counted in
//! `/metrics`; out-of-range values refused with the field named.

use modelfleet_contract::metrics;
use serde_json::{Value, json};

use crate::support::{Server, post_json, post_sse};

const PROMPT: &str = "The capital of France is";

fn events(payloads: &[String]) -> Vec<Value> {
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    payloads[..payloads.len() - 1]
        .iter()
        .map(|p| serde_json::from_str(p).expect("each event is JSON"))
        .collect()
}

fn floats(values: &Value) -> Vec<f64> {
    values
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| v.as_f64().expect("a number"))
        .collect()
}

#[tokio::test]
async fn completions_report_logprobs_and_echo_scores_the_prompt() {
    let server = Server::ready(&[]).await;
    let body = json!({"prompt": PROMPT, "max_tokens": 4, "temperature": 0, "logprobs": 2});
    let (code, _, plain) = post_json(&server, "/v1/completions", &body).await;
    assert_eq!(code, 200, "{plain}");
    let choice = &plain["choices"][0];
    let lp = &choice["logprobs"];
    let generated = floats(&lp["token_logprobs"]);
    assert_eq!(generated.len(), 4);
    assert_eq!(plain["usage"]["completion_tokens"], 4);
    for (i, logprob) in generated.iter().enumerate() {
        assert!(*logprob <= 0.0, "{lp}");
        let top = lp["top_logprobs"][i].as_object().expect("alternatives");
        // The 2 most likely tokens and the chosen one, which greedy decoding picks from
        // them: the chosen is the most likely.
        assert!((1..=3).contains(&top.len()), "{top:?}");
        let best = top
            .values()
            .filter_map(Value::as_f64)
            .fold(f64::MIN, f64::max);
        assert!(
            (best - logprob).abs() < 1e-6,
            "greedy picks the most likely: {lp}"
        );
        assert_eq!(top[lp["tokens"][i].as_str().expect("text")], json!(logprob));
    }
    let text: String = lp["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|t| t.as_str().expect("text"))
        .collect();
    assert_eq!(text, choice["text"].as_str().expect("text"));

    // Echo: the prompt comes first, its tokens scored given the ones before them, and the
    // generated tokens score as they did without echo.
    let mut echo = body.clone();
    echo["echo"] = json!(true);
    let (code, _, echoed) = post_json(&server, "/v1/completions", &echo).await;
    assert_eq!(code, 200, "{echoed}");
    let choice = &echoed["choices"][0];
    assert_eq!(
        choice["text"].as_str().expect("text"),
        format!(
            "{PROMPT}{}",
            plain["choices"][0]["text"].as_str().expect("text")
        )
    );
    let lp = &choice["logprobs"];
    let prompt_tokens = echoed["usage"]["prompt_tokens"].as_u64().expect("usage") as usize;
    let all = lp["token_logprobs"].as_array().expect("logprobs");
    assert_eq!(all.len(), prompt_tokens + 4);
    assert!(all[0].is_null(), "nothing precedes the first prompt token");
    assert!(lp["top_logprobs"][0].is_null());
    assert!(
        all[1..prompt_tokens]
            .iter()
            .all(|v| v.as_f64().is_some_and(|l| l <= 0.0))
    );
    // The prompt is an unlikely start for this model somewhere: not every token is certain.
    assert!(
        all[1..prompt_tokens]
            .iter()
            .any(|v| v.as_f64() < Some(-0.5)),
        "{lp}"
    );
    let tail: Vec<f64> = all[prompt_tokens..]
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    for (a, b) in tail.iter().zip(&generated) {
        assert!((a - b).abs() < 1e-4, "{tail:?} vs {generated:?}");
    }
    let offsets: Vec<u64> = lp["text_offset"]
        .as_array()
        .expect("offsets")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(offsets[0], 0);
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");

    // Streamed: the same values, chunk by chunk, the echo in the first chunk.
    let mut streamed = echo.clone();
    streamed["stream"] = json!(true);
    let chunks = events(&post_sse(&server, "/v1/completions", &streamed).await);
    let first = chunks[0]["choices"][0]["text"].as_str().expect("text");
    assert!(first.starts_with(PROMPT), "{first:?}");
    let mut values = Vec::new();
    for chunk in &chunks {
        for v in chunk["choices"][0]["logprobs"]["token_logprobs"]
            .as_array()
            .expect("each chunk has its tokens' logprobs")
        {
            values.push(v.clone());
        }
    }
    assert_eq!(&values, all);

    let feature = |name| metrics::series(metrics::REQUEST_FEATURES, &[(metrics::FEATURE, name)]);
    assert_eq!(server.metric(&feature("logprobs")).await, 3.0);
    assert_eq!(server.metric(&feature("prompt_logprobs")).await, 2.0);
    assert_eq!(server.metric(&feature("parallel_sampling")).await, 0.0);
}

#[tokio::test]
async fn chat_reports_logprobs_with_top_alternatives_streamed_too() {
    let server = Server::ready(&[]).await;
    let body = json!({
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 5, "temperature": 0, "logprobs": true, "top_logprobs": 3,
    });
    let (code, _, whole) = post_json(&server, "/v1/chat/completions", &body).await;
    assert_eq!(code, 200, "{whole}");
    let content = whole["choices"][0]["logprobs"]["content"]
        .as_array()
        .expect("content logprobs");
    assert_eq!(
        content.len() as u64,
        whole["usage"]["completion_tokens"].as_u64().expect("usage")
    );
    for entry in content {
        let top = entry["top_logprobs"].as_array().expect("top");
        assert_eq!(top.len(), 3);
        assert_eq!(
            top[0]["token"], entry["token"],
            "greedy picks the most likely"
        );
        assert_eq!(top[0]["logprob"], entry["logprob"]);
        let bytes: Vec<u8> = entry["bytes"]
            .as_array()
            .expect("bytes")
            .iter()
            .filter_map(|b| b.as_u64().map(|b| b as u8))
            .collect();
        assert_eq!(bytes, entry["token"].as_str().expect("token").as_bytes());
    }

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let chunks = events(&post_sse(&server, "/v1/chat/completions", &streamed).await);
    let mut streamed_content = Vec::new();
    for chunk in &chunks {
        if let Some(entries) = chunk["choices"][0]["logprobs"]["content"].as_array() {
            streamed_content.extend(entries.iter().cloned());
        }
    }
    assert_eq!(&streamed_content, content);

    // Without logprobs there are none.
    let (_, _, plain) = post_json(
        &server,
        "/v1/chat/completions",
        &json!({"messages": body["messages"], "max_tokens": 2}),
    )
    .await;
    assert!(plain["choices"][0]["logprobs"].is_null(), "{plain}");
}

#[tokio::test]
async fn n_choices_come_back_whole_and_streamed_with_their_usage_summed() {
    let server = Server::ready(&[]).await;
    let body = json!({
        "messages": [{"role": "user", "content": "Name a colour."}],
        "max_tokens": 6, "temperature": 1.0, "seed": 11, "n": 3, "ignore_eos": true,
    });
    let (code, _, whole) = post_json(&server, "/v1/chat/completions", &body).await;
    assert_eq!(code, 200, "{whole}");
    let choices = whole["choices"].as_array().expect("choices");
    assert_eq!(choices.len(), 3);
    let texts: Vec<&str> = choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            assert_eq!(c["index"], i);
            assert_eq!(c["finish_reason"], "length");
            c["message"]["content"].as_str().expect("text")
        })
        .collect();
    assert!(texts[0] != texts[1] || texts[1] != texts[2], "{texts:?}");
    assert_eq!(whole["usage"]["completion_tokens"], 18);

    // The same seed gives the same choices; streamed, each choice's deltas add up to it.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let chunks = events(&post_sse(&server, "/v1/chat/completions", &streamed).await);
    let mut streamed_texts = vec![String::new(); 3];
    let mut finished = [false; 3];
    for chunk in &chunks {
        for choice in chunk["choices"].as_array().expect("choices") {
            let index = choice["index"].as_u64().expect("index") as usize;
            if let Some(text) = choice["delta"]["content"].as_str() {
                streamed_texts[index].push_str(text);
            }
            finished[index] |= choice["finish_reason"] == "length";
        }
    }
    assert_eq!(streamed_texts, texts);
    assert_eq!(finished, [true; 3]);
    let usage = &chunks.last().expect("usage chunk")["usage"];
    assert_eq!(usage["completion_tokens"], 18);

    // Completions too.
    let (code, _, completion) = post_json(
        &server,
        "/v1/completions",
        &json!({"prompt": PROMPT, "max_tokens": 3, "n": 2, "temperature": 0.8, "seed": 1}),
    )
    .await;
    assert_eq!(code, 200, "{completion}");
    assert_eq!(completion["choices"].as_array().map(Vec::len), Some(2));

    let parallel = metrics::series(
        metrics::REQUEST_FEATURES,
        &[(metrics::FEATURE, "parallel_sampling")],
    );
    assert_eq!(server.metric(&parallel).await, 3.0);
}

#[tokio::test]
async fn out_of_range_logprobs_and_n_are_refused_by_name() {
    // A small KV cache, so that many long choices cannot fit though one does.
    let server = Server::ready(&["--num-blocks", "16", "--block-size", "16"]).await;
    let chat = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2});
    let with = |base: &Value, extra: Value| {
        let mut body = base.clone();
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        body
    };
    let completion = json!({"prompt": "Hello", "max_tokens": 2});
    for (path, body, param) in [
        (
            "/v1/chat/completions",
            with(&chat, json!({"top_logprobs": 2})),
            "top_logprobs",
        ),
        (
            "/v1/chat/completions",
            with(&chat, json!({"logprobs": true, "top_logprobs": 21})),
            "logprobs",
        ),
        (
            "/v1/completions",
            with(&completion, json!({"logprobs": 21})),
            "logprobs",
        ),
        ("/v1/completions", with(&completion, json!({"n": 17})), "n"),
        (
            "/v1/completions",
            with(&completion, json!({"n": 2, "best_of": 3})),
            "best_of",
        ),
        (
            "/v1/completions",
            with(&completion, json!({"n": 16, "max_tokens": 100})),
            "n",
        ),
    ] {
        let (code, _, response) = post_json(&server, path, &body).await;
        assert_eq!(code, 400, "{body}: {response}");
        assert_eq!(response["error"]["type"], "invalid_request_error");
        assert_eq!(response["error"]["param"], param, "{body}: {response}");
    }
    let (_, _, response) = post_json(
        &server,
        "/v1/completions",
        &with(&completion, json!({"n": 16, "max_tokens": 100})),
    )
    .await;
    let message = response["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("KV blocks"), "{message}");
    // The positive control: one such choice fits.
    let (code, _, response) = post_json(
        &server,
        "/v1/completions",
        &with(
            &completion,
            json!({"n": 1, "max_tokens": 100, "ignore_eos": true}),
        ),
    )
    .await;
    assert_eq!(code, 200, "{response}");
}
