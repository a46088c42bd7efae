//! Unit tests of the translator's edge cases that golden files cannot show well.

use super::*;
