//! Streaming a generation to a client that may stop reading.
//!
//! A task drives the [`Generation`] and writes what the client is sent into a small
//! bounded channel that the connection drains. A client that stops reading fills the
//! socket, then the channel; a write that waits longer than the write timeout gives the
//! client up: the generation is dropped, which cancels it and frees its slot and KV blocks,
//! so stalled connections cannot hold the replica's capacity. A client that goes away is
//! noticed at once, even between tokens.

use std::time::Duration;

use tokio::sync::mpsc::{self, error::SendTimeoutError};

use super::error::ApiError;
use super::generation::{Delta, Generation};

/// Items buffered between a generation and its connection.
const BUFFERED_ITEMS: usize = 32;

/// The sending half of a response stream, with the patience it has for its reader.
pub struct ClientWriter<T> {
    sender: mpsc::Sender<T>,
    write_timeout: Duration,
}

/// Why a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    /// The generation ended and everything was handed to the connection.
    Finished,
    /// The client closed its stream or its connection.
    ClientGone,
    /// The client left a write waiting longer than the write timeout.
    ClientStalled,
}

impl<T: Send> ClientWriter<T> {
    /// A writer and the stream the connection reads from.
    pub fn channel(write_timeout: Duration) -> (Self, mpsc::Receiver<T>) {
        let (sender, receiver) = mpsc::channel(BUFFERED_ITEMS);
        (
            ClientWriter {
                sender,
                write_timeout,
            },
            receiver,
        )
    }

    /// Hands `item` to the connection, waiting at most the write timeout for room.
    pub async fn write(&self, item: T) -> Result<(), RelayEnd> {
        match self.sender.send_timeout(item, self.write_timeout).await {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Closed(_)) => Err(RelayEnd::ClientGone),
            Err(SendTimeoutError::Timeout(_)) => Err(RelayEnd::ClientStalled),
        }
    }

    /// Drives `generation` to its end, writing what `frame` makes of each delta (or of the
    /// error that ended it). The generation is dropped as soon as it ends or the client is
    /// given up, before anything further is written.
    pub async fn relay(
        &self,
        mut generation: Generation,
        mut frame: impl FnMut(Result<&Delta, &ApiError>) -> Vec<T>,
    ) -> RelayEnd {
        loop {
            let next = tokio::select! {
                next = generation.next() => next,
                () = self.sender.closed() => return self.gave_up(RelayEnd::ClientGone),
            };
            let Some(next) = next else {
                return RelayEnd::Finished;
            };
            let last = match &next {
                Ok(delta) => delta.last,
                Err(_) => true,
            };
            let items = frame(next.as_ref());
            if last {
                // The slot is free before the last items are written.
                drop(generation);
                for item in items {
                    if let Err(end) = self.write(item).await {
                        return self.gave_up(end);
                    }
                }
                return RelayEnd::Finished;
            }
            for item in items {
                if let Err(end) = self.write(item).await {
                    return self.gave_up(end);
                }
            }
        }
    }

    fn gave_up(&self, end: RelayEnd) -> RelayEnd {
        if end == RelayEnd::ClientStalled {
            tracing::info!(
                write_timeout_seconds = self.write_timeout.as_secs_f64(),
                "the client stopped reading its stream; cancelling the request"
            );
        }
        end
    }
}
