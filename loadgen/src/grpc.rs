//! The gRPC target: `modelfleet.engine.v1.Generation/Generate`, read message by message.

use std::error::Error as _;
use std::time::Instant;

use tonic::transport::Channel;
use tonic::{Code, Status};

use super::config::RequestSettings;
use super::record::{Completion, Failure, Outcome, TokenTimer};
use modelfleet_proto::v1::generation_client::GenerationClient;
use modelfleet_proto::v1::{
    FinishReason, GenerateRequest, SamplingParams, StopParams, generate_request,
};

/// The `Generate` request for `prompt`.
pub(crate) fn request(prompt: String, settings: &RequestSettings) -> GenerateRequest {
    GenerateRequest {
        model: settings.model.clone(),
        prompt: Some(generate_request::Prompt::Text(prompt)),
        sampling: Some(SamplingParams {
            temperature: settings.temperature,
            ..SamplingParams::default()
        }),
        stop: Some(StopParams {
            max_tokens: settings.max_tokens,
            ignore_eos: settings.ignore_eos,
            ..StopParams::default()
        }),
    }
}

/// Streams one `Generate` call to its end.
pub(crate) async fn generate(
    mut client: GenerationClient<Channel>,
    request: GenerateRequest,
    timer: &mut TokenTimer,
) -> Result<Completion, Failure> {
    let mut stream = client
        .generate(request)
        .await
        .map_err(|s| failure(&s))?
        .into_inner();
    let mut finished: Option<Completion> = None;
    while let Some(message) = stream.message().await.map_err(|s| failure(&s))? {
        timer.tokens(Instant::now(), message.token_ids.len() as u64);
        if message.finish_reason != FinishReason::Unspecified as i32 {
            finished = Some(Completion {
                output_tokens: message.usage.map(|u| u64::from(u.completion_tokens)),
                prompt_tokens: message.usage.map(|u| u64::from(u.prompt_tokens)),
            });
        }
    }
    finished.ok_or_else(|| {
        Failure::new(
            Outcome::Error,
            format!(
                "the stream ended without a finish reason after {} tokens",
                timer.tokens_seen()
            ),
        )
    })
}

/// The one place gRPC statuses become outcomes.
pub(crate) fn failure(status: &Status) -> Failure {
    let message = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::ResourceExhausted => Failure::new(Outcome::Rejected, message),
        // A status made by the client from a transport error carries that error as its
        // source; one sent by a draining engine carries none.
        Code::Unavailable if status.source().is_some() => {
            Failure::unreachable(format!("{message} ({})", error_chain(status)))
        }
        Code::Unavailable => Failure::new(Outcome::Unavailable, message),
        _ => Failure::new(Outcome::Error, message),
    }
}

/// The causes under `error`, each said once (transport errors repeat their cause's words).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.retain(|p| !text.contains(p.as_str()));
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_outcomes() {
        assert_eq!(
            failure(&Status::resource_exhausted("queue full")).outcome,
            Outcome::Rejected
        );
        let draining = failure(&Status::unavailable("draining"));
        assert_eq!(draining.outcome, Outcome::Unavailable);
        assert!(draining.reached_server);
        assert_eq!(
            failure(&Status::invalid_argument("prompt too long")).outcome,
            Outcome::Error
        );
    }

    #[test]
    fn the_request_carries_the_output_length_settings() {
        let settings = RequestSettings {
            model: "m".into(),
            max_tokens: 16,
            ignore_eos: true,
            temperature: Some(0.5),
            ..RequestSettings::default()
        };
        let r = request("hello".into(), &settings);
        assert_eq!(r.model, "m");
        assert_eq!(
            r.prompt,
            Some(generate_request::Prompt::Text("hello".into()))
        );
        let stop = r.stop.expect("stop params");
        assert_eq!((stop.max_tokens, stop.ignore_eos), (16, true));
        assert_eq!(r.sampling.and_then(|s| s.temperature), Some(0.5));
    }
}
