//! Opaque identifiers: a prefix plus 20 random characters `[a-z0-9]` (contract §1), and API key
//! values: `ak_` plus 40 alphanumerics.

use rand::Rng;
use rand::distr::Alphanumeric;

/// Length of the random part of every resource ID.
pub const ID_RANDOM_LEN: usize = 20;
/// Length of the random part of an API key value.
pub const KEY_RANDOM_LEN: usize = 40;
/// Prefix of API key values (and of API key IDs).
pub const KEY_PREFIX: &str = "ak_";

const LOWER_ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// The kinds of resources that have IDs, each with its own prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Organization,
    Slice,
    Store,
    File,
    StoreFile,
    ApiKey,
    /// Jobs of the queue (not part of the API).
    Job,
    Webhook,
    /// One attempt to deliver an event to a webhook.
    WebhookDelivery,
}

impl IdKind {
    pub const fn prefix(self) -> &'static str {
        match self {
            IdKind::Organization => "org_",
            IdKind::Slice => "kslice_",
            IdKind::Store => "vs_",
            IdKind::File => "file_",
            IdKind::StoreFile => "vsf_",
            IdKind::ApiKey => KEY_PREFIX,
            IdKind::Job => "job_",
            IdKind::Webhook => "wh_",
            IdKind::WebhookDelivery => "whd_",
        }
    }

    /// A fresh random ID of this kind.
    pub fn generate(self) -> String {
        let mut rng = rand::rng();
        let mut id = String::with_capacity(self.prefix().len() + ID_RANDOM_LEN);
        id.push_str(self.prefix());
        for _ in 0..ID_RANDOM_LEN {
            id.push(LOWER_ALNUM[rng.random_range(0..LOWER_ALNUM.len())] as char);
        }
        id
    }

    /// Whether `id` is well formed for this kind: the right prefix and exactly 20 `[a-z0-9]`.
    pub fn is_valid(self, id: &str) -> bool {
        id.strip_prefix(self.prefix()).is_some_and(|rest| {
            rest.len() == ID_RANDOM_LEN
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
    }
}

/// A typed ID: a `String` that names one kind of resource, so a store ID cannot be passed
/// where a file ID is expected. Serialised (JSON and SQL) as the bare string.
macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash,
            serde::Serialize, serde::Deserialize, utoipa::ToSchema,
        )]
        #[serde(transparent)]
        #[schema(value_type = String)]
        pub struct $name(String);

        impl $name {
            /// A fresh random ID (IDs taken from a path are not checked: an ill-formed one
            /// names nothing, which the lookup reports).
            pub fn generate() -> Self {
                Self($kind.generate())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(id.to_string())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        #[cfg(feature = "sqlx")]
        impl<DB: sqlx::Database> sqlx::Type<DB> for $name
        where
            String: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <String as sqlx::Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <String as sqlx::Type<DB>>::compatible(ty)
            }
        }

        #[cfg(feature = "sqlx")]
        impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for $name
        where
            String: sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as sqlx::Database>::ArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <String as sqlx::Encode<'q, DB>>::encode_by_ref(&self.0, buf)
            }
        }

        #[cfg(feature = "sqlx")]
        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $name
        where
            String: sqlx::Decode<'r, DB>,
        {
            fn decode(
                value: <DB as sqlx::Database>::ValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                <String as sqlx::Decode<'r, DB>>::decode(value).map(Self)
            }
        }
    };
}

typed_id!(
    /// An organization's ID (`org_…`).
    OrgId,
    IdKind::Organization
);
typed_id!(
    /// A store's ID (`vs_…`).
    StoreId,
    IdKind::Store
);
typed_id!(
    /// A file's ID: `file_…` for a file uploaded to a store or to the organization, `vsf_…`
    /// for the link an organization file gets when it is added to a vector store (a file of
    /// that store all the same). `generate` makes the former.
    FileId,
    IdKind::File
);

/// A fresh API key value: `ak_` plus 40 alphanumerics. Shown once, stored only as a hash.
pub fn generate_key_value() -> String {
    let random: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(KEY_RANDOM_LEN)
        .map(char::from)
        .collect();
    format!("{KEY_PREFIX}{random}")
}

/// A random secret of 64 alphanumerics (about 380 bits), e.g. for signing upload URLs.
pub fn generate_secret() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(64)
        .map(char::from)
        .collect()
}

/// Whether `value` has the shape of an API key value. Anything else is rejected without a
/// catalog lookup.
pub fn is_key_value_shape(value: &str) -> bool {
    value.strip_prefix(KEY_PREFIX).is_some_and(|rest| {
        rest.len() == KEY_RANDOM_LEN && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        for kind in [
            IdKind::Organization,
            IdKind::Slice,
            IdKind::Store,
            IdKind::File,
            IdKind::StoreFile,
            IdKind::ApiKey,
            IdKind::Job,
            IdKind::Webhook,
            IdKind::WebhookDelivery,
        ] {
            let a = kind.generate();
            let b = kind.generate();
            assert!(kind.is_valid(&a), "{a}");
            assert_ne!(a, b);
            assert_eq!(a.len(), kind.prefix().len() + ID_RANDOM_LEN);
        }
    }

    #[test]
    fn ids_of_wrong_shape_are_invalid() {
        assert!(!IdKind::Store.is_valid("kslice_abcdefghij0123456789"));
        assert!(!IdKind::Store.is_valid("vs_abc"));
        assert!(!IdKind::Store.is_valid("vs_ABCDEFGHIJ0123456789"));
        assert!(!IdKind::Store.is_valid("vs_abcdefghij0123456789x"));
        assert!(IdKind::Store.is_valid("vs_abcdefghij0123456789"));
    }

    #[test]
    fn typed_ids_are_their_strings_on_the_wire() {
        let store = StoreId::generate();
        assert!(IdKind::Store.is_valid(&store), "{store}");
        assert!(FileId::generate().starts_with("file_"));
        assert!(OrgId::generate().starts_with("org_"));
        // JSON: the bare string both ways.
        let json = serde_json::to_string(&store).unwrap();
        assert_eq!(json, format!("\"{store}\""));
        let back: StoreId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, store);
        // The type is the role, not a check: an ID of another kind still parses (a lookup
        // then finds nothing).
        let file_as_store: StoreId = serde_json::from_str("\"file_abc\"").unwrap();
        assert_eq!(file_as_store, "file_abc");
    }

    #[test]
    fn key_values_have_the_documented_shape() {
        let key = generate_key_value();
        assert!(is_key_value_shape(&key));
        assert_eq!(key.len(), 43);
        assert!(!is_key_value_shape("ak_short"));
        assert!(!is_key_value_shape(&format!("xx_{}", &key[3..])));
        assert!(!is_key_value_shape(&format!("{}!", &key[..42])));
    }
}
