//! The one batching helper of every exporter: items collect until a weight (documents, spans) or
//! byte limit is reached, or until the oldest has waited the idle time.

use std::time::Duration;

use tokio::time::Instant;

/// When a batch is full, and how long a partial one may wait.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Most weight per batch: documents for X-Ray, spans for OTLP.
    pub max_weight: usize,
    pub max_bytes: usize,
    /// A partial batch goes out once its oldest item waited this long.
    pub idle: Duration,
}

/// A batch being filled.
#[derive(Debug)]
pub struct Batcher<T> {
    items: Vec<T>,
    weight: usize,
    bytes: usize,
    oldest: Option<Instant>,
    pub limits: BatchLimits,
}

/// A batch taken out of a [`Batcher`].
#[derive(Debug)]
pub struct Taken<T> {
    pub items: Vec<T>,
    pub weight: usize,
    pub bytes: usize,
}

impl<T> Batcher<T> {
    pub fn new(limits: BatchLimits) -> Self {
        Batcher {
            items: Vec::new(),
            weight: 0,
            bytes: 0,
            oldest: None,
            limits,
        }
    }

    /// The weight and bytes still free in this batch.
    pub fn room(&self) -> (usize, usize) {
        (
            self.limits.max_weight.saturating_sub(self.weight),
            self.limits.max_bytes.saturating_sub(self.bytes),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Weight held now.
    pub fn weight(&self) -> usize {
        self.weight
    }

    /// Adds an item (the caller checked [`Batcher::room`]); true when the batch is now full.
    pub fn push(&mut self, item: T, weight: usize, bytes: usize, now: Instant) -> bool {
        self.items.push(item);
        self.weight += weight;
        self.bytes += bytes;
        self.oldest.get_or_insert(now);
        self.weight >= self.limits.max_weight || self.bytes >= self.limits.max_bytes
    }

    /// True when a partial batch has waited the idle time.
    pub fn is_due(&self, now: Instant) -> bool {
        self.oldest
            .is_some_and(|t| now.duration_since(t) >= self.limits.idle)
    }

    /// Takes what is batched, if anything.
    pub fn take(&mut self) -> Option<Taken<T>> {
        if self.items.is_empty() {
            return None;
        }
        self.oldest = None;
        let taken = Taken {
            items: std::mem::take(&mut self.items),
            weight: self.weight,
            bytes: self.bytes,
        };
        self.weight = 0;
        self.bytes = 0;
        Some(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fills_by_weight_or_bytes_and_ages_out() {
        let limits = BatchLimits {
            max_weight: 3,
            max_bytes: 100,
            idle: Duration::from_secs(1),
        };
        let mut b = Batcher::new(limits);
        let t0 = Instant::now();
        assert!(!b.push("a", 1, 10, t0));
        assert!(!b.push("b", 1, 10, t0));
        assert_eq!(b.room(), (1, 80));
        assert!(b.push("c", 1, 10, t0), "full by weight");
        let t = b.take().unwrap();
        assert_eq!((t.items, t.weight, t.bytes), (vec!["a", "b", "c"], 3, 30));
        assert!(b.take().is_none());
        assert!(b.push("big", 1, 100, t0), "full by bytes");
        b.take();
        b.push("late", 1, 1, t0);
        assert!(!b.is_due(t0 + Duration::from_millis(999)));
        assert!(b.is_due(t0 + Duration::from_secs(1)));
    }
}
