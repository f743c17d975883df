//! What a client gets back: the same tokens as `modelfleet-engine generate`, over gRPC,
//! OpenAI completions and chat, streamed or whole.

use std::process::Command;

use modelfleet_proto::v1 as pb;
use serde_json::json;

use crate::support::{
    Server, collect_stream, demo_model_dir, engine_binary, greedy_request, post_json, post_sse,
    text_of,
};

const PROMPT: &str = "The capital of France is";
const MAX_TOKENS: u32 = 24;

/// What the command line prints for the same greedy request.
fn generate_command_output() -> String {
    let output = Command::new(engine_binary())
        .arg("generate")
        .arg("--model")
        .arg(demo_model_dir())
        .args(["--prompt", PROMPT, "--max-tokens", &MAX_TOKENS.to_string()])
        .output()
        .expect("running modelfleet-engine generate");
    assert!(
        output.status.success(),
        "generate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    text.strip_suffix('\n').unwrap_or(&text).to_string()
}

#[tokio::test]
async fn streamed_output_equals_the_generate_command() {
    let server = Server::ready(&[]).await;
    let expected = generate_command_output();
    assert!(expected.contains("Paris"), "{expected:?}");

    let mut client = server.grpc().await;
    let prompt_ids = client
        .tokenize(pb::TokenizeRequest {
            text: PROMPT.into(),
        })
        .await
        .expect("tokenize")
        .into_inner()
        .token_ids;
    let stream = client
        .generate(greedy_request(PROMPT, MAX_TOKENS, false))
        .await
        .expect("generate")
        .into_inner();
    let messages = collect_stream(stream).await.expect("stream");
    assert_eq!(text_of(&messages), expected);
    assert!(
        messages.iter().all(|m| m.token_ids.len() == 1),
        "one token per message"
    );
    let (last, earlier) = messages.split_last().expect("messages");
    assert!(earlier.iter().all(|m| m.finish_reason == 0));
    assert_ne!(last.finish_reason, 0, "the last message says why it ended");
    let usage = last.usage.expect("usage");
    assert_eq!(usage.prompt_tokens as usize, prompt_ids.len());
    assert_eq!(usage.completion_tokens as usize, messages.len());

    // The same prompt as token ids gives the same tokens.
    let by_ids = client
        .generate(pb::GenerateRequest {
            prompt: Some(pb::generate_request::Prompt::TokenIds(pb::TokenIds {
                ids: prompt_ids,
            })),
            ..greedy_request("", MAX_TOKENS, false)
        })
        .await
        .expect("generate by ids")
        .into_inner();
    let by_ids = collect_stream(by_ids).await.expect("stream");
    let tokens = |ms: &[pb::GenerateResponse]| -> Vec<u32> {
        ms.iter().flat_map(|m| m.token_ids.clone()).collect()
    };
    assert_eq!(tokens(&by_ids), tokens(&messages));

    // OpenAI completions, whole and streamed.
    let body = json!({"model": crate::support::SERVED_NAME, "prompt": PROMPT,
        "max_tokens": MAX_TOKENS, "temperature": 0});
    let (status, _, whole) = post_json(&server, "/v1/completions", &body).await;
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["object"], "text_completion");
    assert_eq!(whole["choices"][0]["text"], expected.as_str());
    assert_eq!(
        whole["usage"]["completion_tokens"].as_u64(),
        Some(messages.len() as u64)
    );

    let mut streamed_body = body.clone();
    streamed_body["stream"] = json!(true);
    let payloads = post_sse(&server, "/v1/completions", &streamed_body).await;
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    let streamed: String = payloads[..payloads.len() - 1]
        .iter()
        .map(|p| {
            let chunk: serde_json::Value = serde_json::from_str(p).expect("chunk JSON");
            chunk["choices"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(streamed, expected);
}

/// SmolLM2's template (from its GGUF) adds a default system turn.
fn smollm2_chat_prompt(user: &str) -> String {
    format!(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging \
         Face<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    )
}

#[tokio::test]
async fn chat_completions_use_the_models_template_whole_and_streamed() {
    let server = Server::ready(&[]).await;
    // The demo GGUF answers this one correctly, as llama.cpp does on the same file.
    let question = "What is 2+2?";
    let mut client = server.grpc().await;
    let expected_prompt_tokens = client
        .tokenize(pb::TokenizeRequest {
            text: smollm2_chat_prompt(question),
        })
        .await
        .expect("tokenize")
        .into_inner()
        .token_ids;
    // The rendered prompt through the gRPC API is the reference for the chat API.
    let reference = client
        .generate(pb::GenerateRequest {
            prompt: Some(pb::generate_request::Prompt::TokenIds(pb::TokenIds {
                ids: expected_prompt_tokens.clone(),
            })),
            ..greedy_request("", 32, false)
        })
        .await
        .expect("generate")
        .into_inner();
    let reference = text_of(&collect_stream(reference).await.expect("stream"));

    let body = json!({
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 32, "temperature": 0,
    });
    let (status, _, whole) = post_json(&server, "/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        whole["choices"][0]["message"]["content"],
        reference.as_str()
    );
    assert!(reference.contains('4'), "{reference:?}");
    assert_eq!(
        whole["usage"]["prompt_tokens"].as_u64(),
        Some(expected_prompt_tokens.len() as u64)
    );

    // Content given as parts renders the same.
    let parts = json!({
        "messages": [{"role": "user", "content": [{"type": "text", "text": question}]}],
        "max_tokens": 32, "temperature": 0, "stream": true,
        "stream_options": {"include_usage": true},
    });
    let payloads = post_sse(&server, "/v1/chat/completions", &parts).await;
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<serde_json::Value> = payloads[..payloads.len() - 1]
        .iter()
        .map(|p| serde_json::from_str(p).expect("chunk JSON"))
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, reference);
    let usage_chunk = chunks.last().expect("usage chunk");
    assert_eq!(usage_chunk["choices"].as_array().map(Vec::len), Some(0));
    assert_eq!(
        usage_chunk["usage"]["prompt_tokens"].as_u64(),
        Some(expected_prompt_tokens.len() as u64)
    );
}

#[tokio::test]
async fn unset_max_tokens_runs_as_far_as_the_kv_cache_allows() {
    // 8 blocks of 16 tokens: far less than the model's context of 8192.
    let server = Server::ready(&["--num-blocks", "8"]).await;
    let info = server
        .grpc()
        .await
        .model_info(pb::ModelInfoRequest {})
        .await
        .expect("model info")
        .into_inner();
    assert_eq!(
        info.max_model_len, 128,
        "the context is lowered to what the cache holds"
    );

    // gRPC: max_tokens 0 is "to the end", which is the end of the cache.
    let stream = server
        .grpc()
        .await
        .generate(greedy_request("Once upon a time", 0, true))
        .await
        .expect("served, not refused")
        .into_inner();
    let messages = collect_stream(stream).await.expect("stream");
    let usage = messages.last().and_then(|m| m.usage).expect("usage");
    assert_eq!(usage.prompt_tokens + usage.completion_tokens, 128);
    assert_eq!(
        messages.last().map(pb::GenerateResponse::finish_reason),
        Some(pb::FinishReason::Length)
    );

    // Chat without max_tokens: served, within the cache.
    let (code, _, body) = post_json(
        &server,
        "/v1/chat/completions",
        &serde_json::json!({"messages": [{"role": "user", "content": "Tell me a long story."}],
                            "ignore_eos": true, "temperature": 0}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["usage"]["total_tokens"], 128, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
}
