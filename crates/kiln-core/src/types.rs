//! Domain enums shared by the catalog and the API. Each has a stable lower-case string form,
//! used both in JSON and in the catalog's columns.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Defines a string-valued enum with `as_str`, `parse` and `ALL`, serialised as its string.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// What an API key may do (contract §2). Ordered: admin > editor > reader.
    Role { Reader => "reader", Editor => "editor", Admin => "admin" }
);

impl Role {
    /// Whether a key of this role may do what `needed` allows.
    pub fn allows(self, needed: Role) -> bool {
        self.rank() >= needed.rank()
    }

    fn rank(self) -> u8 {
        match self {
            Role::Reader => 0,
            Role::Editor => 1,
            Role::Admin => 2,
        }
    }
}

string_enum!(
    /// A knowledge slice's type.
    SliceType { Standard => "standard", Personal => "personal", ChatSpace => "chat_space" }
);

string_enum!(
    /// Who owns a knowledge slice.
    OwnerType { Organization => "organization", Department => "department", User => "user", Group => "group" }
);

string_enum!(
    /// A knowledge slice's lifecycle state.
    SliceStatus { Active => "active", Archived => "archived" }
);

string_enum!(
    /// Who may see a store.
    AccessMode { Public => "public", Organization => "organization", Department => "department", Private => "private" }
);

string_enum!(
    /// A file's processing status (contract §5).
    FileStatus { Pending => "pending", Processing => "processing", Completed => "completed", Failed => "failed" }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin.allows(Role::Editor));
        assert!(Role::Editor.allows(Role::Reader));
        assert!(!Role::Reader.allows(Role::Editor));
        assert!(!Role::Editor.allows(Role::Admin));
    }

    #[test]
    fn string_forms_round_trip() {
        for t in SliceType::ALL {
            assert_eq!(SliceType::parse(t.as_str()), Some(*t));
            assert_eq!(
                serde_json::to_string(t).unwrap(),
                format!("\"{}\"", t.as_str())
            );
        }
        assert_eq!(SliceType::parse("Standard"), None);
        assert!(serde_json::from_str::<AccessMode>("\"everyone\"").is_err());
    }
}

string_enum!(
    /// The step a file is in (contract §5); a failed file keeps the step it failed in.
    Step { Queued => "queued", Extracting => "extracting", Chunking => "chunking", Embedding => "embedding", Indexing => "indexing", Completed => "completed" }
);

string_enum!(
    /// Why a file failed (contract §7).
    FileErrorCode {
        UnsupportedFormat => "UNSUPPORTED_FORMAT",
        CorruptFile => "CORRUPT_FILE",
        EncryptedFile => "ENCRYPTED_FILE",
        NoTextExtracted => "NO_TEXT_EXTRACTED",
        FileTooLarge => "FILE_TOO_LARGE",
        EmbeddingFailed => "EMBEDDING_FAILED",
        EmbeddingRateLimited => "EMBEDDING_RATE_LIMITED",
        IndexFailed => "INDEX_FAILED",
        Timeout => "TIMEOUT",
        WorkerLost => "WORKER_LOST",
        InternalError => "INTERNAL_ERROR",
    }
);

string_enum!(
    /// A processing log entry's level.
    LogLevel { Info => "info", Warning => "warning", Error => "error" }
);

string_enum!(
    /// A file lifecycle event's type (the event stream and webhooks; README "Events").
    EventType {
        FileUploaded => "file.uploaded",
        FileQueued => "file.queued",
        FileStepStarted => "file.step_started",
        FileProgress => "file.progress",
        FileCompleted => "file.completed",
        FileFailed => "file.failed",
        FileRetried => "file.retried",
        FileDeleted => "file.deleted",
        FilePurged => "file.purged",
        StoreDeleted => "store.deleted",
    }
);
