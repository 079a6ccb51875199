//! The benchmark programs of `cargo xtask bench` (`src/bin/`), kept out of
//! the test package so that `cargo test` and CI neither build nor link them.
//! They drive the same harness as the end-to-end tests (`meshtalk-tests`).
//!
//! [`sim`] is the simulated wide-area network of `bench_sim`.

pub mod sim;
