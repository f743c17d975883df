//! `modelfleet-engine serve` over real sockets with the demo model: gRPC and the
//! OpenAI-compatible HTTP API (also through OpenAI's own Python client), health and drain,
//! backpressure, metrics, bad input.

// Only the demo model's location is used here; the golden tests use the rest.
#[allow(dead_code)]
#[path = "golden/support.rs"]
mod golden_support;

#[path = "serving/support.rs"]
mod support;

#[path = "serving/admission.rs"]
mod admission;
#[path = "serving/auth.rs"]
mod auth;
#[path = "serving/bad_input.rs"]
mod bad_input;
#[path = "serving/generation.rs"]
mod generation;
#[path = "serving/information.rs"]
mod information;
#[path = "serving/lifecycle.rs"]
mod lifecycle;
#[path = "serving/load.rs"]
mod load;
#[path = "serving/openai_client.rs"]
mod openai_client;
#[path = "serving/openai_fields.rs"]
mod openai_fields;
#[path = "serving/soak.rs"]
mod soak;
#[path = "serving/stalled_clients.rs"]
mod stalled_clients;
#[path = "serving/structured_output.rs"]
mod structured_output;
#[path = "serving/tools.rs"]
mod tools;
