//! Timestamps: stored as Unix milliseconds, shown as RFC 3339 UTC with second precision.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

/// A point in time, in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Timestamp(ms)
    }

    /// `now()`, but strictly later than every earlier `created()` in this process: creation
    /// times order lists newest first, and two rows made in the same millisecond would
    /// otherwise tie and fall back to their random IDs.
    pub fn created() -> Self {
        static LAST: AtomicI64 = AtomicI64::new(0);
        Timestamp(strictly_increasing(&LAST, Self::now().0))
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    /// RFC 3339 in UTC with `Z` and second precision, e.g. `2025-06-15T10:00:05Z`.
    pub fn to_rfc3339(self) -> String {
        let secs = self.0.div_euclid(1000).max(0) as u64;
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
    }
}

/// `now` if it is later than the last value handed out from `last`, else one more than that;
/// records the value returned. Lock-free, safe to call from any thread.
pub fn strictly_increasing(last: &AtomicI64, now: i64) -> i64 {
    let mut previous = last.load(Ordering::Relaxed);
    loop {
        let next = now.max(previous + 1);
        match last.compare_exchange_weak(previous, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(actual) => previous = actual,
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )))
            .description(Some("RFC 3339, UTC, second precision"))
            .examples(["2025-06-15T10:00:05Z"])
            .into()
    }
}

impl utoipa::ToSchema for Timestamp {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_second_precision_and_z() {
        assert_eq!(
            Timestamp(1_749_981_605_999).to_rfc3339(),
            "2025-06-15T10:00:05Z"
        );
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(
            serde_json::to_string(&Timestamp(1_749_981_605_000)).unwrap(),
            "\"2025-06-15T10:00:05Z\""
        );
    }

    #[test]
    fn creation_times_are_strictly_increasing_across_threads() {
        let last = AtomicI64::new(0);
        // A clock stuck at one millisecond still yields distinct, increasing values.
        let values: Vec<i64> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        (0..1000)
                            .map(|_| strictly_increasing(&last, 5))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let mut sorted = values.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 4000);
        assert_eq!((sorted[0], sorted[3999]), (5, 4004));
        // A later clock reading is taken as it is.
        assert_eq!(strictly_increasing(&last, 10_000), 10_000);
        assert!(Timestamp::created() < Timestamp::created());
    }
}
