//! The engine loop on a thread of its own, for servers.
//!
//! Callers talk to it through a command channel and get each request's outputs on a
//! channel of its own. The loop blocks while idle, and between steps it takes every
//! pending command, so an abort frees the request's KV blocks before the next step.
//!
//! The loop reports its own life ([`LoopState`]): if its thread panics, or steps keep
//! failing ([`MAX_CONSECUTIVE_FAILED_STEPS`] in a row), it ends every request and says it
//! died, so a server can stop reporting healthy and let the pod be replaced.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::watch;

use super::{Engine, EngineError, RequestId, RequestLimits, RequestOutput, ValidatedRequest};
use crate::scheduler::SchedulerStats;

/// Steps that may fail one after another before the loop gives up. One failed step ends
/// the requests in it and the engine carries on; a run of them means the engine itself is
/// broken (a device lost, a corrupted cache), and only a new process can recover.
pub const MAX_CONSECUTIVE_FAILED_STEPS: usize = 3;

/// Where the engine loop is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoopState {
    Running,
    /// Shut down on request.
    Stopped,
    /// Ended by a panic or by failing steps; the reason says which.
    Died(String),
}

type OutputSink = UnboundedSender<Result<RequestOutput, EngineError>>;

enum Command {
    Add {
        id: RequestId,
        // Boxed: a request with a grammar is large, and the channel holds commands by value.
        request: Box<ValidatedRequest>,
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
    state: watch::Receiver<LoopState>,
    limits: RequestLimits,
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
        let (report, state) = watch::channel(LoopState::Running);
        let limits = engine.limits();
        let thread = std::thread::Builder::new()
            .name("engine-loop".into())
            .spawn(move || {
                let ended = catch_unwind(AssertUnwindSafe(|| {
                    run_loop(engine, receiver, loop_stats, &loop_pending)
                }));
                let state = match ended {
                    Ok(state) => state,
                    Err(panic) => LoopState::Died(format!(
                        "the engine loop panicked: {}",
                        panic_message(panic.as_ref())
                    )),
                };
                if let LoopState::Died(reason) = &state {
                    tracing::error!(%reason, "the engine loop died; every request in flight ends");
                }
                report.send_replace(state);
            })?;
        Ok(EngineHandle {
            commands,
            next_id: Arc::new(AtomicU64::new(0)),
            pending_adds,
            stats,
            state,
            limits,
            thread: Arc::new(Mutex::new(Some(thread))),
        })
    }

    /// What requests to this engine are validated against ([`Engine::limits`]).
    pub fn limits(&self) -> RequestLimits {
        self.limits
    }

    /// The loop's state now.
    pub fn state(&self) -> LoopState {
        self.state.borrow().clone()
    }

    /// Resolves with the reason once the loop has died (never, if it is shut down cleanly).
    pub async fn died(&self) -> String {
        let mut state = self.state.clone();
        loop {
            if let LoopState::Died(reason) = &*state.borrow_and_update() {
                return reason.clone();
            }
            if state.changed().await.is_err() {
                // The loop's thread is gone without a word: it cannot have ended cleanly.
                return match &*state.borrow() {
                    LoopState::Died(reason) => reason.clone(),
                    _ => std::future::pending().await,
                };
            }
        }
    }

    /// Queues a request; its outputs arrive on the returned stream.
    pub fn generate(&self, request: ValidatedRequest) -> Result<OutputStream, EngineError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (outputs, receiver) = unbounded_channel();
        self.pending_adds.fetch_add(1, Ordering::SeqCst);
        if self
            .commands
            .send(Command::Add {
                id,
                request: Box::new(request),
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
            Some(Ok(output)) if !output.last => {}
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
) -> LoopState {
    let mut sinks: HashMap<RequestId, OutputSink> = HashMap::new();
    let mut failed_in_a_row = 0;
    loop {
        if !engine.has_unfinished() {
            match commands.recv() {
                Ok(command) => {
                    if !apply(&mut engine, &mut sinks, command, (&stats, pending_adds)) {
                        return LoopState::Stopped;
                    }
                }
                Err(_) => return LoopState::Stopped,
            }
        }
        loop {
            match commands.try_recv() {
                Ok(command) => {
                    if !apply(&mut engine, &mut sinks, command, (&stats, pending_adds)) {
                        return LoopState::Stopped;
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    if !engine.has_unfinished() {
                        return LoopState::Stopped;
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
            Ok(outputs) => {
                failed_in_a_row = 0;
                route(&mut engine, &mut sinks, outputs);
            }
            Err(error) => {
                failed_in_a_row += 1;
                fail_all(&mut engine, &mut sinks, &error);
                if failed_in_a_row >= MAX_CONSECUTIVE_FAILED_STEPS {
                    return LoopState::Died(format!(
                        "{failed_in_a_row} engine steps in a row failed; the last: {error}"
                    ));
                }
            }
        }
        *stats.lock().unwrap_or_else(PoisonError::into_inner) = engine.stats();
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
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
            let added = engine.add(id, *request);
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
        let finished = output.last;
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
