//! Per-client request rates: a token bucket for each API key presented (by a hash of it)
//! or, for requests without one, each client address. A client over its rate gets 429
//! with `Retry-After` instead of a place in a queue; others are not slowed. And the cap on
//! requests in flight, all clients together ([`InFlight`]): past it, 503 at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::{Payload, ServiceRequest};
use actix_web::error::PayloadError;
use actix_web::web::Bytes;
use futures_util::StreamExt;

/// What a request body is read through.
type BoxedPayloadStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, PayloadError>>>>;

use crate::settings::RateLimit;

/// API requests being answered, all workers together, and the most allowed at once.
pub struct InFlight {
    now: AtomicUsize,
    limit: usize,
}

/// One request's place in [`InFlight`], given back when dropped.
pub struct InFlightSlot(Arc<InFlight>);

impl InFlight {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { now: AtomicUsize::new(0), limit })
    }

    /// A place for one more request, or `None` when all are taken (nobody waits for one).
    pub fn enter(self: &Arc<Self>) -> Option<InFlightSlot> {
        let mut now = self.now.load(Ordering::Acquire);
        loop {
            if now >= self.limit {
                return None;
            }
            match self.now.compare_exchange_weak(now, now + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(InFlightSlot(self.clone())),
                Err(seen) => now = seen,
            }
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Requests being answered now.
    pub fn current(&self) -> usize {
        self.now.load(Ordering::Acquire)
    }
}

impl Drop for InFlightSlot {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Clients tracked at most; past it, buckets that have refilled (idle clients) are dropped.
const MAX_CLIENTS: usize = 100_000;

/// The buckets of every client.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// `None` when the settings turn limits off (`per_second = 0`).
    pub fn new(limit: &RateLimit) -> Option<Self> {
        (limit.per_second > 0.0).then(|| Self {
            per_second: limit.per_second,
            burst: f64::from(limit.burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Takes one request's token for `client`; `Err(wait)`: none left, one is back after `wait`.
    pub fn take(&self, client: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(client) {
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let b = buckets.entry(client.to_string()).or_insert(Bucket { tokens: self.burst, at: now });
        b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * self.per_second).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_second))
        }
    }
}

/// Whom a request counts against: its bearer key (hashed: keys are not kept in memory in
/// the clear), else its peer address.
pub fn client_of(req: &ServiceRequest) -> String {
    let key = super::auth::bearer(req.headers()).filter(|k| !k.is_empty());
    match key {
        Some(k) => format!("key:{}", &contract::sha256_hex(k.as_bytes())[..16]),
        None => format!("addr:{}", req.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default()),
    }
}

/// `payload`, ending in a timed-out error at `deadline`: a client trickling its body
/// cannot hold a request (and its memory) for longer.
pub fn with_deadline(payload: Payload, deadline: tokio::time::Instant) -> Payload {
    let stream = futures_util::stream::unfold(Some(payload), move |state| async move {
        let mut payload = state?;
        match tokio::time::timeout_at(deadline, payload.next()).await {
            Ok(Some(item)) => Some((item, Some(payload))),
            Ok(None) => None,
            Err(_) => {
                Some((Err(PayloadError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, BODY_TIMED_OUT))), None))
            }
        }
    });
    let boxed: BoxedPayloadStream = Box::pin(stream);
    Payload::from(boxed)
}

/// The place a request with a body takes once the body has come (see
/// [`place_when_complete`]), or the refusal when none was free.
#[derive(Default)]
pub struct BodyPlace {
    slot: Mutex<Option<InFlightSlot>>,
    refused: std::sync::atomic::AtomicBool,
}

impl BodyPlace {
    /// Gives the place back (if one was taken); true when the body found none free.
    pub fn release(&self) -> bool {
        drop(self.slot.lock().unwrap_or_else(|p| p.into_inner()).take());
        self.refused.load(Ordering::Acquire)
    }
}

/// `payload`, taking a place in `in_flight` once it has all come (kept in `place` until
/// [`BodyPlace::release`]): a client still sending its body takes no place, so slow
/// uploads cannot crowd others out. When no place is free the body ends in an error and
/// the refusal is noted in `place`, for the caller to answer 503.
pub fn place_when_complete(payload: Payload, in_flight: Arc<InFlight>, place: Arc<BodyPlace>) -> Payload {
    let stream = futures_util::stream::unfold(Some(payload), move |state| {
        let (in_flight, place) = (in_flight.clone(), place.clone());
        async move {
            let mut payload = state?;
            match payload.next().await {
                Some(item) => Some((item, Some(payload))),
                None => match in_flight.enter() {
                    Some(slot) => {
                        *place.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(slot);
                        None
                    }
                    None => {
                        place.refused.store(true, Ordering::Release);
                        let e = std::io::Error::other("the server is answering too many requests");
                        Some((Err(PayloadError::Io(e)), None))
                    }
                },
            }
        }
    });
    let boxed: BoxedPayloadStream = Box::pin(stream);
    Payload::from(boxed)
}

/// The message of a body cut off by [`with_deadline`].
pub const BODY_TIMED_OUT: &str = "the request body did not arrive in time";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_has_its_own_bucket() {
        let limiter = RateLimiter::new(&RateLimit { per_second: 2.0, burst: 3 }).unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.take("a", t0).unwrap();
        }
        let wait = limiter.take("a", t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        limiter.take("b", t0).expect("another client is not slowed");
        limiter.take("a", t0 + Duration::from_millis(500)).expect("refilled at the rate");
        assert!(limiter.take("a", t0 + Duration::from_millis(500)).is_err());
        assert!(RateLimiter::new(&RateLimit { per_second: 0.0, burst: 10 }).is_none(), "0 turns it off");
    }
}
