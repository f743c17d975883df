//! What a server says about itself: `ModelInfo`, `Tokenize`, `/v1/models`, the revision
//! `fetch` recorded, and gRPC server reflection.

use modelfleet_engine::model::LoadedModel;
use modelfleet_proto::v1 as pb;
use tokio_stream::StreamExt as _;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::support::{SERVED_NAME, Server, demo_model_dir, engine_binary, http_get};

#[tokio::test]
async fn model_info_tokenize_and_models_describe_the_served_model() {
    // Weights placed by `fetch` carry their revision to ModelInfo and /v1/models.
    let dest = tempfile::tempdir().expect("temp dir");
    let fetched = std::process::Command::new(engine_binary())
        .arg("fetch")
        .arg("--source")
        .arg(format!("file://{}", demo_model_dir().display()))
        .args(["--revision", "rev-7"])
        .arg("--dest")
        .arg(dest.path())
        .output()
        .expect("running fetch");
    assert!(
        fetched.status.success(),
        "{}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    let server = Server::start(dest.path(), &["--max-model-len", "2048"]);
    server.wait_ready().await;
    let mut client = server.grpc().await;

    let info = client
        .model_info(pb::ModelInfoRequest {})
        .await
        .expect("model info")
        .into_inner();
    assert_eq!(info.served_name, SERVED_NAME);
    assert_eq!(info.architecture, "llama");
    assert_eq!(info.vocab_size, 49152);
    assert_eq!(info.max_model_len, 2048);
    assert_eq!(info.block_size, 16);
    assert!(info.num_kv_blocks > 0);
    assert_eq!(info.backend, "cpu");
    assert_eq!(info.revision, "rev-7");
    // The demo GGUF's weights stay quantised: about 96 MB as stored (Q4_1, a Q8_0
    // embedding), where float32 would take 540 MB.
    assert!(
        (90_000_000..110_000_000).contains(&info.weight_bytes),
        "{} bytes of weights",
        info.weight_bytes
    );
    assert_eq!(info.kv_cache_dtype, "float16");
    assert!(!info.kernels.is_empty());

    let text = "Hello, world! <|im_start|>";
    let served = client
        .tokenize(pb::TokenizeRequest { text: text.into() })
        .await
        .expect("tokenize")
        .into_inner()
        .token_ids;
    let local = LoadedModel::load(&demo_model_dir())
        .expect("demo model")
        .tokenizer
        .encode(text)
        .expect("encode");
    assert_eq!(served, local);

    let (status, body) = http_get(server.http_port, "/v1/models")
        .await
        .expect("/v1/models");
    assert_eq!(status, 200);
    let models: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], SERVED_NAME);
    assert_eq!(models["data"][0]["max_model_len"], 2048);
    assert_eq!(models["data"][0]["revision"], "rev-7");
}

#[tokio::test]
async fn reflection_lists_the_generation_and_health_services() {
    let server = Server::ready(&[]).await;
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses.next().await.expect("a response").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response: {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for wanted in ["modelfleet.engine.v1.Generation", "grpc.health.v1.Health"] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted} missing from {names:?}"
        );
    }
}
