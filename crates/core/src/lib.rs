//! Tally core.
