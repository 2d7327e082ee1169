//! Cross-stream batching: one worker thread per shared model collects the requests of every
//! stream using it and runs them as one inference (ONNX Runtime sessions run one call at a
//! time, so a shared session needs one owner anyway). An [`BatchPolicy::inline`] batcher (the
//! CPU path) has no worker: each request runs at once on its caller's thread, the model behind
//! a lock.
//!
//! The rule is DeepStream's nvstreammux one: a round closes when every registered client
//! (stream) has been heard from since the last round (a request, or [`BatchClient::skip`] for
//! a frame with nothing to run), when its oldest request has waited [`BatchPolicy::deadline`],
//! or when it holds the largest batch size. Its items are grouped by shape ([`Backend::key`]),
//! cut into batches of at most the largest size, each padded up to the next fixed size of
//! [`BatchPolicy::sizes`] (warmed once per shape, so a GPU pays its first-shape cost once), run,
//! and each requester gets its own outputs back in its order. One client alone never waits.
//!
//! Every queue is bounded: the request queue by [`BatchPolicy::queue`], each answer by one
//! slot. A failed inference is an error for the requests in that batch only; a worker that is
//! gone, or an answer later than the deadline plus [`BatchPolicy::answer_timeout`], is an error
//! for the requester, never a hang.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

use super::Provider;

/// A model behind a [`Batcher`]: runs one inference on a batch of items.
pub trait Backend: Send + 'static {
    /// One input (one face crop, one detector frame).
    type Item: Send + 'static;
    /// What one input gives.
    type Output: Send + 'static;
    /// Items with equal keys (tensor shapes) can share an inference.
    type Key: PartialEq + Clone + Send + std::fmt::Debug + 'static;

    /// The shape class of `item`.
    fn key(item: &Self::Item) -> Self::Key;

    /// Runs `items` (all of one key) as one batch padded to `padded` rows
    /// (`padded >= items.len()`); returns one output per item, in order.
    fn run(&mut self, items: Vec<Self::Item>, padded: usize) -> Result<Vec<Self::Output>, String>;

    /// Runs a batch of `padded` blank items of shape `key` once, so later batches of that
    /// size pay no first-shape cost.
    fn warm(&mut self, key: &Self::Key, padded: usize) -> Result<(), String>;
}

/// How a [`Batcher`] forms batches.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchPolicy {
    /// Batch sizes the model runs at, ascending (a batch is padded up to the next one).
    pub sizes: Vec<usize>,
    /// Longest a request waits for the other clients' requests (zero: a round runs with what
    /// is queued when the worker gets to it).
    pub deadline: Duration,
    /// Requests the queue holds at most (a full queue holds the submitting stage back).
    pub queue: usize,
    /// Longest a requester waits for its answer beyond the deadline before it is an error.
    pub answer_timeout: Duration,
    /// Run every size once per shape before it is used (the GPU's first-shape cost). Off on
    /// the CPU: there the first call of a shape costs little, and a warmed batch of 16 would
    /// keep its memory (the arena) for nothing.
    pub warm: bool,
    /// Run each request on the caller's thread, the model behind a lock, instead of on a
    /// worker thread (no cross-stream batches then): the CPU path. There a batch saves only
    /// per-call overhead, while the two thread hand-offs of every call lengthen the face and
    /// encode stages' cycle (offline on a 256x256 clip: 747-768 fps with a worker, 782-786
    /// inline) and add wake-up latency.
    pub inline: bool,
}

/// The deadline of the GPU path: one frame at 30 fps, the fastest cameras this is for
/// (nvstreammux: timeout = 1 / max fps).
pub const GPU_DEADLINE: Duration = Duration::from_micros(33_333);

impl BatchPolicy {
    /// Face encoders (small fixed crops): sizes 1, 2, 4, 8, 16 on every provider. On the CPU
    /// each request runs on its caller's thread ([`BatchPolicy::inline`]: batching saves only
    /// per-call overhead there, and a worker's hand-offs cost more); on CUDA a worker with the
    /// nvstreammux deadline.
    pub fn encoder(provider: Provider) -> Self {
        Self {
            sizes: vec![1, 2, 4, 8, 16],
            deadline: match provider {
                Provider::Cpu => Duration::ZERO,
                Provider::Cuda => GPU_DEADLINE,
            },
            queue: 64,
            answer_timeout: Duration::from_secs(10),
            warm: provider == Provider::Cuda,
            inline: provider == Provider::Cpu,
        }
    }

    /// The face detector (whole frames, batched only when they share the input size). On the
    /// CPU one frame per inference, on the caller's thread: a batch costs the sum of its
    /// frames there, every frame in it waits for the whole batch, and padding would cost whole
    /// frames. On CUDA sizes 1, 2, 4, 8 with the nvstreammux deadline.
    pub fn detector(provider: Provider) -> Self {
        match provider {
            Provider::Cpu => Self {
                sizes: vec![1],
                deadline: Duration::ZERO,
                queue: 64,
                answer_timeout: Duration::from_secs(10),
                warm: false,
                inline: true,
            },
            Provider::Cuda => Self {
                sizes: vec![1, 2, 4, 8],
                deadline: GPU_DEADLINE,
                queue: 64,
                answer_timeout: Duration::from_secs(10),
                warm: true,
                inline: false,
            },
        }
    }

    /// The largest batch.
    pub fn max_batch(&self) -> usize {
        self.sizes.last().copied().unwrap_or(1).max(1)
    }

    /// The fixed size `n` items are padded up to (`n` itself above the largest size).
    pub fn padded(&self, n: usize) -> usize {
        self.sizes.iter().copied().find(|s| *s >= n).unwrap_or(n)
    }
}

/// Why a batched request got no outputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    /// The inference of the batch holding the request failed.
    #[error("{model}: inference failed: {message}")]
    Failed { model: String, message: String },
    /// The worker is gone (it stopped or could not start).
    #[error("{model}: the batching worker has stopped")]
    Stopped { model: String },
    /// No answer within the deadline plus the answer timeout.
    #[error("{model}: no answer within {waited:?}")]
    Timeout { model: String, waited: Duration },
    /// The worker thread could not be started.
    #[error("{model}: cannot start the batching worker: {message}")]
    Spawn { model: String, message: String },
}

type Answer<O> = Result<Vec<O>, BatchError>;

enum Message<B: Backend> {
    Request {
        client: u64,
        items: Vec<B::Item>,
        reply: Sender<Answer<B::Output>>,
        at: Instant,
    },
    Skip {
        client: u64,
    },
    Leave {
        client: u64,
    },
}

struct Inner<B: Backend> {
    name: String,
    policy: BatchPolicy,
    tx: Sender<Message<B>>,
    /// The model itself when requests run on their callers' threads ([`BatchPolicy::inline`]).
    inline: Option<Mutex<Core<B>>>,
    clients: Arc<AtomicUsize>,
    next_id: AtomicU64,
    stats: Arc<Stats>,
    alive: Arc<AtomicBool>,
}

/// Counters of a batcher, for tests and logs.
#[derive(Debug, Default)]
pub struct Stats {
    /// Inferences run (warm-ups not counted).
    pub inferences: AtomicU64,
    /// Items run.
    pub items: AtomicU64,
    /// Padding rows run.
    pub padding: AtomicU64,
}

/// A shared model and its worker thread; cheap to clone. The worker ends when the batcher and
/// every client are dropped.
pub struct Batcher<B: Backend> {
    inner: Arc<Inner<B>>,
}

impl<B: Backend> Clone for Batcher<B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<B: Backend> Batcher<B> {
    /// Warms `backend` at every size for each of `warm` (on this thread, so start-up is
    /// done when this returns), then starts its worker thread, named after `name`.
    pub fn start(
        name: &str,
        mut backend: B,
        policy: BatchPolicy,
        warm: &[B::Key],
    ) -> Result<Self, BatchError> {
        let mut sizes = policy.sizes.clone();
        sizes.sort_unstable();
        sizes.dedup();
        sizes.retain(|s| *s > 0);
        if sizes.is_empty() {
            sizes.push(1);
        }
        let policy = BatchPolicy { sizes, ..policy };
        let warm = if policy.warm { warm } else { &[] };
        for key in warm {
            for &size in &policy.sizes {
                backend
                    .warm(key, size)
                    .map_err(|message| BatchError::Failed {
                        model: name.to_owned(),
                        message: format!("warming batch size {size}: {message}"),
                    })?;
            }
        }
        let (tx, rx) = crossbeam_channel::bounded(policy.queue.max(1));
        let clients = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(Stats::default());
        let alive = Arc::new(AtomicBool::new(true));
        let core = Core {
            backend,
            policy: policy.clone(),
            stats: stats.clone(),
            warmed: warm.to_vec(),
            name: name.to_owned(),
        };
        let inline = if policy.inline {
            Some(Mutex::new(core))
        } else {
            let worker = Worker {
                _alive: Alive(alive.clone()),
                core,
                rx,
                clients: clients.clone(),
            };
            thread::Builder::new()
                .name(format!("affectstream-batch-{name}"))
                .spawn(move || worker.run())
                .map_err(|e| BatchError::Spawn {
                    model: name.to_owned(),
                    message: e.to_string(),
                })?;
            None
        };
        Ok(Self {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                policy,
                tx,
                inline,
                clients,
                next_id: AtomicU64::new(1),
                stats,
                alive,
            }),
        })
    }

    /// A new client (one per stream): it counts towards the batch size until dropped.
    pub fn client(&self) -> BatchClient<B> {
        self.inner.clients.fetch_add(1, Ordering::SeqCst);
        BatchClient {
            inner: self.inner.clone(),
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The policy in use (sizes sorted).
    pub fn policy(&self) -> &BatchPolicy {
        &self.inner.policy
    }

    /// The worker's counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Clients registered now.
    pub fn clients(&self) -> usize {
        self.inner.clients.load(Ordering::SeqCst)
    }
}

/// One stream's handle on a [`Batcher`].
pub struct BatchClient<B: Backend> {
    inner: Arc<Inner<B>>,
    id: u64,
}

/// A submitted request; [`Pending::wait`] gives its outputs.
pub struct Pending<O> {
    state: PendingState<O>,
    model: String,
    limit: Duration,
    alive: Arc<AtomicBool>,
}

/// How often a long wait checks that the worker is still there (a request queued as it
/// went down is never answered, nor dropped while the queue lives).
const ALIVE_POLL: Duration = Duration::from_millis(50);

enum PendingState<O> {
    Done,
    Waiting(Receiver<Answer<O>>),
}

impl<O> Pending<O> {
    /// Waits for the outputs (one per submitted item, in order), at most the deadline plus
    /// the answer timeout.
    pub fn wait(self) -> Result<Vec<O>, BatchError> {
        match self.state {
            PendingState::Done => Ok(Vec::new()),
            PendingState::Waiting(rx) => {
                let until = Instant::now() + self.limit;
                loop {
                    let slice = until
                        .saturating_duration_since(Instant::now())
                        .min(ALIVE_POLL);
                    match rx.recv_timeout(slice) {
                        Ok(answer) => return answer,
                        Err(RecvTimeoutError::Disconnected) => {
                            return Err(BatchError::Stopped { model: self.model });
                        }
                        Err(RecvTimeoutError::Timeout) if Instant::now() >= until => {
                            return Err(BatchError::Timeout {
                                model: self.model,
                                waited: self.limit,
                            });
                        }
                        Err(RecvTimeoutError::Timeout) => {
                            if !self.alive.load(Ordering::SeqCst) {
                                // One last look: the answer may have come with the end.
                                return rx
                                    .try_recv()
                                    .unwrap_or(Err(BatchError::Stopped { model: self.model }));
                            }
                        }
                    }
                }
            }
        }
    }
}

impl<B: Backend> BatchClient<B> {
    /// Queues `items` for the next round (blocking while the bounded queue is full); an empty
    /// request counts as a [`BatchClient::skip`].
    pub fn submit(&self, items: Vec<B::Item>) -> Result<Pending<B::Output>, BatchError> {
        let limit = self.inner.policy.deadline + self.inner.policy.answer_timeout;
        let model = self.inner.name.clone();
        let alive = self.inner.alive.clone();
        if !alive.load(Ordering::SeqCst) {
            return Err(BatchError::Stopped { model });
        }
        if items.is_empty() {
            self.skip();
            return Ok(Pending {
                state: PendingState::Done,
                model,
                limit,
                alive,
            });
        }
        let (reply, rx) = crossbeam_channel::bounded(1);
        if let Some(core) = &self.inner.inline {
            // A caller that panicked inside the model left nothing half-done that matters:
            // the next call runs afresh.
            let mut core = core.lock().unwrap_or_else(PoisonError::into_inner);
            core.round(vec![Request {
                items,
                reply,
                at: Instant::now(),
            }]);
            return Ok(Pending {
                state: PendingState::Waiting(rx),
                model,
                limit,
                alive,
            });
        }
        self.inner
            .tx
            .send(Message::Request {
                client: self.id,
                items,
                reply,
                at: Instant::now(),
            })
            .map_err(|_| BatchError::Stopped {
                model: model.clone(),
            })?;
        Ok(Pending {
            state: PendingState::Waiting(rx),
            model,
            limit,
            alive,
        })
    }

    /// [`BatchClient::submit`] and [`Pending::wait`].
    pub fn run(&self, items: Vec<B::Item>) -> Result<Vec<B::Output>, BatchError> {
        self.submit(items)?.wait()
    }

    /// Says this client has nothing to run this time, so a round need not wait for it.
    /// Never blocks (with a full queue the worker is busy anyway).
    pub fn skip(&self) {
        if self.inner.inline.is_none() && self.inner.clients.load(Ordering::Relaxed) > 1 {
            let _ = self.inner.tx.try_send(Message::Skip { client: self.id });
        }
    }

    /// The batcher's name (the model's role).
    pub fn name(&self) -> &str {
        &self.inner.name
    }
}

impl<B: Backend> Drop for BatchClient<B> {
    fn drop(&mut self) {
        self.inner.clients.fetch_sub(1, Ordering::SeqCst);
        // Wakes a worker waiting for this client; with a full queue it is awake anyway.
        let _ = self.inner.tx.try_send(Message::Leave { client: self.id });
    }
}

/// Items of one key in a round: (key, [(request, item index, item)]).
type Group<B> = (
    <B as Backend>::Key,
    Vec<(usize, usize, <B as Backend>::Item)>,
);

struct Request<B: Backend> {
    items: Vec<B::Item>,
    reply: Sender<Answer<B::Output>>,
    at: Instant,
}

/// Marks the worker gone when it ends, also by a panic.
struct Alive(Arc<AtomicBool>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// The model and what running it needs: owned by the worker thread, or behind the lock of an
/// inline batcher.
struct Core<B: Backend> {
    backend: B,
    policy: BatchPolicy,
    stats: Arc<Stats>,
    warmed: Vec<B::Key>,
    name: String,
}

struct Worker<B: Backend> {
    /// Held for its drop only.
    _alive: Alive,
    core: Core<B>,
    rx: Receiver<Message<B>>,
    clients: Arc<AtomicUsize>,
}

impl<B: Backend> Worker<B> {
    fn run(mut self) {
        let mut pending: Vec<Request<B>> = Vec::new();
        // Clients heard from since the last round closed.
        let mut heard: HashSet<u64> = HashSet::new();
        let mut open = true;
        while open || !pending.is_empty() {
            let first = if let Some(oldest) = pending.first() {
                match self.rx.recv_deadline(oldest.at + self.core.policy.deadline) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => {
                        open = false;
                        None
                    }
                }
            } else {
                match self.rx.recv() {
                    Ok(m) => Some(m),
                    Err(_) => {
                        open = false;
                        None
                    }
                }
            };
            let mut next = first;
            while let Some(message) = next.take() {
                match message {
                    Message::Request {
                        client,
                        items,
                        reply,
                        at,
                    } => {
                        heard.insert(client);
                        pending.push(Request { items, reply, at });
                    }
                    Message::Skip { client } => {
                        heard.insert(client);
                    }
                    Message::Leave { client } => {
                        heard.remove(&client);
                    }
                }
                next = match self.rx.try_recv() {
                    Ok(m) => Some(m),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        None
                    }
                };
            }
            let Some(oldest) = pending.first() else {
                continue;
            };
            let items: usize = pending.iter().map(|r| r.items.len()).sum();
            let ready = !open
                || heard.len() >= self.clients.load(Ordering::SeqCst)
                || Instant::now() >= oldest.at + self.core.policy.deadline
                || items >= self.core.policy.max_batch();
            if ready {
                self.core.round(std::mem::take(&mut pending));
                heard.clear();
            }
        }
    }
}

impl<B: Backend> Core<B> {
    /// Runs every item of `requests` (grouped by key, in batches of at most the largest
    /// size, each padded) and answers each request.
    fn round(&mut self, requests: Vec<Request<B>>) {
        struct Slot<O> {
            outputs: Vec<Option<O>>,
            error: Option<BatchError>,
        }
        let mut slots: Vec<Slot<B::Output>> = Vec::with_capacity(requests.len());
        // (key, [(request, item index, item)]) in order of first appearance.
        let mut groups: Vec<Group<B>> = Vec::new();
        let mut replies = Vec::with_capacity(requests.len());
        for (r, request) in requests.into_iter().enumerate() {
            slots.push(Slot {
                outputs: (0..request.items.len()).map(|_| None).collect(),
                error: None,
            });
            replies.push(request.reply);
            for (i, item) in request.items.into_iter().enumerate() {
                let key = B::key(&item);
                match groups.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, members)) => members.push((r, i, item)),
                    None => groups.push((key, vec![(r, i, item)])),
                }
            }
        }
        let max = self.policy.max_batch();
        for (key, mut members) in groups {
            if self.policy.warm && !self.warmed.contains(&key) {
                for &size in &self.policy.sizes {
                    if let Err(message) = self.backend.warm(&key, size) {
                        tracing::warn!(model = %self.name, size, %message, "warm-up failed");
                    }
                }
                self.warmed.push(key.clone());
            }
            while !members.is_empty() {
                let rest = members.split_off(members.len().min(max));
                let chunk = std::mem::replace(&mut members, rest);
                let (owners, items): (Vec<(usize, usize)>, Vec<B::Item>) =
                    chunk.into_iter().map(|(r, i, item)| ((r, i), item)).unzip();
                let n = items.len();
                let padded = self.policy.padded(n);
                self.stats.inferences.fetch_add(1, Ordering::Relaxed);
                self.stats.items.fetch_add(n as u64, Ordering::Relaxed);
                self.stats
                    .padding
                    .fetch_add((padded - n) as u64, Ordering::Relaxed);
                let result = match self.backend.run(items, padded) {
                    Ok(outputs) if outputs.len() == n => Ok(outputs),
                    Ok(outputs) => Err(format!("{} outputs for {n} inputs", outputs.len())),
                    Err(message) => Err(message),
                };
                match result {
                    Ok(outputs) => {
                        for ((r, i), output) in owners.into_iter().zip(outputs) {
                            slots[r].outputs[i] = Some(output);
                        }
                    }
                    Err(message) => {
                        let error = BatchError::Failed {
                            model: self.name.clone(),
                            message,
                        };
                        for (r, _) in owners {
                            slots[r].error.get_or_insert_with(|| error.clone());
                        }
                    }
                }
            }
        }
        for (slot, reply) in slots.into_iter().zip(replies) {
            let answer = match slot.error {
                Some(e) => Err(e),
                None => slot
                    .outputs
                    .into_iter()
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| BatchError::Failed {
                        model: self.name.clone(),
                        message: "an output went missing".into(),
                    }),
            };
            // A requester that went away no longer wants its answer.
            let _ = reply.try_send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Each batch run: (items, padded, keys).
    type Seen = Arc<Mutex<Vec<(usize, usize, Vec<u32>)>>>;

    /// (shape key, value) in; value * 10 out. Records each batch.
    struct Times10 {
        seen: Seen,
        fail_on: Option<i64>,
        pause: Duration,
    }

    impl Backend for Times10 {
        type Item = (u32, i64);
        type Output = i64;
        type Key = u32;

        fn key(item: &(u32, i64)) -> u32 {
            item.0
        }

        fn run(&mut self, items: Vec<(u32, i64)>, padded: usize) -> Result<Vec<i64>, String> {
            thread::sleep(self.pause);
            self.seen.lock().unwrap().push((
                items.len(),
                padded,
                items.iter().map(|i| i.0).collect(),
            ));
            if items.iter().any(|i| Some(i.1) == self.fail_on) {
                return Err(format!("cannot take {:?}", self.fail_on));
            }
            Ok(items.iter().map(|i| i.1 * 10).collect())
        }

        fn warm(&mut self, _key: &u32, _padded: usize) -> Result<(), String> {
            Ok(())
        }
    }

    fn policy(deadline_ms: u64) -> BatchPolicy {
        BatchPolicy {
            sizes: vec![1, 2, 4, 8],
            deadline: Duration::from_millis(deadline_ms),
            queue: 16,
            answer_timeout: Duration::from_secs(20),
            warm: true,
            inline: false,
        }
    }

    fn start(deadline_ms: u64, fail_on: Option<i64>, pause_ms: u64) -> (Batcher<Times10>, Seen) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let backend = Times10 {
            seen: seen.clone(),
            fail_on,
            pause: Duration::from_millis(pause_ms),
        };
        (
            Batcher::start("test", backend, policy(deadline_ms), &[]).unwrap(),
            seen,
        )
    }

    #[test]
    fn an_inline_batcher_runs_each_request_on_its_callers_thread() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let backend = Times10 {
            seen: seen.clone(),
            fail_on: Some(7),
            pause: Duration::ZERO,
        };
        let policy = BatchPolicy {
            inline: true,
            ..policy(10_000)
        };
        let batcher = Batcher::start("inline", backend, policy, &[]).unwrap();
        let clients: Vec<_> = (0..2).map(|_| batcher.client()).collect();
        // Each request is its own inference, padded, answered before `submit` returns (no
        // waiting for the other client, whatever the deadline).
        assert_eq!(
            clients[0].run(vec![(0, 1), (0, 2), (0, 3)]).unwrap(),
            [10, 20, 30]
        );
        assert_eq!(clients[1].run(vec![(1, 4)]).unwrap(), [40]);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![(3, 4, vec![0; 3]), (1, 1, vec![1])]
        );
        // A failing inference is that request's error; the next one runs.
        assert!(matches!(
            clients[0].run(vec![(0, 7)]),
            Err(BatchError::Failed { .. })
        ));
        assert_eq!(clients[1].run(vec![(0, 5)]).unwrap(), [50]);
        clients[0].skip();
        assert!(clients[1].run(Vec::new()).unwrap().is_empty());
        // From several threads at once: each gets its own outputs.
        let handles: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(c, client)| {
                std::thread::spawn(move || {
                    (0..20)
                        .map(|i| client.run(vec![(0, 100 * (c as i64 + 1) + i)]).unwrap()[0])
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for (c, h) in handles.into_iter().enumerate() {
            let expected: Vec<i64> = (0..20).map(|i| (100 * (c as i64 + 1) + i) * 10).collect();
            assert_eq!(h.join().unwrap(), expected);
        }
        assert_eq!(batcher.stats().inferences.load(Ordering::Relaxed), 44);
        assert!(BatchPolicy::encoder(Provider::Cpu).inline);
        assert!(BatchPolicy::detector(Provider::Cpu).inline);
        assert!(!BatchPolicy::encoder(Provider::Cuda).inline);
    }

    #[test]
    fn one_round_batches_every_stream_and_answers_each_in_order() {
        // A long deadline: the round closes because every client has been heard from.
        let (batcher, seen) = start(10_000, None, 0);
        let clients: Vec<_> = (0..3).map(|_| batcher.client()).collect();
        let a = clients[0].submit(vec![(0, 1), (0, 2)]).unwrap();
        let b = clients[1].submit(vec![(0, 3)]).unwrap();
        let c = clients[2].submit(vec![(0, 4), (0, 5), (0, 6)]).unwrap();
        assert_eq!(a.wait().unwrap(), vec![10, 20]);
        assert_eq!(b.wait().unwrap(), vec![30]);
        assert_eq!(c.wait().unwrap(), vec![40, 50, 60]);
        // Six items in one inference, padded to eight.
        assert_eq!(*seen.lock().unwrap(), vec![(6, 8, vec![0; 6])]);
        assert_eq!(batcher.stats().padding.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_lone_client_never_waits_and_batches_are_padded_to_fixed_sizes() {
        let (batcher, seen) = start(10_000, None, 0);
        let client = batcher.client();
        assert_eq!(client.run(vec![(0, 7)]).unwrap(), vec![70]);
        assert_eq!(client.run(vec![(0, 1); 3]).unwrap(), vec![10; 3]);
        // More than the largest size: nine items run as eight and one.
        let many: Vec<_> = (0..9).map(|v| (0, v)).collect();
        let out = client.run(many).unwrap();
        assert_eq!(out, (0..9).map(|v| v * 10).collect::<Vec<_>>());
        let seen = seen.lock().unwrap();
        let shapes: Vec<(usize, usize)> = seen.iter().map(|s| (s.0, s.1)).collect();
        assert_eq!(shapes, vec![(1, 1), (3, 4), (8, 8), (1, 1)]);
    }

    #[test]
    fn the_deadline_bounds_the_wait_for_a_silent_stream() {
        let (batcher, seen) = start(150, None, 0);
        let talking = batcher.client();
        let _silent = batcher.client();
        let started = Instant::now();
        assert_eq!(talking.run(vec![(0, 1)]).unwrap(), vec![10]);
        let waited = started.elapsed();
        // It waited for the silent stream, but only until the deadline.
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_skip_or_a_departed_stream_closes_the_round_without_the_deadline() {
        let (batcher, _) = start(60_000, None, 0);
        let a = batcher.client();
        let b = batcher.client();
        // b has nothing this frame: a's request runs at once.
        b.skip();
        assert_eq!(a.run(vec![(0, 2)]).unwrap(), vec![20]);
        // b goes away while a waits for it: a's request runs at once.
        let pending = a.submit(vec![(0, 3)]).unwrap();
        drop(b);
        assert_eq!(pending.wait().unwrap(), vec![30]);
        assert_eq!(batcher.clients(), 1);
        // A requester that went away before its answer does not disturb the others.
        let c = batcher.client();
        let gone = c.submit(vec![(0, 4)]).unwrap();
        drop(gone);
        drop(c);
        assert_eq!(a.run(vec![(0, 5)]).unwrap(), vec![50]);
    }

    #[test]
    fn items_of_different_shapes_never_share_an_inference() {
        let (batcher, seen) = start(10_000, None, 0);
        let a = batcher.client();
        let b = batcher.client();
        let pa = a.submit(vec![(1, 1), (2, 2)]).unwrap();
        let pb = b.submit(vec![(2, 3), (1, 4)]).unwrap();
        assert_eq!(pa.wait().unwrap(), vec![10, 20]);
        assert_eq!(pb.wait().unwrap(), vec![30, 40]);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert!(
            seen.iter()
                .all(|(_, _, keys)| keys.windows(2).all(|w| w[0] == w[1]))
        );
    }

    #[test]
    fn a_failed_inference_is_an_error_for_its_requesters_and_the_worker_goes_on() {
        let (batcher, _) = start(10_000, Some(13), 0);
        let a = batcher.client();
        let err = a.run(vec![(0, 1), (0, 13)]).unwrap_err();
        assert!(
            matches!(&err, BatchError::Failed { message, .. } if message.contains("13")),
            "{err}"
        );
        assert_eq!(a.run(vec![(0, 2)]).unwrap(), vec![20]);
    }

    #[test]
    fn a_dead_worker_is_an_error_not_a_hang() {
        struct Panics;
        impl Backend for Panics {
            type Item = u8;
            type Output = u8;
            type Key = ();
            fn key(_: &u8) {}
            fn run(&mut self, _: Vec<u8>, _: usize) -> Result<Vec<u8>, String> {
                panic!("backend crashed");
            }
            fn warm(&mut self, _: &(), _: usize) -> Result<(), String> {
                Ok(())
            }
        }
        let batcher = Batcher::start("panics", Panics, policy(0), &[]).unwrap();
        let client = batcher.client();
        let err = client.run(vec![1]).unwrap_err();
        assert_eq!(
            err,
            BatchError::Stopped {
                model: "panics".into()
            }
        );
        // Later requests fail too, also one queued as the worker went down.
        assert!(client.run(vec![1]).is_err());
        assert!(client.run(vec![1]).is_err());
    }

    #[test]
    fn a_busy_worker_batches_what_queued_meanwhile_without_a_deadline() {
        // Deadline zero (the CPU policy): nothing waits, but requests that arrive while an
        // inference runs go together into the next one. The first inference holds until the
        // test has queued the others.
        struct Gated {
            started: Sender<()>,
            go: Receiver<()>,
            seen: Vec<usize>,
            report: Sender<Vec<usize>>,
        }
        impl Backend for Gated {
            type Item = i64;
            type Output = i64;
            type Key = ();
            fn key(_: &i64) {}
            fn run(&mut self, items: Vec<i64>, padded: usize) -> Result<Vec<i64>, String> {
                if self.seen.is_empty() {
                    let _ = self.started.send(());
                    let _ = self.go.recv();
                }
                self.seen.push(padded);
                let _ = self.report.send(self.seen.clone());
                Ok(items)
            }
            fn warm(&mut self, _: &(), _: usize) -> Result<(), String> {
                Ok(())
            }
        }
        let (started_tx, started) = crossbeam_channel::bounded(1);
        let (go, go_rx) = crossbeam_channel::bounded(1);
        let (report, reports) = crossbeam_channel::unbounded();
        let backend = Gated {
            started: started_tx,
            go: go_rx,
            seen: Vec::new(),
            report,
        };
        let batcher = Batcher::start("gated", backend, policy(0), &[]).unwrap();
        let clients: Vec<_> = (0..4).map(|_| batcher.client()).collect();
        let first = clients[0].submit(vec![1]).unwrap();
        started.recv().unwrap();
        let rest: Vec<_> = clients[1..]
            .iter()
            .map(|c| c.submit(vec![2]).unwrap())
            .collect();
        // All three are in the queue now (submit returns once queued); let the first go on.
        go.send(()).unwrap();
        assert_eq!(first.wait().unwrap(), vec![1]);
        for p in rest {
            assert_eq!(p.wait().unwrap(), vec![2]);
        }
        let last = reports.try_iter().last().unwrap();
        assert_eq!(
            last,
            vec![1, 4],
            "one of 1, then the three queued ones padded to 4"
        );
    }

    #[test]
    fn policies_pad_up_to_their_sizes() {
        let p = BatchPolicy::encoder(Provider::Cuda);
        assert_eq!(p.sizes, vec![1, 2, 4, 8, 16]);
        assert_eq!((p.padded(3), p.padded(9), p.padded(17)), (4, 16, 17));
        assert_eq!(p.deadline, GPU_DEADLINE);
        assert_eq!(BatchPolicy::encoder(Provider::Cpu).deadline, Duration::ZERO);
        assert_eq!(BatchPolicy::detector(Provider::Cpu).max_batch(), 1);
        assert!(p.warm && !BatchPolicy::encoder(Provider::Cpu).warm);
        assert_eq!(BatchPolicy::detector(Provider::Cuda).max_batch(), 8);
    }
}
