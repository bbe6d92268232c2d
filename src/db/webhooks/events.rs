//! Events as a store reads them: the delivered body, the (row, item) position that is
//! a listing's cursor, and the listing of a store's recent events.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::GenericClient;

/// An event as delivered: `{"id","type","created_at","data"}`.
pub fn event_body(
    event_id: &str,
    kind: &str,
    created_at: DateTime<Utc>,
    data: &Value,
) -> serde_json::Value {
    serde_json::json!({"id": event_id, "type": kind, "created_at": created_at, "data": data})
}

/// Where an event is in the outbox: its row and its item in the row (0 for a row that
/// is one event, 1… for the orders of a batch's `order.created` row). Events go in
/// (row, item) order; a listing's cursor is the position of its last event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventPosition {
    pub row: i64,
    pub item: i32,
}

impl EventPosition {
    /// `<row>` or `<row>.<item>`: a cursor given out before batch rows (a bare row id)
    /// still means the same place.
    pub fn to_cursor(self) -> String {
        if self.item == 0 {
            self.row.to_string()
        } else {
            format!("{}.{}", self.row, self.item)
        }
    }

    /// The inverse of [`Self::to_cursor`]; `None` for anything it did not give out.
    pub fn parse_cursor(cursor: &str) -> Option<Self> {
        let (row, item) = match cursor.split_once('.') {
            Some((row, item)) => (row, item.parse().ok().filter(|&i: &i32| i > 0)?),
            None => (cursor, 0),
        };
        Some(Self {
            row: row.parse().ok()?,
            item,
        })
    }
}

/// A page of a store's events of the last `retention_days`, newest first (before
/// `before` if given); with the position of each (the cursor).
///
/// A page of `limit` events spans at most `limit` outbox rows, so those are read first
/// (by outbox_events_store_idx), expanded, cut to `limit`, and only then are the orders
/// of the batch rows read for their `data`.
pub async fn list_events(
    client: &impl GenericClient,
    store_id: &str,
    kind: Option<&str>,
    before: Option<EventPosition>,
    limit: i64,
    retention_days: f64,
) -> Result<Vec<(EventPosition, Value)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "WITH page AS (
                SELECT id, order_ids FROM outbox_events
                WHERE store_id = $1 AND created_at > now() - $2 * interval '1 day'
                  AND ($3::text IS NULL OR type = $3) AND ($4::bigint IS NULL OR id <= $4)
                ORDER BY id DESC LIMIT $6
            ), picked AS (
                SELECT p.id, coalesce(u.item, 0)::integer AS item FROM page p
                LEFT JOIN LATERAL unnest(p.order_ids) WITH ORDINALITY AS u(order_id, item) ON true
                WHERE $4::bigint IS NULL OR (p.id, coalesce(u.item, 0)) < ($4, $5::integer)
                ORDER BY 1 DESC, 2 DESC LIMIT $6
            )
            SELECT p.id, p.item, e.event_id, e.type, e.created_at, e.data
            FROM picked p CROSS JOIN LATERAL outbox_event(p.id, p.item) e
            ORDER BY p.id DESC, p.item DESC",
            &[
                &store_id,
                &retention_days,
                &kind,
                &before.map(|b| b.row),
                &before.map_or(0, |b| b.item),
                &limit,
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let body = event_body(r.get(2), r.get(3), r.get(4), &r.get(5));
            let at = EventPosition {
                row: r.get(0),
                item: r.get(1),
            };
            (at, body)
        })
        .collect())
}
