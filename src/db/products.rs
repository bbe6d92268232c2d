//! Products and the state a product actor is rebuilt from.

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

use crate::domain::product::Product;
use crate::domain::waiting_room::WaitingRoom;

/// A validated new product.
#[derive(Debug, Clone)]
pub struct NewProduct {
    pub sku: String,
    pub name: String,
    pub description: Option<String>,
    pub price_cents: i64,
    pub currency: String,
    pub stock: i64,
    pub max_per_customer: Option<i32>,
    pub sale_starts_at: Option<DateTime<Utc>>,
    pub sale_ends_at: Option<DateTime<Utc>>,
    pub hold_seconds: i32,
    pub waiting_room: Option<WaitingRoom>,
}

const PRODUCT_COLUMNS: &str = "id, store_id, sku, name, description, price_cents, currency, stock_total, \
     stock_available, max_per_customer, sale_starts_at, sale_ends_at, hold_seconds, queue_opens_seconds, \
     queue_admit_per_second, created_at, updated_at";

fn product_from_row(r: &tokio_postgres::Row) -> Product {
    Product {
        id: r.get("id"),
        store_id: r.get("store_id"),
        sku: r.get("sku"),
        name: r.get("name"),
        description: r.get("description"),
        price_cents: r.get("price_cents"),
        currency: r.get("currency"),
        stock_total: r.get("stock_total"),
        stock_available: r.get("stock_available"),
        max_per_customer: r.get("max_per_customer"),
        sale_starts_at: r.get("sale_starts_at"),
        sale_ends_at: r.get("sale_ends_at"),
        hold_seconds: r.get("hold_seconds"),
        waiting_room: match (
            r.get("queue_opens_seconds"),
            r.get("queue_admit_per_second"),
        ) {
            (Some(opens_seconds_before), Some(admit_per_second)) => Some(WaitingRoom {
                opens_seconds_before,
                admit_per_second,
            }),
            _ => None,
        },
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    }
}

/// Inserts a product; a taken sku breaks `products_store_sku_key`.
pub async fn insert_product(
    client: &impl GenericClient,
    id: &str,
    store_id: &str,
    p: &NewProduct,
) -> Result<Product, tokio_postgres::Error> {
    let sql = format!(
        "INSERT INTO products (id, store_id, sku, name, description, price_cents, currency, stock_total, \
         stock_available, max_per_customer, sale_starts_at, sale_ends_at, hold_seconds, \
         queue_opens_seconds, queue_admit_per_second) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10, $11, $12, $13, $14) RETURNING {PRODUCT_COLUMNS}"
    );
    let row = client
        .query_one(
            &sql,
            &[
                &id,
                &store_id,
                &p.sku,
                &p.name,
                &p.description,
                &p.price_cents,
                &p.currency,
                &p.stock,
                &p.max_per_customer,
                &p.sale_starts_at,
                &p.sale_ends_at,
                &p.hold_seconds,
                &p.waiting_room.map(|w| w.opens_seconds_before),
                &p.waiting_room.map(|w| w.admit_per_second),
            ],
        )
        .await?;
    Ok(product_from_row(&row))
}

/// The product `id` if it belongs to `store_id`.
pub async fn find_product(
    client: &impl GenericClient,
    store_id: &str,
    id: &str,
) -> Result<Option<Product>, tokio_postgres::Error> {
    let sql = format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE id = $1 AND store_id = $2");
    Ok(client
        .query_opt(&sql, &[&id, &store_id])
        .await?
        .as_ref()
        .map(product_from_row))
}

/// Whether `id` names a product of `store_id` (the store asks before it starts an actor).
pub async fn product_exists(
    client: &impl GenericClient,
    store_id: &str,
    id: &str,
) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT 1 FROM products WHERE id = $1 AND store_id = $2",
            &[&id, &store_id],
        )
        .await?
        .is_some())
}

/// Units each customer holds in live (reserved or confirmed) orders of a product (the
/// ledger keeps them by a hash of the customer id).
pub async fn held_by_customer(
    client: &impl GenericClient,
    product_id: &str,
) -> Result<Vec<(String, i64)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT customer_id, sum(quantity)::bigint AS held FROM orders \
             WHERE product_id = $1 AND status IN ('reserved', 'confirmed') GROUP BY customer_id",
            &[&product_id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get("customer_id"), r.get("held")))
        .collect())
}

/// The idempotency keys of a product's orders (the actor keeps them as a filter).
pub async fn idempotency_keys(
    client: &impl GenericClient,
    product_id: &str,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT idempotency_key FROM orders WHERE product_id = $1",
            &[&product_id],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// What a restock came to.
#[derive(Debug)]
pub enum Restocked {
    /// Applied now.
    Applied(Product),
    /// Its Idempotency-Key was applied before (the product as it is now).
    AlreadyApplied(Product),
    /// Its Idempotency-Key was used for another product or quantity.
    KeyReused,
    /// No such product in the store.
    NotFound,
}

/// Adds `quantity` units to both the total and the available stock, and records the
/// `product.restocked` event in the same statement. With `key`, the key is claimed in
/// that statement too (`restock_keys`), so a key already claimed adds nothing: a retry
/// of a restock whose answer was lost learns whether it was applied.
pub async fn restock(
    client: &impl GenericClient,
    store_id: &str,
    id: &str,
    quantity: i64,
    key: Option<&str>,
) -> Result<Restocked, tokio_postgres::Error> {
    let sql = format!(
        "WITH prior AS (
            SELECT product_id, quantity FROM restock_keys WHERE store_id = $2 AND idempotency_key = $4
        ), claimed AS (
            INSERT INTO restock_keys (store_id, idempotency_key, product_id, quantity)
            SELECT $2, $4, $1, $3 WHERE $4::text IS NOT NULL
                AND EXISTS (SELECT 1 FROM products WHERE id = $1 AND store_id = $2)
            ON CONFLICT DO NOTHING RETURNING 1
        ), restocked AS (
            UPDATE products SET stock_total = stock_total + $3, stock_available = stock_available + $3,
                                updated_at = now()
            WHERE id = $1 AND store_id = $2 AND ($4::text IS NULL OR EXISTS (SELECT 1 FROM claimed))
            RETURNING products AS product, {PRODUCT_COLUMNS}
        ), events AS (
            INSERT INTO outbox_events (store_id, type, subject_id, data)
            SELECT store_id, 'product.restocked', id, webhook_product_json(product, now())
            FROM restocked
        )
        SELECT {PRODUCT_COLUMNS}, true AS applied, NULL::text AS prior_product, NULL::bigint AS prior_quantity
        FROM restocked
        UNION ALL
        SELECT {PRODUCT_COLUMNS}, false, (SELECT product_id FROM prior), (SELECT quantity FROM prior)
        FROM products WHERE id = $1 AND store_id = $2 AND NOT EXISTS (SELECT 1 FROM restocked)"
    );
    let Some(row) = client
        .query_opt(&sql, &[&id, &store_id, &quantity, &key])
        .await?
    else {
        return Ok(Restocked::NotFound);
    };
    let product = product_from_row(&row);
    if row.get::<_, bool>("applied") {
        super::webhooks::outbox_written();
        return Ok(Restocked::Applied(product));
    }
    let prior: (Option<String>, Option<i64>) =
        (row.get("prior_product"), row.get("prior_quantity"));
    Ok(match prior {
        (Some(p), Some(q)) if p == id && q == quantity => Restocked::AlreadyApplied(product),
        (Some(_), _) => Restocked::KeyReused,
        // A concurrent restock with the same key claimed it first and is applied.
        _ => Restocked::AlreadyApplied(product),
    })
}

/// A validated PATCH: `None` leaves a column alone; `Some(None)` clears a nullable one.
#[derive(Debug, Clone, Default)]
pub struct ProductPatch {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub price_cents: Option<i64>,
    pub max_per_customer: Option<Option<i32>>,
    pub sale_starts_at: Option<Option<DateTime<Utc>>>,
    pub sale_ends_at: Option<Option<DateTime<Utc>>>,
    pub hold_seconds: Option<i32>,
    pub waiting_room: Option<Option<WaitingRoom>>,
}

/// Applies a PATCH; a window that ends before it starts breaks `products_sale_window`.
pub async fn update_product(
    client: &impl GenericClient,
    store_id: &str,
    id: &str,
    p: &ProductPatch,
) -> Result<Option<Product>, tokio_postgres::Error> {
    let sql = format!(
        "UPDATE products SET
            name = CASE WHEN $3 THEN $4 ELSE name END,
            description = CASE WHEN $5 THEN $6 ELSE description END,
            price_cents = CASE WHEN $7 THEN $8 ELSE price_cents END,
            max_per_customer = CASE WHEN $9 THEN $10 ELSE max_per_customer END,
            sale_starts_at = CASE WHEN $11 THEN $12 ELSE sale_starts_at END,
            sale_ends_at = CASE WHEN $13 THEN $14 ELSE sale_ends_at END,
            hold_seconds = CASE WHEN $15 THEN $16 ELSE hold_seconds END,
            queue_opens_seconds = CASE WHEN $17 THEN $18 ELSE queue_opens_seconds END,
            queue_admit_per_second = CASE WHEN $17 THEN $19 ELSE queue_admit_per_second END,
            updated_at = now()
         WHERE id = $1 AND store_id = $2
         RETURNING {PRODUCT_COLUMNS}"
    );
    let row = client
        .query_opt(
            &sql,
            &[
                &id,
                &store_id,
                &p.name.is_some(),
                &p.name,
                &p.description.is_some(),
                &p.description.clone().flatten(),
                &p.price_cents.is_some(),
                &p.price_cents,
                &p.max_per_customer.is_some(),
                &p.max_per_customer.flatten(),
                &p.sale_starts_at.is_some(),
                &p.sale_starts_at.flatten(),
                &p.sale_ends_at.is_some(),
                &p.sale_ends_at.flatten(),
                &p.hold_seconds.is_some(),
                &p.hold_seconds,
                &p.waiting_room.is_some(),
                &p.waiting_room.flatten().map(|w| w.opens_seconds_before),
                &p.waiting_room.flatten().map(|w| w.admit_per_second),
            ],
        )
        .await?;
    Ok(row.as_ref().map(product_from_row))
}

/// How a product listing is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductSort {
    CreatedAt,
    SaleStartsAt,
    PriceCents,
}

impl ProductSort {
    /// The key column, as indexed (see migration V5).
    fn key_sql(self) -> &'static str {
        match self {
            ProductSort::CreatedAt => "created_at",
            ProductSort::SaleStartsAt => "coalesce(sale_starts_at, created_at)",
            ProductSort::PriceCents => "price_cents",
        }
    }

    /// The key of a product as a cursor carries it: micros since the epoch or cents.
    pub fn key_of(self, p: &Product) -> i64 {
        match self {
            ProductSort::CreatedAt => p.created_at.timestamp_micros(),
            ProductSort::SaleStartsAt => {
                p.sale_starts_at.unwrap_or(p.created_at).timestamp_micros()
            }
            ProductSort::PriceCents => p.price_cents,
        }
    }
}

/// The status a product has now, in SQL (the same rule as `Product::status`).
const STATUS_SQL: &str =
    "CASE WHEN sale_ends_at IS NOT NULL AND now() >= sale_ends_at THEN 'ended' \
     WHEN sale_starts_at IS NOT NULL AND now() < sale_starts_at THEN 'scheduled' \
     WHEN stock_available = 0 THEN 'sold_out' ELSE 'live' END";

/// One page of a store's products: `status` filter, `sort` (descending if `desc`), after
/// the cursor `(key, id)` if given; reads `limit` rows.
pub async fn list_products(
    client: &impl GenericClient,
    store_id: &str,
    status: Option<&str>,
    sort: ProductSort,
    desc: bool,
    after: Option<(i64, &str)>,
    limit: i64,
) -> Result<Vec<Product>, tokio_postgres::Error> {
    let key = sort.key_sql();
    let (dir, cmp) = if desc { ("DESC", "<") } else { ("ASC", ">") };
    // Cursor keys travel as integers; timestamps are turned back into timestamptz here.
    let cursor_key = match sort {
        ProductSort::PriceCents => "$4::bigint".to_owned(),
        _ => "(timestamptz 'epoch' + $4::bigint * interval '1 microsecond')".to_owned(),
    };
    let sql = format!(
        "SELECT {PRODUCT_COLUMNS} FROM products
         WHERE store_id = $1
           AND ($2::text IS NULL OR ({STATUS_SQL}) = $2)
           AND ($3::bool IS NOT TRUE OR ({key}, id) {cmp} ({cursor_key}, $5::text))
         ORDER BY {key} {dir}, id {dir}
         LIMIT $6"
    );
    let (has_cursor, cursor_value, cursor_id) = match after {
        Some((k, id)) => (true, k, id),
        None => (false, 0, ""),
    };
    let rows = client
        .query(
            &sql,
            &[
                &store_id,
                &status,
                &has_cursor,
                &cursor_value,
                &cursor_id,
                &limit,
            ],
        )
        .await?;
    Ok(rows.iter().map(product_from_row).collect())
}

/// The store's drop calendar: products whose sale window meets `[from, to]`, by start,
/// in pages: `after` is the (start, id) of the previous page's last product.
pub async fn drops(
    client: &impl GenericClient,
    store_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    after: Option<(DateTime<Utc>, &str)>,
    limit: i64,
) -> Result<Vec<Product>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT {PRODUCT_COLUMNS} FROM products
         WHERE store_id = $1 AND sale_starts_at IS NOT NULL AND sale_starts_at <= $3
           AND (sale_ends_at IS NULL OR sale_ends_at >= $2)
           AND ($5::timestamptz IS NULL OR (sale_starts_at, id) > ($5, $6::text))
         ORDER BY sale_starts_at, id LIMIT $4"
    );
    let (after_at, after_id) = match after {
        Some((at, id)) => (Some(at), id),
        None => (None, ""),
    };
    let rows = client
        .query(&sql, &[&store_id, &from, &to, &limit, &after_at, &after_id])
        .await?;
    Ok(rows.iter().map(product_from_row).collect())
}

/// (store, product) of every product whose sale starts within `lead_secs`.
pub async fn starting_soon(
    client: &impl GenericClient,
    lead_secs: i64,
) -> Result<Vec<(String, String)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT store_id, id FROM products \
             WHERE sale_starts_at > now() AND sale_starts_at <= now() + $1 * interval '1 second'",
            &[&(lead_secs as f64)],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
