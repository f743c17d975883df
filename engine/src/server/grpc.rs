//! The gRPC API: `modelfleet.engine.v1.Generation` over the shared serving state.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::engine::FinishReason;
use crate::sampling::SamplingParams;
use modelfleet_proto::v1 as pb;
use modelfleet_proto::v1::generate_request::Prompt;

use super::generation::Delta;
use super::model::ServingModel;
use super::relay::ClientWriter;
use super::state::ServingState;
use super::validate::GenerateParams;

pub struct GenerationService {
    state: Arc<ServingState>,
}

impl GenerationService {
    pub fn new(state: Arc<ServingState>) -> Self {
        GenerationService { state }
    }
}

type GenerateStream = Pin<Box<dyn Stream<Item = Result<pb::GenerateResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::generation_server::Generation for GenerationService {
    type GenerateStream = GenerateStream;

    async fn generate(
        &self,
        request: Request<pb::GenerateRequest>,
    ) -> Result<Response<GenerateStream>, Status> {
        let request = request.into_inner();
        let generation = self
            .state
            .generate(move |model| params_from_proto(model, request))
            .await
            .map_err(|e| e.to_grpc_status())?;
        // A task owns the generation: when the client cancels, goes away or stops reading,
        // the generation is dropped and the request is aborted with it.
        let (writer, responses) = ClientWriter::channel(self.state.write_timeout());
        tokio::spawn(async move {
            writer
                .relay(generation, |next| {
                    vec![match next {
                        Ok(delta) => Ok(response_from_delta(delta)),
                        Err(error) => Err(error.to_grpc_status()),
                    }]
                })
                .await
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(responses))))
    }

    async fn tokenize(
        &self,
        request: Request<pb::TokenizeRequest>,
    ) -> Result<Response<pb::TokenizeResponse>, Status> {
        let token_ids = self
            .state
            .tokenize(request.into_inner().text)
            .await
            .map_err(|e| e.to_grpc_status())?;
        Ok(Response::new(pb::TokenizeResponse { token_ids }))
    }

    async fn model_info(
        &self,
        _request: Request<pb::ModelInfoRequest>,
    ) -> Result<Response<pb::ModelInfoResponse>, Status> {
        let info = &self.loaded()?.info;
        Ok(Response::new(pb::ModelInfoResponse {
            served_name: info.served_name.clone(),
            architecture: info.architecture.clone(),
            vocab_size: saturating_u32(info.vocab_size),
            max_model_len: saturating_u32(info.max_model_len),
            block_size: saturating_u32(info.block_size),
            num_kv_blocks: saturating_u32(info.num_kv_blocks),
            max_num_seqs: saturating_u32(info.max_num_seqs),
            backend: info.backend.clone(),
            eos_token_ids: info.eos_token_ids.clone(),
            revision: info.revision.clone().unwrap_or_default(),
            weight_bytes: info.weight_bytes,
            kv_cache_dtype: info.kv_cache_dtype.clone(),
            kernels: info.kernels.clone(),
        }))
    }
}

impl GenerationService {
    /// The model for requests that do not generate: answered while draining too.
    fn loaded(&self) -> Result<&ServingModel, Status> {
        self.state
            .loaded_model()
            .ok_or_else(|| Status::unavailable("the model is still loading"))
    }
}

fn params_from_proto(
    model: &ServingModel,
    request: pb::GenerateRequest,
) -> Result<GenerateParams, super::error::ApiError> {
    let prompt_token_ids = match request.prompt {
        Some(Prompt::Text(text)) => model.tokenize(&text)?,
        Some(Prompt::TokenIds(ids)) => ids.ids,
        None => Vec::new(),
    };
    let defaults = SamplingParams::default();
    let sampling = request.sampling.unwrap_or_default();
    let stop = request.stop.unwrap_or_default();
    Ok(GenerateParams {
        model: Some(request.model),
        prompt_token_ids,
        sampling: SamplingParams {
            temperature: sampling.temperature.unwrap_or(defaults.temperature),
            top_k: sampling.top_k.map_or(defaults.top_k, |k| k as usize),
            top_p: sampling.top_p.unwrap_or(defaults.top_p),
            min_p: sampling.min_p.unwrap_or(defaults.min_p),
            repetition_penalty: sampling
                .repetition_penalty
                .unwrap_or(defaults.repetition_penalty),
            frequency_penalty: sampling
                .frequency_penalty
                .unwrap_or(defaults.frequency_penalty),
            presence_penalty: sampling
                .presence_penalty
                .unwrap_or(defaults.presence_penalty),
            seed: sampling.seed,
            logprobs: None,
            prompt_logprobs: None,
            n: 1,
            grammar: None,
        },
        max_tokens: (stop.max_tokens > 0).then_some(stop.max_tokens as usize),
        stop: stop.stop,
        stop_token_ids: stop.stop_token_ids,
        ignore_eos: stop.ignore_eos,
    })
}

fn response_from_delta(delta: &Delta) -> pb::GenerateResponse {
    let finish_reason = match &delta.finish_reason {
        None | Some(FinishReason::Aborted) => pb::FinishReason::Unspecified,
        Some(FinishReason::Length) => pb::FinishReason::Length,
        Some(
            FinishReason::EndOfSequence | FinishReason::StopToken(_) | FinishReason::StopString(_),
        ) => pb::FinishReason::Stop,
    };
    pb::GenerateResponse {
        token_ids: vec![delta.token_id],
        text: delta.text.clone(),
        finish_reason: finish_reason.into(),
        usage: Some(pb::Usage {
            prompt_tokens: saturating_u32(delta.usage.prompt_tokens),
            completion_tokens: saturating_u32(delta.usage.completion_tokens),
            cached_prompt_tokens: saturating_u32(delta.usage.cached_prompt_tokens),
        }),
    }
}

fn saturating_u32(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}
