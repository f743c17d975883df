//! Malformed requests: the right gRPC status or HTTP status with OpenAI's error body, and
//! a message that names the field and the limit.

use modelfleet_contract::metrics;
use modelfleet_proto::v1 as pb;
use serde_json::json;

use crate::support::{Server, greedy_request, post_json, post_raw};

const MAX_MODEL_LEN: usize = 64;

async fn grpc_error(server: &Server, request: pb::GenerateRequest) -> tonic::Status {
    server
        .grpc()
        .await
        .generate(request)
        .await
        .expect_err("refused")
}

#[tokio::test]
async fn bad_requests_get_clear_errors_on_both_apis() {
    let server = Server::ready(&["--max-model-len", &MAX_MODEL_LEN.to_string()]).await;
    let long_prompt = "word ".repeat(2 * MAX_MODEL_LEN);

    // A prompt longer than the context.
    let status = grpc_error(&server, greedy_request(&long_prompt, 4, false)).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("context is 64 tokens"),
        "{status:?}"
    );
    let (code, _, body) = post_json(
        &server,
        "/v1/completions",
        &json!({"prompt": long_prompt, "max_tokens": 4}),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["param"], "prompt");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("64 tokens"),
        "{body}"
    );

    // max_tokens that does not fit beside the prompt.
    let status = grpc_error(&server, greedy_request("Hello", 500, false)).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("max_tokens is 500"), "{status:?}");

    // Sampling parameters out of range.
    let mut request = greedy_request("Hello", 4, false);
    request.sampling = Some(pb::SamplingParams {
        temperature: Some(-1.0),
        ..pb::SamplingParams::default()
    });
    let status = grpc_error(&server, request).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("temperature"), "{status:?}");
    let (code, _, body) = post_json(
        &server,
        "/v1/completions",
        &json!({"prompt": "Hello", "top_p": 2.0}),
    )
    .await;
    assert_eq!(code, 400);
    assert_eq!(body["error"]["param"], "top_p");

    // Empty prompts and token ids outside the vocabulary.
    let status = grpc_error(&server, greedy_request("", 4, false)).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("empty"), "{status:?}");
    let status = grpc_error(
        &server,
        pb::GenerateRequest {
            prompt: Some(pb::generate_request::Prompt::TokenIds(pb::TokenIds {
                ids: vec![1, 10_000_000],
            })),
            ..greedy_request("", 4, false)
        },
    )
    .await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("10000000"), "{status:?}");

    // Another model's name.
    let mut request = greedy_request("Hello", 4, false);
    request.model = "gpt-4".into();
    assert_eq!(
        grpc_error(&server, request).await.code(),
        tonic::Code::NotFound
    );
    let (code, _, body) = post_json(
        &server,
        "/v1/chat/completions",
        &json!({"model": "gpt-4", "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_eq!(code, 404);
    assert_eq!(body["error"]["code"], "model_not_found");

    // Bodies that are not JSON, or with a field of the wrong type.
    let (code, _, body) = post_raw(&server, "/v1/completions", "{not json".into()).await;
    assert_eq!(code, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let (code, _, body) = post_json(
        &server,
        "/v1/completions",
        &json!({"prompt": "Hello", "temperature": "hot"}),
    )
    .await;
    assert_eq!(code, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("`temperature`"),
        "{body}"
    );

    // Values out of range are refused by the field's name.
    let (code, _, body) = post_json(
        &server,
        "/v1/completions",
        &json!({"prompt": "Hello", "n": 0}),
    )
    .await;
    assert_eq!(code, 400);
    assert_eq!(body["error"]["param"], "n");
    let (code, _, body) =
        post_json(&server, "/v1/chat/completions", &json!({"messages": []})).await;
    assert_eq!(code, 400);
    assert_eq!(body["error"]["param"], "messages");

    // Every refusal was counted, and none reached the engine.
    let invalid = metrics::series(metrics::REQUESTS, &[(metrics::OUTCOME, "invalid")]);
    assert_eq!(server.metric(&invalid).await, 13.0);
    assert_eq!(server.metric(metrics::PROMPT_TOKENS).await, 0.0);
}

#[tokio::test]
async fn fields_the_engine_cannot_honour_are_refused_by_name() {
    let server = Server::ready(&[]).await;
    let chat = |extra: serde_json::Value| {
        let mut body = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        body
    };
    let completion = |extra: serde_json::Value| {
        let mut body = json!({"prompt": "Hello", "max_tokens": 2});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        body
    };
    for (path, body, param) in [
        (
            "/v1/completions",
            completion(json!({"tools": [{"type": "function", "function": {"name": "f"}}]})),
            "tools",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"logit_bias": {"42": 100}})),
            "logit_bias",
        ),
        (
            "/v1/completions",
            completion(json!({"logit_bias": {"42": 100}})),
            "logit_bias",
        ),
        (
            "/v1/completions",
            completion(json!({"suffix": "and so on"})),
            "suffix",
        ),
    ] {
        let (code, _, response) = post_json(&server, path, &body).await;
        assert_eq!(code, 400, "{path} {body}: {response}");
        assert_eq!(response["error"]["type"], "invalid_request_error");
        assert_eq!(response["error"]["param"], param, "{response}");
        assert!(
            response["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(&format!("`{param}` is not supported")),
            "{response}"
        );
    }
    // A misspelt field is not silently dropped either.
    let (code, _, response) = post_json(
        &server,
        "/v1/completions",
        &completion(json!({"max_token": 9})),
    )
    .await;
    assert_eq!(code, 400, "{response}");
    assert!(
        response["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown field `max_token`"),
        "{response}"
    );
    // Defaults that ask for nothing pass, as clients send them.
    let (code, _, response) = post_json(
        &server,
        "/v1/chat/completions",
        &chat(
            json!({"response_format": {"type": "text"}, "tools": [], "logit_bias": null,
                     "user": "u-1"}),
        ),
    )
    .await;
    assert_eq!(code, 200, "{response}");
}
