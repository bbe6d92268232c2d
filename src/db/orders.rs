//! Orders: reads and status changes (the write-behind batch is [`super::batch`]).

use std::sync::LazyLock;

use tokio_postgres::GenericClient;

use crate::domain::order::Order;

const ORDER_COLUMNS: &str =
    "id, store_id, product_id, customer_id, quantity, unit_price_cents, currency, \
     total_cents, status, expires_at, created_at";

fn order_from_row(r: &tokio_postgres::Row) -> Order {
    Order {
        id: r.get("id"),
        store_id: r.get("store_id"),
        product_id: r.get("product_id"),
        customer_id: r.get("customer_id"),
        quantity: r.get("quantity"),
        unit_price_cents: r.get("unit_price_cents"),
        currency: r.get("currency"),
        total_cents: r.get("total_cents"),
        status: r.get("status"),
        expires_at: r.get("expires_at"),
        created_at: r.get("created_at"),
    }
}

/// Of `ids`, those in the database, with their status now.
pub async fn order_statuses(
    client: &impl GenericClient,
    ids: &[&str],
) -> Result<std::collections::HashMap<String, String>, tokio_postgres::Error> {
    let rows = client
        .query("SELECT id, status FROM orders WHERE id = ANY($1)", &[&ids])
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

pub async fn find_order(
    client: &deadpool_postgres::Client,
    store_id: &str,
    id: &str,
) -> Result<Option<Order>, tokio_postgres::Error> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 AND store_id = $2")
    });
    let statement = client.prepare_cached(&SQL).await?;
    Ok(client
        .query_opt(&statement, &[&id, &store_id])
        .await?
        .as_ref()
        .map(order_from_row))
}

/// The order under a store's Idempotency-Key, with its request hash. Prepared once per
/// connection: after a sell-out, a key the sold-out gate's filter cannot rule out (0.1 %
/// of the refusals) comes here, and parsing and planning it each time cost PostgreSQL
/// more than the lookup.
pub async fn find_by_idempotency_key(
    client: &deadpool_postgres::Client,
    store_id: &str,
    key: &str,
) -> Result<Option<(Order, Vec<u8>)>, tokio_postgres::Error> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {ORDER_COLUMNS}, request_hash FROM orders \
             WHERE store_id = $1 AND idempotency_key = $2"
        )
    });
    let statement = client.prepare_cached(&SQL).await?;
    let row = client.query_opt(&statement, &[&store_id, &key]).await?;
    Ok(row.map(|r| (order_from_row(&r), r.get("request_hash"))))
}

/// Who changed an order's status, for the audit trail (`None`: the service itself, as
/// when a hold expires).
#[derive(Debug, Clone, Default)]
pub struct ChangedBy {
    pub api_key_id: Option<String>,
    pub client_addr: Option<String>,
}

/// Moves the orders `ids` that are in one of the statuses `from` to `to`, in one
/// statement: the orders, the stock that comes back (cancelled, expired: ONE update per
/// product), the audit trail and the outbox. Returns the orders that moved; an order no
/// longer in `from` is left alone, which is what makes confirm and expiry exclusive.
pub async fn transition_orders(
    client: &impl GenericClient,
    ids: &[&str],
    from: &[&str],
    to: &str,
    payment_reference: Option<&str>,
    by: &ChangedBy,
) -> Result<Vec<Order>, tokio_postgres::Error> {
    let sql = format!(
        "WITH changed AS (
            UPDATE orders SET status = $2, updated_at = now(),
                              payment_reference = coalesce($4, payment_reference)
            WHERE id = ANY($1) AND status = ANY($3)
            RETURNING {ORDER_COLUMNS}
        ), stock AS (
            UPDATE products p
            SET stock_available = p.stock_available + back.quantity, updated_at = now()
            FROM (SELECT product_id, sum(quantity) AS quantity FROM changed
                  WHERE status IN ('cancelled', 'expired') GROUP BY product_id) back
            WHERE p.id = back.product_id
        ), audit AS (
            INSERT INTO order_audit (order_id, store_id, event, status, api_key_id, client_addr, detail)
            SELECT id, store_id, status, status, $5::text, $6::text::inet,
                   jsonb_strip_nulls(jsonb_build_object('payment_reference', $4::text))
            FROM changed
        ), events AS (
            INSERT INTO outbox_events (store_id, type, subject_id, data)
            SELECT store_id, 'order.' || status, id,
                   jsonb_build_object('id', id, 'store_id', store_id, 'product_id', product_id,
                                      'customer_id', customer_id, 'quantity', quantity,
                                      'unit_price_cents', unit_price_cents, 'currency', currency,
                                      'total_cents', total_cents, 'status', status,
                                      'expires_at', webhook_time(expires_at),
                                      'created_at', webhook_time(created_at))
            FROM changed
        )
        SELECT {ORDER_COLUMNS} FROM changed"
    );
    let rows = client
        .query(
            &sql,
            &[
                &ids,
                &to,
                &from,
                &payment_reference,
                &by.api_key_id,
                &by.client_addr,
            ],
        )
        .await?;
    super::webhooks::outbox_written();
    Ok(rows.iter().map(order_from_row).collect())
}

/// A live payment hold, as a product actor rebuilds it.
#[derive(Debug, Clone)]
pub struct HeldOrder {
    pub id: String,
    pub customer_id: String,
    pub quantity: i64,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// The reserved orders of a product.
pub async fn reserved_orders(
    client: &impl GenericClient,
    product_id: &str,
) -> Result<Vec<HeldOrder>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT id, customer_id, quantity, expires_at FROM orders \
             WHERE product_id = $1 AND status = 'reserved' AND expires_at IS NOT NULL",
            &[&product_id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| HeldOrder {
            id: r.get(0),
            customer_id: r.get(1),
            quantity: i64::from(r.get::<_, i32>(2)),
            expires_at: r.get(3),
        })
        .collect())
}

/// (store, product) of every product with a payment hold pending: their actors are
/// started at boot so that holds expire on time after a restart.
pub async fn products_with_holds(
    client: &impl GenericClient,
) -> Result<Vec<(String, String)>, tokio_postgres::Error> {
    let rows = client
        .query(
            // One probe of orders_product_status_idx per product (migrations/V12).
            "SELECT p.store_id, p.id FROM products p WHERE EXISTS \
             (SELECT 1 FROM orders o WHERE o.product_id = p.id AND o.status = 'reserved')",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Filters of an order listing.
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub status: Option<String>,
    pub product_id: Option<String>,
    pub customer_id: Option<String>,
    /// Only orders older (smaller id) than this one: the cursor.
    pub before_id: Option<String>,
}

/// One page of a store's orders, newest first; `limit + 1` are read to know whether a
/// next page exists.
pub async fn list_orders(
    client: &impl GenericClient,
    store_id: &str,
    filter: &OrderFilter,
    limit: i64,
) -> Result<Vec<Order>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT {ORDER_COLUMNS} FROM orders
         WHERE store_id = $1
           AND ($2::text IS NULL OR status = $2)
           AND ($3::text IS NULL OR product_id = $3)
           AND ($4::text IS NULL OR customer_id = $4)
           AND ($5::text IS NULL OR id < $5)
         ORDER BY id DESC
         LIMIT $6"
    );
    let rows = client
        .query(
            &sql,
            &[
                &store_id,
                &filter.status,
                &filter.product_id,
                &filter.customer_id,
                &filter.before_id,
                &limit,
            ],
        )
        .await?;
    Ok(rows.iter().map(order_from_row).collect())
}

/// One line of an order's history.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub at: chrono::DateTime<chrono::Utc>,
    pub event: String,
    pub status: String,
    pub api_key_id: Option<String>,
    pub client_addr: Option<String>,
    pub detail: serde_json::Value,
}

/// An order's audit trail, oldest first: its consent record (kept in the order row,
/// with the status it was created in), then its status changes.
pub async fn audit_trail(
    client: &impl GenericClient,
    order_id: &str,
) -> Result<Vec<AuditEntry>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT at, event, status, api_key_id, addr, detail FROM (
                SELECT 0 AS n, created_at AS at, 'created' AS event,
                       CASE WHEN expires_at IS NULL THEN 'confirmed' ELSE 'reserved' END AS status,
                       api_key_id, host(client_addr) AS addr,
                       jsonb_build_object('terms_version', terms_version, 'marketing', marketing)
                           AS detail
                FROM orders WHERE id = $1
                UNION ALL
                SELECT id, at, event, status, api_key_id, host(client_addr), detail
                FROM order_audit WHERE order_id = $1
             ) trail ORDER BY n",
            &[&order_id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| AuditEntry {
            at: r.get(0),
            event: r.get(1),
            status: r.get(2),
            api_key_id: r.get(3),
            client_addr: r.get(4),
            detail: r.get(5),
        })
        .collect())
}
