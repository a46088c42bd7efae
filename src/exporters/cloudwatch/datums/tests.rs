//! Datum tests.
