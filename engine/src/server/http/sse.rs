//! Server-sent events for streamed generations: one `data:` event per chunk, OpenAI's
//! error body if the generation fails, and `data: [DONE]` at the end.

use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;

use crate::engine::Usage;
use crate::server::generation::{Delta, Generation};

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
/// away it is dropped at once, which aborts the request and frees its KV blocks, even while
/// the request is still waiting for its first token.
pub fn stream(
    mut generation: Generation,
    mut shape: impl ChunkShape,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (events, receiver) = mpsc::channel::<Event>(32);
    tokio::spawn(async move {
        if let Some(event) = shape.opening()
            && events.send(event).await.is_err()
        {
            return;
        }
        let mut usage = Usage::default();
        loop {
            let next = tokio::select! {
                next = generation.next() => next,
                () = events.closed() => return,
            };
            let event = match next {
                None => break,
                Some(Ok(delta)) => {
                    usage = delta.usage;
                    shape.delta(&delta)
                }
                Some(Err(error)) => {
                    let _ = events.send(json_event(&error.body())).await;
                    let _ = events.send(Event::default().data("[DONE]")).await;
                    return;
                }
            };
            if let Some(event) = event
                && events.send(event).await.is_err()
            {
                return;
            }
        }
        if let Some(event) = shape.closing(usage) {
            let _ = events.send(event).await;
        }
        let _ = events.send(Event::default().data("[DONE]")).await;
    });
    Sse::new(ReceiverStream::new(receiver).map(Ok)).keep_alive(KeepAlive::default())
}
