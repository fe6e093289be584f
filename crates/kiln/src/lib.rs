//! The `kiln` binary's library half: configuration loading, the server's assembly, the
//! operator commands and the client commands, so tests drive exactly what `kiln serve`,
//! `kiln admin` and `kiln sync` run.

pub mod admin;
pub mod bench;
pub mod cli;
pub mod client;
pub mod eval;
pub mod migrate;
pub mod server;
pub mod settings;
