//! Server-sent events for streamed generations: one `data:` event per chunk, OpenAI's
//! error body if the generation fails, and `data: [DONE]` at the end.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Serialize;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;

use crate::engine::Usage;
use crate::server::generation::{Delta, Generation, total_usage};
use crate::server::relay::{ClientWriter, RelayEnd};

/// How one endpoint shapes its chunks.
pub trait ChunkShape: Send + 'static {
    /// Sent before the first delta (the chat API announces the assistant's role).
    fn opening(&mut self) -> Option<Event>;
    /// The chunk for one delta; `None` skips it (nothing to say yet).
    fn delta(&mut self, delta: &Delta) -> Option<Event>;
    /// Sent after the last delta (usage, when the client asked for it).
    fn closing(&mut self, usage: Usage) -> Option<Event>;
}

pub fn json_event(value: &impl Serialize) -> Event {
    Event::default()
        .json_data(value)
        .unwrap_or_else(|e| Event::default().data(format!("{{\"error\":\"{e}\"}}")))
}

/// Streams `generation` to the client. A task owns the generation; when the client goes
/// away, or leaves events unread longer than `write_timeout`, it is dropped at once, which
/// aborts the request and frees its slot and KV blocks, even while the request is still
/// waiting for its first token.
pub fn stream(
    generation: Generation,
    mut shape: impl ChunkShape,
    write_timeout: Duration,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (writer, receiver) = ClientWriter::channel(write_timeout);
    tokio::spawn(async move {
        if let Some(event) = shape.opening()
            && writer.write(event).await.is_err()
        {
            return;
        }
        // Each choice's latest counts; the request's usage adds them up.
        let mut usage: Vec<Usage> = Vec::new();
        let mut failed = false;
        let end = writer
            .relay(generation, |next| match next {
                Ok(delta) => {
                    let index = delta.index as usize;
                    if usage.len() <= index {
                        usage.resize(index + 1, Usage::default());
                    }
                    usage[index] = delta.usage;
                    shape.delta(delta).into_iter().collect()
                }
                Err(error) => {
                    failed = true;
                    vec![json_event(&error.body()), done()]
                }
            })
            .await;
        if end != RelayEnd::Finished || failed {
            return;
        }
        for event in shape
            .closing(total_usage(&usage))
            .into_iter()
            .chain([done()])
        {
            if writer.write(event).await.is_err() {
                return;
            }
        }
    });
    Sse::new(ReceiverStream::new(receiver).map(Ok)).keep_alive(KeepAlive::default())
}

fn done() -> Event {
    Event::default().data("[DONE]")
}
