//! Compiling structured-output grammars for the served model: llguidance's parser factory
//! over the model's tokenizer (its token trie), built on the first request that needs it.

use std::sync::OnceLock;

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use toktrie_hf_tokenizers::ByteTokenizer;

use crate::model::Tokenizer;
use crate::sampling::CompiledGrammar;

/// The model's grammar compiler; cheap until first used.
#[derive(Default)]
pub struct GrammarCompiler {
    factory: OnceLock<Result<ParserFactory, String>>,
}

/// What the compiler needs of the model, the first time.
pub struct Vocabulary<'a> {
    pub tokenizer: &'a Tokenizer,
    /// Rows of logits: the model's vocabulary may be padded past the tokenizer's.
    pub vocab_size: usize,
    /// A finished grammar allows only these.
    pub eos_token_ids: &'a [u32],
}

impl GrammarCompiler {
    /// Compiles `grammar`; the error says why the library could not (for a 400).
    pub fn compile(
        &self,
        vocabulary: Vocabulary,
        grammar: TopLevelGrammar,
        source: String,
    ) -> Result<CompiledGrammar, String> {
        let factory = self
            .factory
            .get_or_init(|| build_factory(&vocabulary))
            .as_ref()
            .map_err(|e| format!("structured output is unavailable for this model: {e}"))?;
        let parser = factory.create_parser(grammar).map_err(|e| e.to_string())?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(error) = matcher.get_error() {
            return Err(error);
        }
        Ok(CompiledGrammar::new(matcher, source))
    }
}

fn build_factory(vocabulary: &Vocabulary) -> Result<ParserFactory, String> {
    let json = vocabulary.tokenizer.to_json().map_err(|e| e.to_string())?;
    let mut tokenizer =
        ByteTokenizer::from_json_bytes(json.as_bytes()).map_err(|e| e.to_string())?;
    // The library asserts its end-of-sequence tokens are in the tokenizer's vocabulary.
    let known = tokenizer.tokrx_info().vocab_size;
    let eos: Vec<u32> = vocabulary
        .eos_token_ids
        .iter()
        .copied()
        .filter(|&t| t < known)
        .collect();
    if !eos.is_empty() {
        tokenizer.set_eos_tokens(&eos);
    }
    let env = tokenizer
        .into_tok_env(Some(vocabulary.vocab_size))
        .map_err(|e| e.to_string())?;
    let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
    // Grammar errors reach the client; nothing is printed on the server's stderr.
    factory.quiet();
    Ok(factory)
}
