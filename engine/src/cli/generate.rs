//! `modelfleet-engine generate`: one prompt in, its continuation streamed to stdout.

use std::io::Write;

use anyhow::Context;
use modelfleet_engine::engine::{GenerationRequest, StopParams};
use modelfleet_engine::sampling::SamplingParams;

use super::GenerateArgs;
use super::model::LoadedEngine;

pub fn run(args: &GenerateArgs) -> anyhow::Result<()> {
    let LoadedEngine {
        mut engine,
        tokenizer,
        ..
    } = LoadedEngine::load(&args.model, &args.tuning, None)?;
    let prompt_token_ids = tokenizer.encode_prompt(&args.prompt)?;
    let request = GenerationRequest {
        prompt_token_ids,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            min_p: args.min_p,
            repetition_penalty: args.repetition_penalty,
            seed: args.seed,
            ..SamplingParams::default()
        },
        stop: StopParams {
            max_tokens: args.max_tokens,
            stop: args.stop.clone(),
            ..Default::default()
        },
    };
    engine.add_request(0, request).context("invalid request")?;
    let mut stdout = std::io::stdout().lock();
    while engine.has_unfinished() {
        for output in engine.step()? {
            stdout.write_all(output.text.as_bytes())?;
            stdout.flush()?;
            if let Some(reason) = output.finish_reason {
                tracing::info!(
                    finish_reason = reason.as_openai_str(),
                    prompt_tokens = output.usage.prompt_tokens,
                    completion_tokens = output.usage.completion_tokens,
                    "generation finished"
                );
            }
        }
    }
    writeln!(stdout)?;
    Ok(())
}
