//! Where accepted data goes. One folder per sink, each with the same files: `config.rs`
//! (documented configuration), `service.rs` (the I/O), `sink.rs` (the loop that drives it),
//! a pure part, and `tests.rs`.

pub mod influx;
