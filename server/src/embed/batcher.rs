//! Dynamic batching: concurrent requests queue their preprocessed images; a dispatcher
//! thread takes up to `max_batch` of them (those queued, waiting at most `max_wait` after
//! the first for more) and has them embedded in one inference call, routing each vector
//! back to its caller. Requests arriving during a call queue up for the next one.
//!
//! Where the model has streams (narrow sessions, see [`OnnxModel`]), a lone image with
//! nothing else running is embedded by the dispatcher itself on the wide session (all
//! threads: the lowest latency, no hand-off), and anything else waits for a free stream,
//! is topped up with what queued meanwhile, and is shared out among all the streams free
//! then: under load, batches run side by side, none waits for another's threads, and no
//! core idles while one stream works through a large batch alone. Without streams the
//! dispatcher runs every batch on the wide session.

use std::sync::atomic::{AtomicUsize, Ordering};
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

/// Queue in front of the inference threads.
pub struct Batcher {
    tx: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Batcher {
    /// Starts the dispatcher for `model`, and a thread per stream of it.
    pub fn start(model: Arc<OnnxModel>, settings: &BatchSettings, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(settings.queue_capacity);
        let running = Arc::new(AtomicUsize::new(0));
        let (free_tx, free_rx) = crossbeam_channel::unbounded();
        let mut threads = Vec::new();
        let mut streams = Vec::new();
        for stream in 0..model.streams() {
            let (batch_tx, batch_rx) = crossbeam_channel::bounded::<Vec<Job>>(1);
            let (model, metrics, running, free_tx) = (model.clone(), metrics.clone(), running.clone(), free_tx.clone());
            free_tx.send(stream).expect("the free list is open");
            let worker = move || {
                for jobs in batch_rx {
                    run(&model, Some(stream), jobs, &metrics);
                    running.fetch_sub(1, Ordering::AcqRel);
                    if free_tx.send(stream).is_err() {
                        break;
                    }
                }
            };
            threads.push(spawn(&format!("inference-{stream}"), worker));
            streams.push(batch_tx);
        }
        let dispatcher = Dispatcher {
            model,
            rx,
            streams,
            free: free_rx,
            running,
            metrics,
            max_batch: settings.max_batch,
            max_wait: Duration::from_millis(settings.max_wait_ms),
        };
        threads.push(spawn("inference", move || dispatcher.run()));
        Self { tx: Some(tx), threads }
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
        // The dispatcher ends when the queue closes, and the streams when it has gone.
        self.tx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new().name(name.into()).spawn(f).expect("the OS can start a thread")
}

/// Forms batches and decides where each runs.
struct Dispatcher {
    model: Arc<OnnxModel>,
    rx: Receiver<Job>,
    /// One queue per stream thread (each holds at most the batch it is given).
    streams: Vec<Sender<Vec<Job>>>,
    /// Streams with nothing to do.
    free: Receiver<usize>,
    /// Batches running on the streams now.
    running: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    max_batch: usize,
    max_wait: Duration,
}

impl Dispatcher {
    fn run(self) {
        while let Ok(first) = self.rx.recv() {
            let deadline = Instant::now() + self.max_wait;
            let mut jobs = vec![first];
            while jobs.len() < self.max_batch {
                match self.rx.recv_deadline(deadline) {
                    Ok(job) => jobs.push(job),
                    Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            let lone = jobs.len() == 1 && self.running.load(Ordering::Acquire) == 0;
            if self.streams.is_empty() || lone {
                run(&self.model, None, jobs, &self.metrics);
                continue;
            }
            let Ok(first_free) = self.free.recv() else { break };
            // What queued while every stream was busy joins these images, and they are
            // shared out among all the streams free now, so that no core idles while
            // another stream works through a large batch alone.
            while jobs.len() < self.max_batch {
                match self.rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let mut free = vec![first_free];
            while free.len() < jobs.len() {
                match self.free.try_recv() {
                    Ok(s) => free.push(s),
                    Err(_) => break,
                }
            }
            let shares = split(jobs, free.len());
            for (stream, share) in free.into_iter().zip(shares) {
                self.running.fetch_add(1, Ordering::AcqRel);
                if self.streams[stream].send(share).is_err() {
                    return;
                }
            }
        }
    }
}

/// `jobs` in `parts` runs of near-equal length (the first ones longer), in order.
fn split<T>(mut jobs: Vec<T>, parts: usize) -> Vec<Vec<T>> {
    let parts = parts.clamp(1, jobs.len().max(1));
    let mut out = Vec::with_capacity(parts);
    for i in (1..=parts).rev() {
        let take = jobs.len().div_ceil(i);
        let rest = jobs.split_off(take);
        out.push(std::mem::replace(&mut jobs, rest));
    }
    out
}

/// Embeds `jobs` in one call (on `stream`, or the wide session) and answers each.
fn run(model: &OnnxModel, stream: Option<usize>, mut jobs: Vec<Job>, metrics: &Metrics) {
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
    let result = match stream {
        Some(s) => model.embed_on(s, input, n),
        None => model.embed(input, n),
    };
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

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn split_shares_out_in_order_and_nearly_evenly() {
        assert_eq!(split((0..8).collect(), 2), vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
        assert_eq!(split((0..7).collect(), 3), vec![vec![0, 1, 2], vec![3, 4], vec![5, 6]]);
        assert_eq!(split(vec![1], 4), vec![vec![1]], "never an empty share");
        assert_eq!(split((0..3).collect::<Vec<i32>>(), 1), vec![vec![0, 1, 2]]);
    }
}
