//! Webhook delivery. Each endpoint receives its organization's events in sequence order, one
//! at a time, from whichever node holds its lease; a failed delivery is retried with
//! exponential backoff (the endpoint's later events wait behind it) until `retry_for` has
//! passed since it first failed, then abandoned so the rest flow again. Every attempt is in
//! the delivery log. Delivery runs on its own tasks: it never holds up processing.
//!
//! Each request is signed like Stripe's: `Kiln-Signature: t=<unix seconds>,v1=<hex>` where
//! the hex is HMAC-SHA256, keyed with the endpoint's secret, of `<t>.<raw body>`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use kiln_catalog::{Attempt, Catalog, ClaimedWebhook, DeliveryOutcome, Event, EventFilter};
use kiln_core::Timestamp;
use rand::Rng;
use sha2::Sha256;
use tokio::sync::{Semaphore, watch};

/// How deliveries are made.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Time limit of one request (connect to response).
    pub timeout: Duration,
    /// The first retry's delay; doubled each try, capped at `max_delay`.
    pub retry_base: Duration,
    pub max_delay: Duration,
    /// How long an event is retried before it is abandoned.
    pub retry_for: Duration,
    /// How often endpoints with events due are looked for.
    pub poll: Duration,
    /// Endpoints delivered to at once by this node.
    pub concurrency: usize,
    /// How long a node holds an endpoint.
    pub lease: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            timeout: Duration::from_secs(10),
            retry_base: Duration::from_secs(10),
            max_delay: Duration::from_secs(3600),
            retry_for: Duration::from_secs(24 * 3600),
            poll: Duration::from_secs(1),
            concurrency: 8,
            lease: Duration::from_secs(120),
        }
    }
}

/// The signature header's value for `body` sent at `timestamp` (Unix seconds).
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any size");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Delivers webhooks until `stop` turns true. `worker` names this node in leases.
pub async fn run(
    catalog: Catalog,
    config: DeliveryConfig,
    worker: String,
    mut stop: watch::Receiver<bool>,
) {
    let client = match reqwest::Client::builder()
        .timeout(config.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("Kiln-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(error = %err, "webhook delivery cannot start");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
    loop {
        let mut claimed_any = false;
        while let Ok(slot) = slots.clone().try_acquire_owned() {
            match catalog.claim_webhook(&worker, config.lease).await {
                Ok(Some(hook)) => {
                    claimed_any = true;
                    let (catalog, client, config, worker) = (
                        catalog.clone(),
                        client.clone(),
                        config.clone(),
                        worker.clone(),
                    );
                    tokio::spawn(async move {
                        deliver(&catalog, &client, &config, &worker, &hook).await;
                        if let Err(err) = catalog.release_webhook(&hook.hook.id, &worker).await {
                            tracing::warn!(error = %err, "releasing a webhook failed");
                        }
                        drop(slot);
                    });
                }
                Ok(None) => break,
                Err(err) => {
                    tracing::warn!(error = %err, "looking for webhooks to deliver failed");
                    break;
                }
            }
        }
        if *stop.borrow() {
            return;
        }
        let pause = if claimed_any {
            Duration::from_millis(20)
        } else {
            config.poll
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

/// Delivers an endpoint's due events in order until one fails, none are left, or half the
/// lease is used.
async fn deliver(
    catalog: &Catalog,
    client: &reqwest::Client,
    config: &DeliveryConfig,
    worker: &str,
    hook: &ClaimedWebhook,
) {
    let started = Instant::now();
    let wanted = EventFilter {
        types: hook.hook.event_types.clone(),
        ..EventFilter::default()
    };
    let mut cursor = hook.hook.cursor_seq;
    let mut attempt = hook.hook.attempt;
    // Events passed over (not subscribed to) since the cursor was last written.
    let mut skipped = false;
    while started.elapsed() < config.lease / 2 {
        let events = match catalog
            .events_after(&hook.hook.organization_id, cursor, 100)
            .await
        {
            Ok(events) if events.is_empty() => return,
            Ok(events) => events,
            Err(err) => {
                tracing::warn!(error = %err, "reading events for a webhook failed");
                return;
            }
        };
        for event in events {
            if !wanted.matches(&event) {
                cursor = event.seq;
                skipped = true;
                continue;
            }
            if skipped {
                let _ = catalog.skip_webhook_events(hook, worker, cursor).await;
                skipped = false;
            }
            let outcome = send(client, &hook.secret, &hook.hook.url, &event).await;
            let delivered = outcome.is_ok();
            let failing_since = hook
                .first_failed_at
                .filter(|_| attempt > 0)
                .map_or_else(|| Timestamp::now().millis(), Timestamp::millis);
            let given_up = !delivered
                && Timestamp::now().millis() - failing_since >= config.retry_for.as_millis() as i64;
            let (status_code, error, duration) = match outcome {
                Ok((code, took)) => (Some(code), None, took),
                Err((code, error, took)) => (code, Some(error), took),
            };
            let record = Attempt {
                event_seq: event.seq,
                event_type: &event.event_type,
                outcome: if delivered {
                    DeliveryOutcome::Delivered
                } else if given_up {
                    DeliveryOutcome::Abandoned
                } else {
                    DeliveryOutcome::Failed
                },
                status_code,
                error,
                duration,
                retry_in: backoff(config, attempt),
            };
            match catalog.record_delivery(hook, worker, record).await {
                Ok(true) if delivered || given_up => {
                    cursor = event.seq;
                    attempt = 0;
                }
                Ok(_) => return,
                Err(err) => {
                    tracing::warn!(error = %err, "recording a webhook delivery failed");
                    return;
                }
            }
        }
        if skipped {
            let _ = catalog.skip_webhook_events(hook, worker, cursor).await;
            skipped = false;
        }
    }
}

/// The delay before try `attempt + 2`: `retry_base · 2^attempt`, ±20 %, at most `max_delay`.
fn backoff(config: &DeliveryConfig, attempt: i64) -> Duration {
    let exp = config
        .retry_base
        .saturating_mul(1u32 << attempt.clamp(0, 20) as u32);
    exp.mul_f64(rand::rng().random_range(0.8..1.2))
        .min(config.max_delay)
}

type Sent = Result<(u16, Duration), (Option<u16>, String, Duration)>;

/// Posts one event; a 2xx answer within the time limit delivers it.
async fn send(client: &reqwest::Client, secret: &str, url: &str, event: &Event) -> Sent {
    let body = event.to_json().to_string();
    let timestamp = Timestamp::now().millis() / 1000;
    let started = Instant::now();
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("kiln-event-id", event.seq.to_string())
        .header("kiln-event-type", &event.event_type)
        .header("kiln-signature", signature(secret, timestamp, &body))
        .body(body)
        .send()
        .await;
    let took = started.elapsed();
    match response {
        Ok(response) if response.status().is_success() => Ok((response.status().as_u16(), took)),
        Ok(response) => {
            let code = response.status().as_u16();
            Err((Some(code), format!("the endpoint answered {code}"), took))
        }
        Err(err) if err.is_timeout() => Err((None, "timed out".into(), took)),
        Err(err) => Err((None, format!("request failed: {err}"), took)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_test
        assert_eq!(
            signature("whsec_test", 1_700_000_000, "{\"a\":1}"),
            "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
    }
}
