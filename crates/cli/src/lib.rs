//! The library half of the `meshtalk` command-line peer: starting a native
//! peer and connecting it, shared by the subcommands and by the end-to-end
//! tests and benchmarks.

pub mod node;
