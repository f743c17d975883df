//! The chat templates of the supported families render as transformers' `apply_chat_template`
//! renders them: system prompts, several turns, the generation prompt, BOS/EOS, and the
//! conversations a template refuses (fixtures: `scripts/golden/tokenizer_fixtures.sh`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use modelfleet_engine::server::{ChatMessage, ChatTemplate};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    families: BTreeMap<String, Family>,
}

#[derive(Deserialize)]
struct Family {
    template: String,
    bos_token: String,
    eos_token: String,
    conversations: BTreeMap<String, Conversation>,
}

#[derive(Deserialize)]
struct Conversation {
    messages: Vec<Message>,
    prompt: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    content: String,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat-templates")
}

fn reference() -> Reference {
    let text = std::fs::read_to_string(fixtures().join("reference.json")).expect("reference");
    serde_json::from_str(&text).expect("reference parses")
}

/// The date the references were rendered on (`strftime_now`).
fn fixture_day() -> chrono::NaiveDateTime {
    chrono::NaiveDate::from_ymd_opt(2025, 1, 15)
        .and_then(|d| d.and_hms_opt(9, 30, 0))
        .expect("a date")
}

fn template(family: &Family) -> ChatTemplate {
    let source = std::fs::read_to_string(fixtures().join(&family.template)).expect("template");
    ChatTemplate::with_clock(
        source,
        family.bos_token.clone(),
        family.eos_token.clone(),
        fixture_day,
    )
    .unwrap_or_else(|e| panic!("{} does not parse: {e}", family.template))
}

fn render(
    name: &str,
    template: &ChatTemplate,
    conversation: &Conversation,
) -> Result<String, String> {
    let messages: Vec<ChatMessage> = conversation
        .messages
        .iter()
        .map(|m| ChatMessage {
            role: m.role.clone(),
            content: m.content.clone(),
            ..Default::default()
        })
        .collect();
    let _ = name;
    template.render(&messages).map_err(|e| e.to_string())
}

/// Every family, every conversation: the same prompt, or a refusal with transformers' reason.
fn assert_family(name: &str) {
    let reference = reference();
    let family = reference
        .families
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in the reference"));
    let template = template(family);
    assert!(family.conversations.len() >= 5, "{name}: conversations");
    for (conversation_name, conversation) in &family.conversations {
        let rendered = render(name, &template, conversation);
        match (&conversation.prompt, &conversation.error) {
            (Some(prompt), _) => {
                assert_eq!(rendered.as_ref(), Ok(prompt), "{name}: {conversation_name}")
            }
            (None, Some(error)) => {
                let message = rendered.expect_err(&format!("{name}: {conversation_name} refused"));
                assert!(
                    message.contains(error.as_str()),
                    "{name}: {conversation_name}: {message}"
                );
            }
            (None, None) => panic!("{name}: {conversation_name}: neither a prompt nor an error"),
        }
    }
}

#[test]
fn llama_2_renders_as_transformers() {
    assert_family("llama-2");
}

#[test]
fn llama_3_1_renders_as_transformers() {
    assert_family("llama-3.1");
}

#[test]
fn llama_3_2_renders_as_transformers_with_todays_date() {
    assert_family("llama-3.2");
    let reference = reference();
    let prompt = reference.families["llama-3.2"].conversations["user"]
        .prompt
        .clone()
        .expect("a prompt");
    // The date comes from strftime_now, not from the template's fallback.
    assert!(prompt.contains("Today Date: 15 Jan 2025"), "{prompt}");
}

#[test]
fn mistral_7b_renders_as_transformers() {
    assert_family("mistral-7b-v0.2");
}

#[test]
fn mistral_nemo_renders_as_transformers() {
    assert_family("mistral-nemo");
}

#[test]
fn qwen2_renders_as_transformers() {
    assert_family("qwen2");
}

#[test]
fn qwen2_5_renders_as_transformers() {
    assert_family("qwen2.5");
}

#[test]
fn gemma_2_renders_as_transformers() {
    assert_family("gemma-2");
}

#[test]
fn gemma_3_renders_as_transformers() {
    assert_family("gemma-3");
}

#[test]
fn phi_3_renders_as_transformers() {
    assert_family("phi-3");
}

#[test]
fn phi_3_5_renders_as_transformers() {
    assert_family("phi-3.5");
}

#[test]
fn smollm2_chatml_renders_as_transformers() {
    assert_family("smollm2");
}

#[test]
fn every_family_in_the_reference_is_tested() {
    let tested = [
        "gemma-2",
        "gemma-3",
        "llama-2",
        "llama-3.1",
        "llama-3.2",
        "mistral-7b-v0.2",
        "mistral-nemo",
        "phi-3",
        "phi-3.5",
        "qwen2",
        "qwen2.5",
        "smollm2",
    ];
    let families: Vec<String> = reference().families.into_keys().collect();
    assert_eq!(families, tested);
}

#[derive(Deserialize)]
struct ToolsReference {
    tools: serde_json::Value,
    families: BTreeMap<String, ToolsFamily>,
}

#[derive(Deserialize)]
struct ToolsFamily {
    template: String,
    bos_token: String,
    eos_token: String,
    conversations: BTreeMap<String, ToolsConversation>,
}

#[derive(Deserialize)]
struct ToolsConversation {
    messages: Vec<ToolsMessage>,
    prompt: String,
}

#[derive(Deserialize)]
struct ToolsMessage {
    role: String,
    content: String,
    tool_calls: Option<Vec<serde_json::Value>>,
    tool_call_id: Option<String>,
}

/// Tools offered, a call made and its answer: each family's template renders them in its own
/// tool syntax exactly as transformers does (`tools-reference.json`, from
/// `scripts/golden/tool_template_fixtures.sh`); the demo model's template, which has none,
/// ignores them as transformers' rendering does.
#[test]
fn tool_conversations_render_as_transformers_in_each_familys_syntax() {
    let text = std::fs::read_to_string(fixtures().join("tools-reference.json")).expect("fixture");
    let reference: ToolsReference = serde_json::from_str(&text).expect("parses");
    assert!(reference.families.len() >= 5);
    for (name, family) in &reference.families {
        let template = template(&Family {
            template: family.template.clone(),
            bos_token: family.bos_token.clone(),
            eos_token: family.eos_token.clone(),
            conversations: BTreeMap::new(),
        });
        for (conversation_name, conversation) in &family.conversations {
            let messages: Vec<ChatMessage> = conversation
                .messages
                .iter()
                .map(|m| ChatMessage {
                    role: m.role.clone(),
                    content: m.content.clone(),
                    tool_calls: m.tool_calls.clone(),
                    tool_call_id: m.tool_call_id.clone(),
                    name: None,
                })
                .collect();
            let rendered = template
                .render_with_tools(&messages, Some(&reference.tools))
                .unwrap_or_else(|e| panic!("{name}: {conversation_name}: {e}"));
            assert_eq!(rendered, conversation.prompt, "{name}: {conversation_name}");
        }
    }
}
