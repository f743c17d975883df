//! `--api-key-file`: without the key, generation and model requests get HTTP 401 and gRPC
//! UNAUTHENTICATED; with it, they are served; probes and `/metrics` stay open.

use modelfleet_proto::v1 as pb;
use tonic::metadata::MetadataValue;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::{
    JsonBody as _, Server, collect_stream, greedy_request, http_client, http_get,
};

const KEY: &str = "mf-test-key-0123456789";

fn with_key<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {key}").parse().expect("ascii");
    request.metadata_mut().insert("authorization", value);
    request
}

#[tokio::test]
async fn the_api_key_guards_generation_and_leaves_probes_and_metrics_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key_file = dir.path().join("api-key");
    // As a Secret mounted as a file might hold it: with a trailing newline.
    std::fs::write(&key_file, format!("{KEY}\n")).expect("key file");
    let key_path = key_file.display().to_string();
    let server = Server::ready(&["--api-key-file", &key_path]).await;

    // HTTP: no key, a wrong key, then the key.
    let completion = serde_json::json!({"prompt": "Hello", "max_tokens": 2});
    for authorization in [None, Some("Bearer wrong"), Some(KEY)] {
        let mut request = http_client()
            .post(server.http_url("/v1/completions"))
            .json_body(&completion);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.expect("POST");
        assert_eq!(response.status().as_u16(), 401, "{authorization:?}");
        assert_eq!(
            response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );
        let body: serde_json::Value =
            serde_json::from_slice(&response.bytes().await.expect("body")).expect("JSON");
        assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
    }
    let served = http_client()
        .post(server.http_url("/v1/completions"))
        .header("authorization", format!("Bearer {KEY}"))
        .json_body(&completion)
        .send()
        .await
        .expect("POST");
    assert_eq!(served.status().as_u16(), 200);
    let (status, _) = http_get(server.http_port, "/v1/models")
        .await
        .expect("/v1/models");
    assert_eq!(status, 401, "the model list needs the key too");

    // Probes and Prometheus need no key.
    for path in ["/health", "/ready", "/metrics"] {
        let (status, _) = http_get(server.http_port, path).await.expect(path);
        assert_eq!(status, 200, "{path}");
    }
    assert_eq!(server.health_status().await, ServingStatus::Serving);

    // gRPC: every Generation call needs the key.
    let mut client = server.grpc().await;
    let refused = client
        .generate(greedy_request("Hello", 2, true))
        .await
        .expect_err("no key");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let refused = client
        .generate(with_key(greedy_request("Hello", 2, true), "wrong"))
        .await
        .expect_err("wrong key");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let refused = client
        .model_info(pb::ModelInfoRequest {})
        .await
        .expect_err("no key");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let stream = client
        .generate(with_key(greedy_request("Hello", 2, true), KEY))
        .await
        .expect("the key")
        .into_inner();
    assert_eq!(collect_stream(stream).await.expect("served").len(), 2);
    let tokens = client
        .tokenize(with_key(
            pb::TokenizeRequest {
                text: "Hello".into(),
            },
            KEY,
        ))
        .await
        .expect("the key")
        .into_inner();
    assert!(!tokens.token_ids.is_empty());
}

#[tokio::test]
async fn an_empty_api_key_file_stops_the_server_at_start_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key_file = dir.path().join("api-key");
    std::fs::write(&key_file, "\n").expect("key file");
    let mut server = Server::start(
        &crate::support::demo_model_dir(),
        &["--api-key-file", &key_file.display().to_string()],
    );
    let status = server.wait_exit().await;
    assert!(!status.success());
    let log = server.log_text();
    assert!(
        log.contains("API key file") && log.contains("empty"),
        "{log}"
    );
}
