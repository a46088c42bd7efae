//! HdrHistogram's log-linear buckets (3 significant digits, 1 µs to 1 h), counted in pages that
//! are allocated on first use, written by one thread and read by any without a lock.
//!
//! The index math is HdrHistogram's (`sub_bucket_count` 2048, unit 1 µs), checked against the
//! `hdrhistogram` crate in the tests; only the storage differs. A dense 1 µs…1 h histogram is
//! 23,221 counters (181 KiB of `u64`) per series and per worker, so pages of 128 counters are
//! allocated the first time a value lands in their range: a series pays for the ranges it has
//! seen (typically 10–60 KiB for a busy one), and nothing more once its range is covered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use once_cell::race::OnceBox;

/// Three significant digits (relative bucket width ≤ 1/1024 above 2,048 µs).
pub const SIGNIFICANT_DIGITS: u32 = 3;
/// The largest value tracked, 1 h in µs; longer spans are counted as 1 h.
pub const MAX_VALUE_US: u64 = 3_600_000_000;
/// HdrHistogram: `sub_bucket_count` = 2 × 10^digits rounded up to a power of two = 2^11.
const SUB_BUCKET_BITS: u32 = 11;
const SUB_BUCKET_COUNT: u64 = 1 << SUB_BUCKET_BITS;
const HALF_BITS: u32 = SUB_BUCKET_BITS - 1;
const HALF: u64 = 1 << HALF_BITS;
/// Counters needed to reach [`MAX_VALUE_US`].
pub const INDEX_COUNT: usize = index_of(MAX_VALUE_US) + 1;
/// Counters per page (1 KiB of `u64`).
pub const PAGE_LEN: usize = 128;
pub const PAGES: usize = INDEX_COUNT.div_ceil(PAGE_LEN);

/// One page of counters.
pub type Page = [AtomicU64; PAGE_LEN];

/// The counter index of a value in µs (values above [`MAX_VALUE_US`] are clamped).
#[inline]
pub const fn index_of(value_us: u64) -> usize {
    let v = if value_us > MAX_VALUE_US {
        MAX_VALUE_US
    } else {
        value_us
    };
    if v < SUB_BUCKET_COUNT {
        v as usize
    } else {
        let shift = 63 - v.leading_zeros() - HALF_BITS;
        let sub = (v >> shift) - HALF;
        (SUB_BUCKET_COUNT + (shift as u64 - 1) * HALF + sub) as usize
    }
}

const fn shift_of(index: usize) -> u32 {
    if (index as u64) < SUB_BUCKET_COUNT {
        0
    } else {
        ((index as u64 - SUB_BUCKET_COUNT) / HALF + 1) as u32
    }
}

/// The smallest value (µs) counted at `index` (HdrHistogram's `lowest_equivalent`).
pub const fn lowest_value(index: usize) -> u64 {
    let i = index as u64;
    if i < SUB_BUCKET_COUNT {
        i
    } else {
        let k = i - SUB_BUCKET_COUNT;
        (HALF + k % HALF) << shift_of(index)
    }
}

/// The largest value (µs) counted at `index` (HdrHistogram's `highest_equivalent`).
pub const fn highest_value(index: usize) -> u64 {
    lowest_value(index) + (1u64 << shift_of(index)) - 1
}

/// Where each page splits for the reader: counters below `split[p]` are counted in the slot's
/// `first`, the others in `rest`. Span metrics set it to where the page's first Prometheus
/// bucket ends, so a scrape counts a page across one bound from its slot alone instead of
/// reading its 128 counters; [`NO_SPLIT`] counts everything in `first`.
pub type Splits = [u8; PAGES];
pub const NO_SPLIT: Splits = [PAGE_LEN as u8; PAGES];

/// A page, the counts of its two parts (see [`Splits`]) and the sum of its values. Each count
/// only grows, so every total a reader adds from them does too (Prometheus counters must never
/// go down). 32 bytes, so two share a cache line and a record touches one line besides its
/// counter.
#[derive(Debug, Default)]
#[repr(align(32))]
struct Slot {
    /// `OnceBox` is one pointer (`OnceLock` adds a futex word).
    page: OnceBox<Page>,
    first: AtomicU64,
    rest: AtomicU64,
    sum_us: AtomicU64,
}

/// Words of the bitmap of allocated pages.
const USED_WORDS: usize = PAGES.div_ceil(64);

/// One worker's counts for one series. Only the thread that owns it writes (plain load + store,
/// no read-modify-write); snapshots read it from any thread. The slots are inline (not behind
/// a second pointer) so a record reads the slot's line, then the counter's.
#[derive(Debug)]
pub struct Cell {
    /// Bit `p` is set once page `p` exists: readers visit only those (a busy series has a few
    /// dozen of the 182).
    used: [AtomicU64; USED_WORDS],
    slots: [Slot; PAGES],
}

impl Default for Cell {
    fn default() -> Self {
        Cell {
            used: std::array::from_fn(|_| AtomicU64::new(0)),
            slots: std::array::from_fn(|_| Slot::default()),
        }
    }
}

#[inline]
fn bump(c: &AtomicU64, n: u64) {
    // Single writer: a load and a store are enough, and cheaper than `fetch_add`.
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl Cell {
    /// Counts one value. Call only from the cell's owning thread, always with the same splits.
    #[inline]
    pub fn record(&self, value_us: u64, splits: &Splits) {
        let value_us = value_us.min(MAX_VALUE_US);
        let i = index_of(value_us);
        let (p, k) = (i / PAGE_LEN, i % PAGE_LEN);
        let slot = &self.slots[p];
        let page = match slot.page.get() {
            Some(page) => page,
            None => self.new_page(p),
        };
        bump(&page[k], 1);
        bump(
            if k < usize::from(splits[p]) {
                &slot.first
            } else {
                &slot.rest
            },
            1,
        );
        bump(&slot.sum_us, value_us);
    }

    #[cold]
    fn new_page(&self, p: usize) -> &Page {
        let page = self.slots[p]
            .page
            .get_or_init(|| Box::new(std::array::from_fn(|_| AtomicU64::new(0))));
        self.used[p / 64].fetch_or(1 << (p % 64), Ordering::Release);
        page
    }

    pub fn sum_us(&self) -> u64 {
        used_words_pages(self.used_words())
            .map(|p| self.slots[p].sum_us.load(Ordering::Relaxed))
            .sum()
    }

    pub fn page(&self, p: usize) -> Option<&Page> {
        self.slots[p].page.get()
    }

    /// Values counted in page `p` below and from its split (may trail the page's counters by
    /// the span being recorded).
    pub fn page_parts(&self, p: usize) -> (u64, u64) {
        let s = &self.slots[p];
        (
            s.first.load(Ordering::Relaxed),
            s.rest.load(Ordering::Relaxed),
        )
    }

    fn used_words(&self) -> [u64; USED_WORDS] {
        std::array::from_fn(|w| self.used[w].load(Ordering::Acquire))
    }
}

fn used_words_pages(words: [u64; USED_WORDS]) -> impl Iterator<Item = usize> {
    (0..USED_WORDS).flat_map(move |w| {
        let mut bits = words[w];
        std::iter::from_fn(move || {
            (bits != 0).then(|| {
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                w * 64 + b
            })
        })
    })
}

/// The pages allocated in any of `cells`, ascending.
pub fn used_pages(cells: &[Arc<Cell>]) -> impl Iterator<Item = usize> + use<> {
    let mut words = [0u64; USED_WORDS];
    for cell in cells {
        for (w, u) in words.iter_mut().zip(cell.used_words()) {
            *w |= u;
        }
    }
    used_words_pages(words)
}

/// Page `p`'s counts below and from its split, over every cell.
pub fn page_parts(cells: &[Arc<Cell>], p: usize) -> (u64, u64) {
    cells.iter().fold((0, 0), |(f, r), c| {
        let (cf, cr) = c.page_parts(p);
        (f + cf, r + cr)
    })
}

/// The total of page `p` over every cell.
pub fn page_total(cells: &[Arc<Cell>], p: usize) -> u64 {
    let (first, rest) = page_parts(cells, p);
    first + rest
}

/// Adds every cell's page `p` into `out`; false when no cell has that page.
pub fn merge_page(cells: &[Arc<Cell>], p: usize, out: &mut [u64; PAGE_LEN]) -> bool {
    let mut any = false;
    for cell in cells {
        if let Some(page) = cell.page(p) {
            if !any {
                out.fill(0);
                any = true;
            }
            for (o, c) in out.iter_mut().zip(page.iter()) {
                *o += c.load(Ordering::Relaxed);
            }
        }
    }
    any
}

/// A histogram read out of cells (or built by hand): the non-zero counters in index order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// (counter index, count), ascending by index, counts > 0.
    pub counts: Vec<(u32, u64)>,
    pub total: u64,
    pub sum_us: u64,
}

impl Histogram {
    /// Merges the cells of one series (every worker's shard).
    pub fn merge(cells: &[Arc<Cell>]) -> Histogram {
        let mut h = Histogram::default();
        let mut buf = [0u64; PAGE_LEN];
        for p in used_pages(cells) {
            if page_total(cells, p) > 0 && merge_page(cells, p, &mut buf) {
                for (k, &c) in buf.iter().enumerate() {
                    if c > 0 {
                        h.counts.push(((p * PAGE_LEN + k) as u32, c));
                        h.total += c;
                    }
                }
            }
        }
        h.sum_us = cells.iter().map(|c| c.sum_us()).sum();
        h
    }

    /// Builds a histogram from values in µs (tests, benchmarks).
    pub fn from_values(values: impl IntoIterator<Item = u64>) -> Histogram {
        let mut dense = vec![0u64; INDEX_COUNT];
        let mut sum_us = 0;
        for v in values {
            dense[index_of(v)] += 1;
            sum_us += v.min(MAX_VALUE_US);
        }
        let counts: Vec<(u32, u64)> = dense
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| (i as u32, *c))
            .collect();
        Histogram {
            total: counts.iter().map(|(_, c)| c).sum(),
            counts,
            sum_us,
        }
    }

    /// Adds another histogram's counts.
    pub fn add(&mut self, other: &Histogram) {
        let mut out = Vec::with_capacity(self.counts.len().max(other.counts.len()));
        let (mut a, mut b) = (
            self.counts.iter().peekable(),
            other.counts.iter().peekable(),
        );
        loop {
            match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.0 == y.0 => {
                    out.push((x.0, x.1 + y.1));
                    a.next();
                    b.next();
                }
                (Some(x), Some(y)) if x.0 < y.0 => out.push(*a.next().unwrap()),
                (Some(_), Some(_)) | (None, Some(_)) => out.push(*b.next().unwrap()),
                (Some(_), None) => out.push(*a.next().unwrap()),
                (None, None) => break,
            }
        }
        self.counts = out;
        self.total += other.total;
        self.sum_us += other.sum_us;
    }

    /// The value at quantile `q` (0–1), as HdrHistogram's `value_at_quantile` answers it: the
    /// highest value equivalent to the counter holding the ⌈q·total⌉-th smallest value.
    pub fn value_at_quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let q = q.clamp(0.0, 1.0);
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for &(i, c) in &self.counts {
            seen += c;
            if seen >= rank {
                return if q == 0.0 {
                    lowest_value(i as usize)
                } else {
                    highest_value(i as usize)
                };
            }
        }
        self.max()
    }

    /// The highest value equivalent to the largest recorded one (0 when empty).
    pub fn max(&self) -> u64 {
        self.counts
            .last()
            .map_or(0, |&(i, _)| highest_value(i as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Rng;

    fn reference() -> hdrhistogram::Histogram<u64> {
        hdrhistogram::Histogram::new_with_bounds(1, MAX_VALUE_US, SIGNIFICANT_DIGITS as u8).unwrap()
    }

    #[test]
    fn index_math_is_hdrhistograms() {
        let h = reference();
        let mut rng = Rng::new(3);
        let mut values: Vec<u64> = (0..4096).chain([MAX_VALUE_US - 1, MAX_VALUE_US]).collect();
        for _ in 0..200_000 {
            let magnitude = rng.below(32);
            values.push(rng.below(1 << magnitude).max(1));
        }
        for v in values {
            let i = index_of(v);
            assert_eq!(lowest_value(i), h.lowest_equivalent(v), "lowest of {v}");
            assert_eq!(highest_value(i), h.highest_equivalent(v), "highest of {v}");
            assert!(lowest_value(i) <= v && v <= highest_value(i));
        }
        assert_eq!(index_of(MAX_VALUE_US * 10), INDEX_COUNT - 1);
        assert_eq!(INDEX_COUNT, 23_221);
    }

    #[test]
    fn quantiles_match_hdrhistogram_and_are_within_a_thousandth_of_exact() {
        let mut reference = reference();
        let mut rng = Rng::new(11);
        let cell = Cell::default();
        let mut exact = Vec::new();
        for _ in 0..100_000 {
            // Log-uniform between 100 µs and ~100 s.
            let v = (100.0 * 10f64.powf(rng.below(1_000_000) as f64 / 166_667.0)) as u64;
            cell.record(v, &NO_SPLIT);
            reference.record(v).unwrap();
            exact.push(v);
        }
        exact.sort_unstable();
        let h = Histogram::merge(&[Arc::new(cell)]);
        assert_eq!(h.total, 100_000);
        assert_eq!(h.sum_us, exact.iter().sum::<u64>());
        for q in [0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0] {
            let got = h.value_at_quantile(q);
            assert_eq!(got, reference.value_at_quantile(q), "q={q}");
            let truth = exact[((q * exact.len() as f64).ceil() as usize).clamp(1, exact.len()) - 1];
            let err = (got as f64 - truth as f64).abs() / truth as f64;
            assert!(err <= 1.0 / 1024.0, "q={q}: {got} vs {truth}");
        }
        assert_eq!(h.max(), reference.max());
    }

    #[test]
    fn cells_merge_and_histograms_add() {
        let (a, b) = (Arc::new(Cell::default()), Arc::new(Cell::default()));
        for v in [1, 5, 5, 3000, 70_000] {
            a.record(v, &NO_SPLIT);
        }
        for v in [5, 9_999_999_999] {
            b.record(v, &NO_SPLIT);
        }
        let merged = Histogram::merge(&[a, b]);
        let built = Histogram::from_values([1, 5, 5, 3000, 70_000, 5, MAX_VALUE_US]);
        assert_eq!(merged, built);
        let mut sum = Histogram::from_values([1, 5, 5, 3000]);
        sum.add(&Histogram::from_values([70_000, 5, MAX_VALUE_US]));
        assert_eq!(sum, built);
        assert_eq!(built.value_at_quantile(0.5), 5);
        assert_eq!(built.max(), highest_value(index_of(MAX_VALUE_US)));
    }
}
