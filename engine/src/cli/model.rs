//! Building an engine for a model on disk from the command line's flags: the one place
//! the binary meets the model loader and the CPU backend.

use modelfleet_engine::engine::Engine;

use super::ModelArgs;

/// Text to token ids, for prompts typed on the command line.
pub trait Encode {
    fn encode(&self, text: &str) -> anyhow::Result<Vec<u32>>;
}

/// An engine ready to step, and the tokenizer of its model.
pub struct LoadedEngine {
    pub engine: Engine,
    pub tokenizer: Box<dyn Encode>,
}

impl LoadedEngine {
    pub fn load(args: &ModelArgs) -> anyhow::Result<Self> {
        anyhow::bail!(
            "cannot load {}: this build has no model loader or CPU backend yet",
            args.model.display()
        )
    }
}
