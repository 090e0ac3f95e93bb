//! Dynamic batching: concurrent requests queue their preprocessed images; a dedicated
//! thread takes up to `max_batch` of them (those queued, waiting at most `max_wait` after
//! the first for more), runs one inference call, and routes each vector back to its
//! caller. Requests arriving during a call queue up for the next one.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use tokio::sync::oneshot;

use crate::metrics::Metrics;
use crate::runtime::OnnxModel;
use crate::settings::BatchSettings;
use crate::{Error, Result};

struct Job {
    /// `[3, crop, crop]`
    input: Vec<f32>,
    reply: oneshot::Sender<Result<Vec<f32>>>,
}

/// Queue in front of the inference thread.
pub struct Batcher {
    tx: Option<Sender<Job>>,
    worker: Option<JoinHandle<()>>,
}

impl Batcher {
    /// Starts the inference thread for `model`.
    pub fn start(model: Arc<OnnxModel>, settings: &BatchSettings, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(settings.queue_capacity);
        let max_batch = settings.max_batch;
        let max_wait = Duration::from_millis(settings.max_wait_ms);
        let worker = std::thread::Builder::new()
            .name("inference".into())
            .spawn(move || run(&model, &rx, max_batch, max_wait, &metrics))
            .expect("the OS can start a thread");
        Self { tx: Some(tx), worker: Some(worker) }
    }

    /// Embeds one preprocessed image, batched with whatever else is queued.
    ///
    /// # Shapes
    /// - `input`: `[3, crop, crop]`; returns `[embedding_dim]`
    pub async fn embed(&self, input: Vec<f32>) -> Result<Vec<f32>> {
        let (reply, answer) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or(Error::Unavailable)?;
        tx.try_send(Job { input, reply }).map_err(|e| match e {
            TrySendError::Full(_) | TrySendError::Disconnected(_) => Error::Unavailable,
        })?;
        answer.await.map_err(|_| Error::Unavailable)?
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

fn run(model: &OnnxModel, rx: &Receiver<Job>, max_batch: usize, max_wait: Duration, metrics: &Metrics) {
    while let Ok(first) = rx.recv() {
        let deadline = Instant::now() + max_wait;
        let mut jobs = vec![first];
        while jobs.len() < max_batch {
            match rx.recv_deadline(deadline) {
                Ok(job) => jobs.push(job),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let n = jobs.len();
        let (input, replies) = if n == 1 {
            let job = jobs.remove(0);
            (job.input, vec![job.reply])
        } else {
            let mut input = Vec::with_capacity(n * model.input_len());
            let mut replies = Vec::with_capacity(n);
            for job in jobs {
                input.extend_from_slice(&job.input);
                replies.push(job.reply);
            }
            (input, replies)
        };
        let started = Instant::now();
        let result = model.embed(input, n);
        metrics.observe_batch(n, started.elapsed().as_secs_f64());
        match result {
            Ok(vectors) => {
                for (reply, v) in replies.into_iter().zip(vectors) {
                    let _ = reply.send(Ok(v));
                }
            }
            Err(e) => {
                tracing::error!("batch of {n} failed: {e}");
                let msg = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(Error::Inference(msg.clone())));
                }
            }
        }
    }
}
