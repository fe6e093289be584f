//! The file-event outbox, read out. The catalog writes events in the transactions that change
//! files (`kiln_catalog::Event`); this crate carries them on:
//!
//! - [`EventHub`]: one feed per organization with listeners in this process, tailing the
//!   outbox in sequence order (woken by PostgreSQL notifications, polling as fallback) and
//!   fanned out to every stream; [`Stream`] adds replay from a position and filters.
//! - [`webhooks`]: durable, signed, ordered delivery to registered endpoints.
//! - [`run_retention`]: bounds the outbox by age and count.

pub mod webhooks;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use kiln_catalog::{Catalog, Event, EventFilter};
use kiln_core::OrgId;
use tokio::sync::{Notify, broadcast, watch};

/// Events fetched from the outbox per query.
const PAGE: i64 = 500;
/// Events a slow stream may fall behind its feed before it re-reads the outbox.
const FEED_BUFFER: usize = 4096;

/// Live feeds of organizations' events for this process. Cheap to clone.
#[derive(Clone)]
pub struct EventHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    catalog: Catalog,
    poll: Duration,
    feeds: Mutex<HashMap<OrgId, Weak<Feed>>>,
    /// Nudged by PostgreSQL notifications of new events (any organization).
    nudge: Arc<Notify>,
    stop: watch::Receiver<bool>,
    _listener: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for HubInner {
    fn drop(&mut self) {
        if let Some(listener) = &self._listener {
            listener.abort();
        }
    }
}

/// One organization's feed: a task tailing its events, alive while a stream holds it.
struct Feed {
    sender: broadcast::Sender<Arc<Event>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EventHub {
    /// A hub reading `catalog`'s outbox, polling every `poll` (and woken at once by
    /// notifications on PostgreSQL). Its streams end when `stop` turns true.
    pub fn new(catalog: Catalog, poll: Duration, stop: watch::Receiver<bool>) -> EventHub {
        let nudge = Arc::new(Notify::new());
        let listener = {
            let nudge = nudge.clone();
            catalog.listen(kiln_catalog::EVENTS_CHANNEL, move || nudge.notify_waiters())
        };
        EventHub {
            inner: Arc::new(HubInner {
                catalog,
                poll,
                feeds: Mutex::new(HashMap::new()),
                nudge,
                stop,
                _listener: listener,
            }),
        }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// A stream of `organization_id`'s events after `after` (`None`: from now) that match
    /// `filter`. Fails with [`StartError::Expired`] when events after `after` were removed.
    pub async fn subscribe(
        &self,
        organization_id: &OrgId,
        after: Option<i64>,
        filter: EventFilter,
    ) -> Result<Stream, StartError> {
        // Listen first, then read the position: nothing committed in between is missed.
        let feed = self.feed(organization_id).await?;
        let receiver = feed.sender.subscribe();
        let position = self.inner.catalog.event_position(organization_id).await?;
        let cursor = match after {
            Some(after) if after < position.purged_through => {
                return Err(StartError::Expired {
                    oldest: position.purged_through,
                });
            }
            Some(after) => after.min(position.last_seq),
            None => position.last_seq,
        };
        Ok(Stream {
            catalog: self.inner.catalog.clone(),
            organization_id: organization_id.clone(),
            filter,
            cursor,
            replaying: after.is_some(),
            follow: true,
            backlog: std::collections::VecDeque::new(),
            receiver,
            _feed: feed,
            stop: self.inner.stop.clone(),
        })
    }

    async fn feed(&self, organization_id: &OrgId) -> Result<Arc<Feed>, kiln_catalog::CatalogError> {
        if let Some(feed) = self
            .inner
            .feeds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(organization_id)
            .and_then(Weak::upgrade)
        {
            return Ok(feed);
        }
        let start = self
            .inner
            .catalog
            .event_position(organization_id)
            .await?
            .last_seq;
        let mut feeds = self.inner.feeds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(feed) = feeds.get(organization_id).and_then(Weak::upgrade) {
            return Ok(feed);
        }
        let (sender, _) = broadcast::channel(FEED_BUFFER);
        let task = tokio::spawn(tail(
            self.inner.catalog.clone(),
            organization_id.clone(),
            start,
            sender.clone(),
            self.inner.poll,
            self.inner.nudge.clone(),
        ));
        let feed = Arc::new(Feed { sender, task });
        feeds.retain(|_, weak| weak.strong_count() > 0);
        feeds.insert(organization_id.clone(), Arc::downgrade(&feed));
        Ok(feed)
    }
}

/// A feed's task: sends each new event of the organization, in sequence order.
async fn tail(
    catalog: Catalog,
    organization_id: OrgId,
    mut last: i64,
    sender: broadcast::Sender<Arc<Event>>,
    poll: Duration,
    nudge: Arc<Notify>,
) {
    loop {
        let nudged = nudge.notified();
        match catalog.events_after(&organization_id, last, PAGE).await {
            Ok(events) => {
                let full = events.len() as i64 == PAGE;
                for event in events {
                    last = event.seq;
                    let _ = sender.send(Arc::new(event));
                }
                if full {
                    continue;
                }
            }
            Err(err) => tracing::warn!(error = %err, "reading events failed; trying again"),
        }
        tokio::select! {
            _ = nudged => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// Why a stream could not start.
#[derive(Debug)]
pub enum StartError {
    /// Events after the requested position were removed by retention; `oldest` is the
    /// position a stream can resume from at the earliest.
    Expired {
        oldest: i64,
    },
    Catalog(kiln_catalog::CatalogError),
}

impl From<kiln_catalog::CatalogError> for StartError {
    fn from(err: kiln_catalog::CatalogError) -> Self {
        StartError::Catalog(err)
    }
}

/// One reader's events: replayed from its position, then live, in sequence order, each once.
pub struct Stream {
    catalog: Catalog,
    organization_id: OrgId,
    filter: EventFilter,
    /// The last event handed out or passed over.
    cursor: i64,
    /// Still reading what was written before the stream started.
    replaying: bool,
    /// Whether to wait for new events once the replay is done.
    follow: bool,
    backlog: std::collections::VecDeque<Event>,
    receiver: broadcast::Receiver<Arc<Event>>,
    _feed: Arc<Feed>,
    stop: watch::Receiver<bool>,
}

impl Stream {
    /// Ends the stream once it has replayed what was written before it started.
    pub fn replay_only(mut self) -> Self {
        self.follow = false;
        self.replaying = true;
        self
    }

    /// The last position handed out or passed over.
    pub fn position(&self) -> i64 {
        self.cursor
    }

    /// Events that are already written, up to `PAGE` at a time, without waiting: empty when
    /// the stream has caught up.
    pub async fn backlog(&mut self) -> Result<Vec<Event>, kiln_catalog::CatalogError> {
        let events = self
            .catalog
            .events_after(&self.organization_id, self.cursor, PAGE)
            .await?;
        let mut out = Vec::new();
        for event in events {
            self.cursor = event.seq;
            if self.filter.matches(&event) {
                out.push(event);
            }
        }
        Ok(out)
    }

    /// Whether the cursor is at the head of the outbox (a page of events that all failed the
    /// filter leaves `backlog` empty before it is).
    async fn caught_up(&self) -> bool {
        self.catalog
            .event_position(&self.organization_id)
            .await
            .is_ok_and(|p| p.last_seq <= self.cursor)
    }

    /// The next event, waiting for it; `None` when the server shuts down.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.backlog.pop_front() {
                return Some(event);
            }
            if self.replaying {
                match self.backlog().await {
                    Ok(events) if events.is_empty() && self.caught_up().await => {
                        self.replaying = false;
                        if !self.follow {
                            return None;
                        }
                    }
                    Ok(events) => self.backlog.extend(events),
                    Err(err) => {
                        tracing::warn!(error = %err, "replaying events failed; ending the stream");
                        return None;
                    }
                }
                continue;
            }
            if *self.stop.borrow() {
                return None;
            }
            let received = tokio::select! {
                received = self.receiver.recv() => received,
                _ = self.stop.wait_for(|stop| *stop) => return None,
            };
            match received {
                Ok(event) if event.seq <= self.cursor => {}
                Ok(event) if event.seq == self.cursor + 1 => {
                    self.cursor = event.seq;
                    if self.filter.matches(&event) {
                        return Some((*event).clone());
                    }
                }
                // Behind the feed (a gap, or too slow to keep its buffer): read the outbox.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => match self.backlog().await {
                    Ok(events) => self.backlog.extend(events),
                    Err(err) => {
                        tracing::warn!(error = %err, "replaying events failed; ending the stream");
                        return None;
                    }
                },
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// Removes events (and webhook delivery logs) beyond `max_age` or the newest `max_per_org`
/// of each organization, every `every`, until `stop`. Safe on every node at once.
pub async fn run_retention(
    catalog: Catalog,
    max_age: Duration,
    max_per_org: i64,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        match catalog
            .purge_events(max_age.as_millis() as i64, max_per_org.max(1))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "event retention removed old events"),
            Err(err) => tracing::warn!(error = %err, "event retention failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}
