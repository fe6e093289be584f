//! The `kiln` binary's library half: configuration loading, the server's assembly and the
//! operator commands, so tests drive exactly what `kiln serve` and `kiln admin` run.

pub mod admin;
pub mod bench;
pub mod client;
pub mod eval;
pub mod migrate;
pub mod server;
pub mod settings;
