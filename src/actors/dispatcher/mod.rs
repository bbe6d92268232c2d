//! The webhook dispatcher: reads the outbox and delivers each event at least once to the
//! endpoints that subscribed to it, beside the order writer on its own thread.
//!
//! One loop, woken by commits (see [`crate::db::webhooks::outbox_written`]), by finished deliveries and by a short
//! timer (retries that fall due, sales that open):
//! 1. `drop.live` for sales that opened (a conditional UPDATE claims each once);
//! 2. fan-out: undelivered outbox events become one delivery row per matching endpoint
//!    ([`crate::db::webhooks::fan_out`], the one reader of the outbox); after a burst
//!    of them, the table's statistics are refreshed ([`ANALYZE_AFTER`]);
//! 3. claim: due deliveries, none of an endpoint that has requests in flight, at most
//!    [`CLAIM_HEALTHY`] of a healthy endpoint and [`MAX_IN_FLIGHT_PER_ENDPOINT`] of one
//!    whose last batch went wrong, `FOR UPDATE SKIP LOCKED`, each a lease;
//! 4. each endpoint's claim is sent in a task of its own, at most
//!    [`MAX_IN_FLIGHT_PER_ENDPOINT`] requests at once, so a slow or dead endpoint holds up
//!    only itself; the batch's attempts are recorded together, in one statement.
//!
//! Nothing is held only in memory: a delivery is a row until a 2xx is recorded, and a
//! claim whose process died is due again when its lease lapses.

mod deliver;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use ipnet::IpNet;
use tokio::sync::Notify;

use crate::config::Settings;
use crate::db::webhooks::{analyze_deliveries, announce_drops, backlog, claim_due, fan_out};
use crate::db::webhooks::{prune, record_attempts};
use crate::db::webhooks::{AttemptRecord, Claimed, PerEndpoint};
use crate::db::Pool;
use crate::domain::webhook::RetrySchedule;
use crate::metrics::{WEBHOOK_BACKLOG_GAUGE, WEBHOOK_DELIVERIES, WEBHOOK_ENDPOINTS_DISABLED};
use futures_util::StreamExt;

/// Requests in flight to one endpoint from one process, at most.
pub const MAX_IN_FLIGHT_PER_ENDPOINT: usize = 16;
/// Deliveries of a healthy endpoint claimed at once (sent 16 at a time): big batches
/// keep the claims and records per delivery few when a sell-out makes thousands.
pub const CLAIM_HEALTHY: usize = 256;
/// Deliveries claimed per round, over all endpoints.
const CLAIM_BATCH: i64 = 512;
/// Outbox events handed over per fan-out statement.
const FAN_OUT_BATCH: i64 = 2000;
/// How often the loop looks without being woken (due retries, opened sales).
const POLL_EVERY: Duration = Duration::from_millis(200);
/// The least time between two rounds of the cluster's dispatchers ([`round_gap`]).
const MIN_ROUND_GAP: Duration = Duration::from_millis(20);
/// How often sales that opened are looked for (well within the 1 s promised).
const DROPS_EVERY: Duration = Duration::from_millis(250);
/// How often the backlog gauges are refreshed.
const GAUGES_EVERY: Duration = Duration::from_secs(5);
/// How often old events and deliveries are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Deliveries fanned out since the claim's statistics were last refreshed before they
/// are refreshed again ([`analyze_deliveries`]): a claim planned with statistics that
/// saw none pending reads every pending row per candidate.
const ANALYZE_AFTER: u64 = 1000;
/// The least time between two such refreshes (a stampede fans out thousands a second).
const ANALYZE_EVERY: Duration = Duration::from_secs(5);
/// Lease beyond the attempt's own timeout, before another dispatcher may take it.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// Makes the dispatcher look now (e.g. a delivery was set to be retried now).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Wake;

/// What the loop and its delivery tasks share.
struct Inner {
    /// The dispatcher's own pool (its connections are driven by its thread).
    pool: Pool,
    client: reqwest::Client,
    schedule: RetrySchedule,
    allow: Arc<Vec<IpNet>>,
    disable_after_hours: f64,
    retention_days: f64,
    /// The claims' leases: healthy (a whole batch at the timeout) and troubled (one wave).
    healthy_lease_secs: f64,
    troubled_lease_secs: f64,
    /// Endpoints whose last batch had a failure: claimed a wave at a time.
    troubled: Mutex<HashSet<String>>,
    /// Endpoints with requests in flight from this process (not claimed again meanwhile).
    busy: Mutex<HashSet<String>>,
    /// Rung by [`Wake`] and by every finished endpoint batch.
    kick: Notify,
    /// How many dispatchers there are (one per live instance): see [`round_gap`].
    cluster: Arc<crate::cluster::Cluster>,
}

pub struct Dispatcher {
    inner: Arc<Inner>,
    mailbox_capacity: usize,
}

impl Dispatcher {
    pub fn new(pool: Pool, settings: &Settings, cluster: Arc<crate::cluster::Cluster>) -> Self {
        let allow = Arc::new(settings.webhook_allow_nets.clone());
        let timeout = Duration::from_millis(settings.webhook_timeout_ms.max(1));
        Dispatcher {
            inner: Arc::new(Inner {
                pool,
                client: deliver::build_client(allow.clone(), timeout, MAX_IN_FLIGHT_PER_ENDPOINT),
                schedule: settings.webhook_retry_schedule.clone(),
                allow,
                disable_after_hours: settings.webhook_disable_after_hours,
                retention_days: settings.webhook_retention_days,
                healthy_lease_secs: (timeout * (CLAIM_HEALTHY / MAX_IN_FLIGHT_PER_ENDPOINT) as u32
                    + LEASE_MARGIN)
                    .as_secs_f64(),
                troubled_lease_secs: (timeout + LEASE_MARGIN).as_secs_f64(),
                troubled: Mutex::new(HashSet::new()),
                busy: Mutex::new(HashSet::new()),
                kick: Notify::new(),
                cluster,
            }),
            mailbox_capacity: settings.mailbox_capacity,
        }
    }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
        let inner = self.inner.clone();
        // The loop lives as long as the actor's arbiter: stopping it stops the loop.
        actix::spawn(run(inner));
    }
}

impl Handler<Wake> for Dispatcher {
    type Result = ();

    fn handle(&mut self, _: Wake, _: &mut Self::Context) {
        crate::metrics::mailbox_depth("dispatcher").dec();
        self.inner.kick.notify_one();
    }
}

/// The dispatcher's loop, forever.
async fn run(inner: Arc<Inner>) {
    let mut timers = Timers::default();
    loop {
        // Registered before the round, so a commit during it is not missed.
        let committed = crate::db::webhooks::OUTBOX_WRITTEN.notified();
        tokio::pin!(committed);
        committed.as_mut().enable();
        if let Err(e) = round(&inner, &mut timers).await {
            tracing::warn!(error = format!("{e:#}"), "webhook dispatcher round failed");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // Wake-ups come with every commit (hundreds a second in a sale): rounds are at
        // least a gap apart, so that one round serves many commits and the claim does
        // not rescan a growing backlog for every one of them.
        tokio::time::sleep(round_gap(&inner)).await;
        tokio::select! {
            _ = committed => {}
            _ = inner.kick.notified() => {}
            _ = tokio::time::sleep(POLL_EVERY) => {}
        }
    }
}

/// The least time between two rounds of this dispatcher: [`MIN_ROUND_GAP`] for the
/// cluster, so each of N instances' dispatchers waits N times as long (the outbox is one
/// for all of them; more rounds would only scan it more often for the same events).
fn round_gap(inner: &Inner) -> Duration {
    MIN_ROUND_GAP * inner.cluster.live_instances() as u32
}

/// When the periodic duties last ran.
#[derive(Default)]
struct Timers {
    drops: Option<Instant>,
    gauges: Option<Instant>,
    prune: Option<Instant>,
    statistics: Option<Instant>,
    /// Deliveries fanned out since `statistics`.
    fanned: u64,
}

fn due(last: &mut Option<Instant>, every: Duration) -> bool {
    if last.is_some_and(|t| t.elapsed() < every) {
        return false;
    }
    *last = Some(Instant::now());
    true
}

/// One pass: periodic duties, fan-out, claim, and the deliveries started.
async fn round(inner: &Arc<Inner>, timers: &mut Timers) -> anyhow::Result<()> {
    let mut client = inner.pool.get().await?;
    if due(&mut timers.drops, DROPS_EVERY) {
        announce_drops(&**client).await?;
    }
    if due(&mut timers.prune, PRUNE_EVERY) {
        let pruned = prune(&**client, inner.retention_days).await?;
        if pruned > 0 {
            tracing::info!(events.pruned = pruned, "pruned old webhook events");
        }
    }
    if due(&mut timers.gauges, GAUGES_EVERY) {
        let (outbox, deliveries) = backlog(&**client).await?;
        WEBHOOK_BACKLOG_GAUGE
            .with_label_values(&["outbox"])
            .set(outbox);
        WEBHOOK_BACKLOG_GAUGE
            .with_label_values(&["deliveries"])
            .set(deliveries);
    }
    loop {
        let (events, deliveries) = fan_out(&mut client, FAN_OUT_BATCH).await?;
        timers.fanned += deliveries;
        if (events as i64) < FAN_OUT_BATCH {
            break;
        }
    }
    if timers.fanned >= ANALYZE_AFTER && due(&mut timers.statistics, ANALYZE_EVERY) {
        analyze_deliveries(&**client).await?;
        tracing::debug!(
            deliveries.fanned = timers.fanned,
            "webhook delivery statistics refreshed"
        );
        timers.fanned = 0;
    }
    let busy: Vec<String> = inner.busy.lock().expect("busy").iter().cloned().collect();
    let troubled: Vec<String> = inner
        .troubled
        .lock()
        .expect("troubled")
        .iter()
        .cloned()
        .collect();
    let per_endpoint = PerEndpoint {
        healthy: CLAIM_HEALTHY as i64,
        healthy_lease_secs: inner.healthy_lease_secs,
        troubled: MAX_IN_FLIGHT_PER_ENDPOINT as i64,
        troubled_lease_secs: inner.troubled_lease_secs,
        troubled_ids: &troubled,
    };
    let claimed = claim_due(&client, CLAIM_BATCH, &per_endpoint, &busy).await?;
    drop(client);
    let mut by_endpoint: HashMap<String, Vec<_>> = HashMap::new();
    for c in claimed {
        by_endpoint
            .entry(c.endpoint_id.clone())
            .or_default()
            .push(c);
    }
    for (endpoint_id, batch) in by_endpoint {
        inner.busy.lock().expect("busy").insert(endpoint_id.clone());
        let inner = inner.clone();
        actix::spawn(async move { deliver_batch(&inner, &endpoint_id, batch).await });
    }
    Ok(())
}

/// One endpoint's claimed deliveries, [`MAX_IN_FLIGHT_PER_ENDPOINT`] at a time, then
/// recorded in one statement. A batch that cannot be recorded leaves its claims to
/// lapse: its deliveries are tried again (at least once, never lost).
async fn deliver_batch(inner: &Inner, endpoint_id: &str, batch: Vec<Claimed>) {
    let outcomes: Vec<deliver::Outcome> = futures_util::stream::iter(batch.iter())
        .map(|c| deliver::attempt(&inner.client, &inner.allow, &inner.schedule, c))
        .buffer_unordered(MAX_IN_FLIGHT_PER_ENDPOINT)
        .collect()
        .await;
    // Its requests are done: the endpoint may be claimed again while this batch is
    // recorded (its rows stay leased, and a later event about one of its subjects waits
    // for the record, since the earlier delivery is still pending).
    inner.busy.lock().expect("busy").remove(endpoint_id);
    inner.kick.notify_one();
    let went_wrong = outcomes.iter().any(|o| !o.record.delivered);
    {
        let mut troubled = inner.troubled.lock().expect("troubled");
        if went_wrong {
            troubled.insert(endpoint_id.to_owned());
        } else {
            troubled.remove(endpoint_id);
        }
    }
    let records: Vec<AttemptRecord> = outcomes.iter().map(|o| o.record.clone()).collect();
    let recorded = async {
        let client = inner.pool.get().await?;
        let disabled =
            record_attempts(&**client, endpoint_id, &records, inner.disable_after_hours).await?;
        anyhow::Ok(disabled)
    }
    .await;
    match recorded {
        Ok(disabled) => {
            for outcome in outcomes.iter().filter_map(|o| o.finished) {
                WEBHOOK_DELIVERIES.with_label_values(&[outcome]).inc();
            }
            if disabled {
                let reason = if records.iter().any(|r| r.gone) {
                    "gone"
                } else {
                    "failing"
                };
                WEBHOOK_ENDPOINTS_DISABLED
                    .with_label_values(&[reason])
                    .inc();
                tracing::warn!(webhook.endpoint_id = %endpoint_id, reason, "webhook endpoint disabled");
            }
        }
        Err(e) => tracing::warn!(
            webhook.endpoint_id = %endpoint_id,
            batch.size = records.len(),
            error = format!("{e:#}"),
            "webhook attempts not recorded; they will be tried again"
        ),
    }
}
