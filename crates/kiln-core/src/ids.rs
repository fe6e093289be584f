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
    fn key_values_have_the_documented_shape() {
        let key = generate_key_value();
        assert!(is_key_value_shape(&key));
        assert_eq!(key.len(), 43);
        assert!(!is_key_value_shape("ak_short"));
        assert!(!is_key_value_shape(&format!("xx_{}", &key[3..])));
        assert!(!is_key_value_shape(&format!("{}!", &key[..42])));
    }
}
