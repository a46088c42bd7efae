//! The bounded, lock-free hand-off between receivers and exporters, limited in spans and bytes.
//!
//! Modelled on vector's `limited_queue`: a crossbeam `ArrayQueue` for the items, atomics for the
//! span/byte budget and a tokio `Notify` to wake the single consumer. Producers never wait,
//! except one that asks to ([`Queue::wait_for_room`]: the Kafka receiver, which holds messages).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crossbeam_queue::ArrayQueue;
use tokio::sync::Notify;

use crate::model::Batch;

/// Most requests that may wait at once, whatever their size (bounds the slot array's memory).
pub const MAX_QUEUED_BATCHES: usize = 4096;

/// Why a batch was not queued; the batch is handed back.
#[derive(Debug)]
pub enum PushError {
    /// Over the span or byte budget: the caller answers with a retryable status.
    Full(Batch),
    /// The agent is draining and admits nothing new.
    Closed(Batch),
}

/// A multi-producer, single-consumer queue of batches bounded by spans and bytes.
#[derive(Debug)]
pub struct Queue {
    items: ArrayQueue<Batch>,
    spans: AtomicUsize,
    bytes: AtomicUsize,
    /// Slots of `items` reserved: a push that reserved one cannot find the array full (after
    /// span metrics recorded the batch).
    batches: AtomicUsize,
    max_spans: usize,
    max_bytes: usize,
    notify: Notify,
    closed: AtomicBool,
    /// Wakes producers waiting for room; `room_wanted` keeps pops from touching it otherwise.
    room: Notify,
    room_wanted: AtomicBool,
}

impl Queue {
    pub fn new(max_spans: usize, max_bytes: usize) -> Self {
        Queue {
            items: ArrayQueue::new(MAX_QUEUED_BATCHES.min(max_spans.max(1))),
            spans: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            batches: AtomicUsize::new(0),
            max_spans,
            max_bytes,
            notify: Notify::new(),
            closed: AtomicBool::new(false),
            room: Notify::new(),
            room_wanted: AtomicBool::new(false),
        }
    }

    /// Queues a batch without waiting. An empty queue takes any batch, so one request larger than
    /// the budget (but within the request size cap) is never refused forever.
    pub fn try_push(&self, batch: Batch) -> Result<(), PushError> {
        self.try_push_with(batch, |_| {})
    }

    /// [`Queue::try_push`], calling `admitted` with the batch once the budget is reserved and
    /// just before it is queued (span metrics record there: refused batches are not seen).
    pub fn try_push_with(
        &self,
        batch: Batch,
        admitted: impl FnOnce(&Batch),
    ) -> Result<(), PushError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PushError::Closed(batch));
        }
        let (spans, bytes) = (batch.spans.len(), batch.size_bytes());
        // Optimistic reservation: add, then roll back if over budget. Concurrent producers may
        // briefly see each other's reservations and refuse early; they never overshoot.
        let prev_spans = self.spans.fetch_add(spans, Ordering::SeqCst);
        let prev_bytes = self.bytes.fetch_add(bytes, Ordering::SeqCst);
        let prev_batches = self.batches.fetch_add(1, Ordering::SeqCst);
        let empty = prev_spans == 0 && prev_bytes == 0;
        if prev_batches >= self.items.capacity()
            || (!empty
                && (prev_spans + spans > self.max_spans || prev_bytes + bytes > self.max_bytes))
        {
            self.release(spans, bytes);
            return Err(PushError::Full(batch));
        }
        admitted(&batch);
        match self.items.push(batch) {
            Ok(()) => {
                self.notify.notify_one();
                Ok(())
            }
            // Not reached: the slot was reserved above.
            Err(batch) => {
                self.release(spans, bytes);
                Err(PushError::Full(batch))
            }
        }
    }

    // SeqCst here and in `wait_for_room`: a waiter that finds no room after saying it wants
    // some is then seen by the pop that makes room.
    fn release(&self, spans: usize, bytes: usize) {
        self.spans.fetch_sub(spans, Ordering::SeqCst);
        self.bytes.fetch_sub(bytes, Ordering::SeqCst);
        self.batches.fetch_sub(1, Ordering::SeqCst);
    }

    /// Whether a batch of `spans` and `bytes` would be queued now (it may not be, by the time it
    /// is pushed, if another producer came first).
    pub fn fits(&self, spans: usize, bytes: usize) -> bool {
        let queued_spans = self.spans.load(Ordering::SeqCst);
        let queued_bytes = self.bytes.load(Ordering::SeqCst);
        self.batches.load(Ordering::SeqCst) < self.items.capacity()
            && ((queued_spans == 0 && queued_bytes == 0)
                || (queued_spans + spans <= self.max_spans
                    && queued_bytes + bytes <= self.max_bytes))
    }

    /// Waits until a batch of `spans` and `bytes` would fit, or the queue is closed.
    pub async fn wait_for_room(&self, spans: usize, bytes: usize) {
        loop {
            let woken = self.room.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            self.room_wanted.store(true, Ordering::SeqCst);
            if self.fits(spans, bytes) || self.is_closed() {
                return;
            }
            woken.await;
        }
    }

    /// Whether a batch of about `bytes` could be queued now (a cheap early check; `try_push`
    /// still decides). An empty queue takes anything.
    pub fn might_fit(&self, bytes: usize) -> bool {
        let queued = self.bytes.load(Ordering::Relaxed);
        queued == 0 || queued + bytes <= self.max_bytes
    }

    /// Takes the next batch without waiting.
    pub fn try_pop(&self) -> Option<Batch> {
        let batch = self.items.pop()?;
        self.release(batch.spans.len(), batch.size_bytes());
        if self.room_wanted.load(Ordering::SeqCst) && self.room_wanted.swap(false, Ordering::SeqCst)
        {
            self.room.notify_waiters();
        }
        Some(batch)
    }

    /// Waits for the next batch; `None` once the queue is closed and empty. One consumer only.
    pub async fn pop(&self) -> Option<Batch> {
        loop {
            if let Some(batch) = self.try_pop() {
                return Some(batch);
            }
            if self.closed.load(Ordering::Acquire) {
                // A push may have won the race with close(): look once more.
                return self.try_pop();
            }
            self.notify.notified().await;
        }
    }

    /// Stops admitting; the consumer drains what is queued and then sees `None`.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_one();
        self.room.notify_waiters();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub fn queued_spans(&self) -> usize {
        self.spans.load(Ordering::Relaxed)
    }

    pub fn queued_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn max_spans(&self) -> usize {
        self.max_spans
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

impl crate::telemetry::Stats for Queue {
    fn render(&self, o: &mut String) {
        use crate::telemetry::family;
        for (name, help, v) in [
            (
                "sidetrace_queue_spans",
                "Spans waiting in the pipeline queue.",
                self.queued_spans(),
            ),
            (
                "sidetrace_queue_bytes",
                "Bytes waiting in the pipeline queue.",
                self.queued_bytes(),
            ),
            (
                "sidetrace_queue_capacity_spans",
                "Span budget of the pipeline queue.",
                self.max_spans(),
            ),
            (
                "sidetrace_queue_capacity_bytes",
                "Byte budget of the pipeline queue.",
                self.max_bytes(),
            ),
        ] {
            family(o, name, "gauge", help, [(String::new(), v as u64)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Protocol, SpanInfo};

    fn batch(spans: usize) -> Batch {
        let info = SpanInfo {
            trace_id: [1; 16],
            span_id: [1; 8],
            parent_span_id: [0; 8],
            kind: 0,
            start_unix_nano: 0,
            end_unix_nano: 0,
            status_code: 0,
            name: 0..0,
            trace_state: 0..0,
            bytes: 0..0,
            resource: 0,
            scope: 0,
            http: Default::default(),
        };
        Batch {
            protocol: Protocol::Grpc,
            buf: bytes::Bytes::from(vec![0u8; 100]),
            resources: vec![],
            scopes: vec![],
            spans: vec![info; spans],
            ticket: Default::default(),
        }
    }

    #[test]
    fn refuses_over_span_budget_but_always_takes_into_empty_queue() {
        let q = Queue::new(10, 1 << 20);
        assert!(
            q.try_push(batch(25)).is_ok(),
            "empty queue admits an oversized batch"
        );
        assert!(matches!(q.try_push(batch(1)), Err(PushError::Full(_))));
        assert_eq!(q.try_pop().unwrap().spans.len(), 25);
        assert!(q.try_push(batch(6)).is_ok());
        assert!(q.try_push(batch(4)).is_ok());
        assert!(matches!(q.try_push(batch(1)), Err(PushError::Full(_))));
        assert_eq!(q.queued_spans(), 10);
    }

    #[test]
    fn refuses_over_byte_budget() {
        let q = Queue::new(1000, 2 * batch(1).size_bytes());
        assert!(q.try_push(batch(1)).is_ok());
        assert!(q.try_push(batch(1)).is_ok());
        assert!(matches!(q.try_push(batch(1)), Err(PushError::Full(_))));
    }

    #[test]
    fn a_full_slot_array_refuses_before_the_batch_is_seen() {
        let q = Queue::new(MAX_QUEUED_BATCHES * 10, usize::MAX);
        for _ in 0..MAX_QUEUED_BATCHES {
            q.try_push(batch(1)).unwrap();
        }
        let mut seen = false;
        assert!(matches!(
            q.try_push_with(batch(1), |_| seen = true),
            Err(PushError::Full(_))
        ));
        assert!(!seen, "span metrics must not record a refused batch");
        assert!(!q.fits(1, 1));
        q.try_pop().unwrap();
        assert!(q.fits(1, 1));
        q.try_push(batch(1)).unwrap();
    }

    #[tokio::test]
    async fn a_producer_waiting_for_room_wakes_when_a_batch_leaves() {
        let q = std::sync::Arc::new(Queue::new(10, 1 << 20));
        q.try_push(batch(8)).unwrap();
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.wait_for_room(5, 100).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "8 + 5 spans do not fit in 10");
        q.try_pop().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken by the pop")
            .unwrap();
    }

    #[tokio::test]
    async fn close_drains_then_ends() {
        let q = Queue::new(100, 1 << 20);
        q.try_push(batch(2)).unwrap();
        q.close();
        assert!(matches!(q.try_push(batch(1)), Err(PushError::Closed(_))));
        assert_eq!(q.pop().await.unwrap().spans.len(), 2);
        assert!(q.pop().await.is_none());
        assert_eq!((q.queued_spans(), q.queued_bytes()), (0, 0));
    }

    #[tokio::test]
    async fn pop_wakes_on_push() {
        let q = std::sync::Arc::new(Queue::new(100, 1 << 20));
        let consumer = tokio::spawn({
            let q = q.clone();
            async move { q.pop().await.map(|b| b.spans.len()) }
        });
        tokio::task::yield_now().await;
        q.try_push(batch(3)).unwrap();
        assert_eq!(consumer.await.unwrap(), Some(3));
    }
}
