//! The engine loop on a thread of its own, for servers.
//!
//! Callers talk to it through a command channel and get each request's outputs on a
//! channel of its own. The loop blocks while idle, and between steps it takes every
//! pending command, so an abort frees the request's KV blocks before the next step.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::{Engine, EngineError, GenerationRequest, RequestId, RequestOutput};
use crate::scheduler::SchedulerStats;

type OutputSink = UnboundedSender<Result<RequestOutput, EngineError>>;

enum Command {
    Add {
        id: RequestId,
        request: GenerationRequest,
        outputs: OutputSink,
    },
    Abort(RequestId),
    Shutdown,
}

/// A cloneable handle on an engine loop running on its own thread.
#[derive(Clone)]
pub struct EngineHandle {
    commands: Sender<Command>,
    next_id: Arc<AtomicU64>,
    /// Requests sent to the loop that it has not taken in yet. They wait like the
    /// scheduler's queue does, so [`EngineHandle::stats`] counts them as waiting.
    pending_adds: Arc<AtomicUsize>,
    stats: Arc<Mutex<SchedulerStats>>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl EngineHandle {
    /// Moves the engine onto a new thread and starts its loop.
    pub fn spawn(engine: Engine) -> std::io::Result<Self> {
        let (commands, receiver) = mpsc::channel();
        let stats = Arc::new(Mutex::new(engine.stats()));
        let loop_stats = Arc::clone(&stats);
        let pending_adds = Arc::new(AtomicUsize::new(0));
        let loop_pending = Arc::clone(&pending_adds);
        let thread = std::thread::Builder::new()
            .name("engine-loop".into())
            .spawn(move || run_loop(engine, receiver, loop_stats, &loop_pending))?;
        Ok(EngineHandle {
            commands,
            next_id: Arc::new(AtomicU64::new(0)),
            pending_adds,
            stats,
            thread: Arc::new(Mutex::new(Some(thread))),
        })
    }

    /// Queues a request; its outputs arrive on the returned stream. Invalid requests are
    /// reported as the stream's first and only item.
    pub fn generate(&self, request: GenerationRequest) -> Result<OutputStream, EngineError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (outputs, receiver) = unbounded_channel();
        self.pending_adds.fetch_add(1, Ordering::SeqCst);
        if self
            .commands
            .send(Command::Add {
                id,
                request,
                outputs,
            })
            .is_err()
        {
            self.pending_adds.fetch_sub(1, Ordering::SeqCst);
            return Err(EngineError::Stopped);
        }
        Ok(OutputStream {
            id,
            outputs: receiver,
            commands: self.commands.clone(),
            done: false,
        })
    }

    /// Queue depth, running requests, KV cache usage and preemptions after the last step;
    /// requests on their way into the loop count as waiting.
    pub fn stats(&self) -> SchedulerStats {
        let mut stats = *self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        stats.waiting += self.pending_adds.load(Ordering::SeqCst);
        stats
    }

    /// Stops the loop (unfinished streams end) and waits for its thread.
    pub fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("the engine loop panicked");
        }
    }
}

/// One request's outputs, in order. Dropping it before the last output aborts the
/// request, which frees its KV blocks at once.
pub struct OutputStream {
    id: RequestId,
    outputs: UnboundedReceiver<Result<RequestOutput, EngineError>>,
    commands: Sender<Command>,
    done: bool,
}

impl OutputStream {
    pub fn request_id(&self) -> RequestId {
        self.id
    }

    /// The next output; `None` after the last one (or if the engine stopped).
    pub async fn next(&mut self) -> Option<Result<RequestOutput, EngineError>> {
        let item = self.outputs.recv().await;
        self.observe(item)
    }

    /// Like [`OutputStream::next`], for callers outside an async runtime.
    pub fn blocking_next(&mut self) -> Option<Result<RequestOutput, EngineError>> {
        let item = self.outputs.blocking_recv();
        self.observe(item)
    }

    fn observe(
        &mut self,
        item: Option<Result<RequestOutput, EngineError>>,
    ) -> Option<Result<RequestOutput, EngineError>> {
        match &item {
            Some(Ok(output)) if output.finish_reason.is_none() => {}
            _ => self.done = true,
        }
        item
    }
}

impl Drop for OutputStream {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.commands.send(Command::Abort(self.id));
        }
    }
}

fn run_loop(
    mut engine: Engine,
    commands: Receiver<Command>,
    stats: Arc<Mutex<SchedulerStats>>,
    pending_adds: &AtomicUsize,
) {
    let mut sinks: HashMap<RequestId, OutputSink> = HashMap::new();
    loop {
        if !engine.has_unfinished() {
            match commands.recv() {
                Ok(command) => {
                    if !apply(&mut engine, &mut sinks, command, (&stats, pending_adds)) {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
        loop {
            match commands.try_recv() {
                Ok(command) => {
                    if !apply(&mut engine, &mut sinks, command, (&stats, pending_adds)) {
                        return;
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    if !engine.has_unfinished() {
                        return;
                    }
                    break;
                }
            }
        }
        let stepped = engine.step();
        // Publish what this step holds before its tokens reach any client, so a client that
        // has seen a token never reads gauges from before the step that made it.
        *stats.lock().unwrap_or_else(PoisonError::into_inner) = engine.stats();
        match stepped {
            Ok(outputs) => route(&mut engine, &mut sinks, outputs),
            Err(error) => fail_all(&mut engine, &mut sinks, &error),
        }
        *stats.lock().unwrap_or_else(PoisonError::into_inner) = engine.stats();
    }
}

/// Applies one command; `false` means stop the loop.
fn apply(
    engine: &mut Engine,
    sinks: &mut HashMap<RequestId, OutputSink>,
    command: Command,
    (stats, pending_adds): (&Mutex<SchedulerStats>, &AtomicUsize),
) -> bool {
    match command {
        Command::Add {
            id,
            request,
            outputs,
        } => {
            let added = engine.add_request(id, request);
            // Publish the scheduler's count before this request stops counting as pending,
            // so a reader never sees it in neither.
            *stats.lock().unwrap_or_else(PoisonError::into_inner) = engine.stats();
            pending_adds.fetch_sub(1, Ordering::SeqCst);
            match added {
                Ok(()) => {
                    sinks.insert(id, outputs);
                }
                Err(error) => {
                    let _ = outputs.send(Err(error));
                }
            }
        }
        Command::Abort(id) => {
            sinks.remove(&id);
            if let Err(error) = engine.abort(id) {
                tracing::error!(request = id, %error, "abort failed");
            }
        }
        Command::Shutdown => return false,
    }
    true
}

fn route(
    engine: &mut Engine,
    sinks: &mut HashMap<RequestId, OutputSink>,
    outputs: Vec<RequestOutput>,
) {
    for output in outputs {
        let id = output.request_id;
        let finished = output.finish_reason.is_some();
        let delivered = sinks
            .get(&id)
            .is_some_and(|sink| sink.send(Ok(output)).is_ok());
        if finished || !delivered {
            sinks.remove(&id);
        }
        if !delivered && !finished {
            // Nobody is listening any more: free the blocks now, not at max_tokens.
            if let Err(error) = engine.abort(id) {
                tracing::error!(request = id, %error, "abort failed");
            }
        }
    }
}

/// A failed step leaves no request in a known state: end them all with the error.
fn fail_all(engine: &mut Engine, sinks: &mut HashMap<RequestId, OutputSink>, error: &EngineError) {
    tracing::error!(%error, "engine step failed; failing every request in flight");
    for (id, sink) in sinks.drain() {
        let _ = sink.send(Err(EngineError::StepFailed(error.to_string())));
        if let Err(error) = engine.abort(id) {
            tracing::error!(request = id, %error, "abort failed");
        }
    }
}
