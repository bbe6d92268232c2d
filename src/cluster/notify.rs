//! Cache invalidation across instances, over PostgreSQL's LISTEN/NOTIFY
//! (docs/ARCHITECTURE.md, "Cluster", "What stays per instance").
//!
//! Each instance keeps caches of what any instance may write: listing pages and the drop
//! calendar (per store, by catalog generation) and the ids found to name no product.
//! A catalog write (create, PATCH, restock) queues a notification on [`CHANNEL`] in its
//! own transaction, so PostgreSQL delivers it only once the write commits, and never if
//! it rolls back. Every instance keeps one connection that LISTENs (named
//! [`APPLICATION_NAME`] in `pg_stat_activity`) and applies what it hears: the store's
//! catalog generation is bumped, the id is no longer "missing".
//!
//! Notifications sent while that connection is down are lost to it, so on every
//! reconnection the instance clears those caches whole (each page is rendered again on
//! its next read) before it listens on: nothing it missed is served after that.
//!
//! The same connection hears the cluster's membership changes
//! ([`crate::db::cluster::CHANNEL`]: an instance joined, released or claimed shards, or
//! left): each runs a membership round at once, so that a handover takes a few
//! statements' time instead of a few rounds. Missed ones cost nothing but that speed:
//! the rounds run on time anyway.

use std::sync::Weak;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, GenericClient, NoTls};

use crate::http::AppState;
use crate::metrics::{CACHE_LISTEN_RECONNECTS, CACHE_NOTIFICATIONS};

/// The channel of cache invalidations.
pub const CHANNEL: &str = "flashsale_caches";
/// The listening connection's `application_name` (operators find it by this).
pub const APPLICATION_NAME: &str = "flashsale-listen";
/// How often the listening connection is asked whether it is alive: a connection that
/// died without a word (a network cut) is noticed within this, plus [`PING_TIMEOUT`].
const PING_EVERY: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// First and longest pause between tries to connect again.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// What changed in a store's catalog.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum What {
    /// A product was created: its id names a product from now on.
    Created,
    /// A product was changed (PATCH, restock).
    Changed,
}

/// One notification's payload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    /// The instance that wrote (its own caches are already right: it skips it).
    pub from: String,
    pub store: String,
    pub product: String,
    pub what: What,
}

/// Queues `change` on [`CHANNEL`] in the transaction of `client` (a transaction, or a
/// statement's own): PostgreSQL sends it at commit, and drops it on rollback.
pub async fn announce(
    client: &impl GenericClient,
    change: &Change,
) -> Result<(), tokio_postgres::Error> {
    let payload = serde_json::to_string(change).unwrap_or_default();
    client
        .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
        .await?;
    CACHE_NOTIFICATIONS.with_label_values(&["sent"]).inc();
    Ok(())
}

/// What the listener tells the caches.
#[derive(Debug)]
enum Heard {
    Change(Change),
    /// Another instance (this id) changed the cluster's membership or leases.
    Cluster(String),
    /// Listening again after a loss: anything may have changed meanwhile.
    Reconnected,
}

/// Listens for as long as the application lives (`state`), on a connection of its own
/// made from `config`, connecting again after every loss.
pub async fn listen(mut config: tokio_postgres::Config, state: Weak<AppState>) {
    config.application_name(APPLICATION_NAME);
    let mut pause = RETRY_MIN;
    let mut first = true;
    loop {
        if state.strong_count() == 0 {
            return;
        }
        match listen_once(&config, &state, first).await {
            Ok(()) => return,
            // A loss after listening resets the backoff: the next try is quick.
            Err(e) if e.listened => {
                tracing::warn!(error = %e, "cache listener lost its connection; reconnecting");
                pause = RETRY_MIN;
                first = false;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cache listener failed to connect");
                pause = (pause * 2).min(RETRY_MAX);
            }
        }
        tokio::time::sleep(pause).await;
    }
}

/// Why one listening connection ended.
#[derive(Debug)]
struct Lost {
    /// It had been listening (else: it never got that far).
    listened: bool,
    error: String,
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.error)
    }
}

/// One connection: LISTEN, then (after a loss) clear everything, then apply what is
/// heard until the connection ends. `Ok`: the application went away.
async fn listen_once(
    config: &tokio_postgres::Config,
    state: &Weak<AppState>,
    first: bool,
) -> Result<(), Lost> {
    let lost = |listened: bool| {
        move |e: tokio_postgres::Error| Lost {
            listened,
            error: e.to_string(),
        }
    };
    let (client, mut connection) = config.connect(NoTls).await.map_err(lost(false))?;
    // The connection is driven here, its notifications passed on; it ends (and with it
    // the channel) when the connection does.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = actix_web::rt::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    let heard = (
                        n.channel() == crate::db::cluster::CHANNEL,
                        n.payload().to_owned(),
                    );
                    if tx.send(heard).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "cache listener connection ended");
                    return;
                }
            }
        }
    });
    let _stop_driver = AbortOnDrop(driver);
    client
        .batch_execute(&format!(
            "LISTEN {CHANNEL}; LISTEN {}",
            crate::db::cluster::CHANNEL
        ))
        .await
        .map_err(lost(false))?;
    // Listening from here on: what changed before is cleared now, what changes after
    // is heard.
    // (At the first connection too: requests may have been served before it listened.)
    if !first {
        CACHE_LISTEN_RECONNECTS.inc();
        tracing::warn!("cache listener reconnected: every listing and missing id forgotten");
    }
    if !apply(state, Heard::Reconnected) {
        return Ok(());
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            heard = rx.recv() => {
                let Some((cluster, payload)) = heard else {
                    return Err(Lost { listened: true, error: "connection closed".into() });
                };
                if cluster {
                    if !apply(state, Heard::Cluster(payload)) {
                        return Ok(());
                    }
                    continue;
                }
                CACHE_NOTIFICATIONS.with_label_values(&["received"]).inc();
                let Ok(change) = serde_json::from_str::<Change>(&payload) else {
                    tracing::warn!(payload = %payload, "cache notification not understood");
                    continue;
                };
                if !apply(state, Heard::Change(change)) {
                    return Ok(());
                }
            }
            _ = ping.tick() => {
                if state.strong_count() == 0 {
                    return Ok(());
                }
                let alive = tokio::time::timeout(PING_TIMEOUT, client.simple_query("SELECT 1")).await;
                match alive {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(lost(true)(e)),
                    Err(_) => return Err(Lost { listened: true, error: "no answer to a ping".into() }),
                }
            }
        }
    }
}

/// Aborts the connection's driver when the listening loop ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Applies `heard` to the caches; `false` once the application is gone.
fn apply(state: &Weak<AppState>, heard: Heard) -> bool {
    let Some(state) = state.upgrade() else {
        return false;
    };
    match heard {
        Heard::Reconnected => {
            crate::http::products::forget_listings(&state);
            state.actors.forget_missing();
        }
        Heard::Cluster(from) => {
            if from != state.actors.cluster().id {
                state.actors.cluster().changed_elsewhere();
            }
        }
        Heard::Change(change) if change.from == state.actors.cluster().id => {}
        Heard::Change(change) => {
            CACHE_NOTIFICATIONS.with_label_values(&["applied"]).inc();
            crate::http::products::catalog_changed(&state, &change.store);
            if change.what == What::Created {
                state.actors.product_created(&change.store, &change.product);
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips() {
        let change = Change {
            from: "ins_1".into(),
            store: "sto_1".into(),
            product: "prd_1".into(),
            what: What::Created,
        };
        let text = serde_json::to_string(&change).unwrap();
        assert!(text.contains("\"what\":\"created\""), "{text}");
        assert_eq!(serde_json::from_str::<Change>(&text).unwrap(), change);
    }
}
