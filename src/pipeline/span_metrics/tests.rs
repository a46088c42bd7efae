//! Span-metrics tests.
