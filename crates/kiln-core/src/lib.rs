//! Kiln's vocabulary: identifiers, timestamps, domain enums, error codes and configuration
//! types. This crate performs no I/O and knows no other Kiln crate.

pub mod chunk;
pub mod config;
pub mod error;
pub mod ids;
pub mod model;
pub mod time;
pub mod types;

pub use chunk::ChunkRecord;
pub use error::ErrorCode;
pub use ids::{FileId, IdKind, OrgId, StoreId};
pub use time::Timestamp;
