//! Products and the state a product actor is rebuilt from.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

use crate::domain::product::Product;

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
}

const PRODUCT_COLUMNS: &str = "id, store_id, sku, name, description, price_cents, currency, stock_total, \
     stock_available, max_per_customer, sale_starts_at, sale_ends_at, hold_seconds, created_at, updated_at";

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
         stock_available, max_per_customer, sale_starts_at, sale_ends_at, hold_seconds) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10, $11, $12) RETURNING {PRODUCT_COLUMNS}"
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

/// Units each customer holds in live (reserved or confirmed) orders of a product.
pub async fn held_by_customer(
    client: &impl GenericClient,
    product_id: &str,
) -> Result<HashMap<String, i64>, tokio_postgres::Error> {
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

/// Idempotency keys already used on a product: key → (order id, request hash).
pub async fn idempotency_keys(
    client: &impl GenericClient,
    product_id: &str,
) -> Result<HashMap<String, (String, Vec<u8>)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT idempotency_key, id, request_hash FROM orders WHERE product_id = $1",
            &[&product_id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get("idempotency_key"),
                (r.get("id"), r.get("request_hash")),
            )
        })
        .collect())
}

/// Adds `quantity` units to both the total and the available stock, and records the
/// `product.restocked` event in the same statement.
pub async fn restock(
    client: &impl GenericClient,
    store_id: &str,
    id: &str,
    quantity: i64,
) -> Result<Option<Product>, tokio_postgres::Error> {
    let sql = format!(
        "WITH restocked AS (
            UPDATE products SET stock_total = stock_total + $3, stock_available = stock_available + $3,
                                updated_at = now()
            WHERE id = $1 AND store_id = $2 RETURNING {PRODUCT_COLUMNS}
        ), events AS (
            INSERT INTO outbox_events (store_id, type, subject_id, data)
            SELECT store_id, 'product.restocked', id,
                   jsonb_build_object('product_id', id, 'quantity', $3::bigint, 'stock_total', stock_total)
            FROM restocked
        )
        SELECT {PRODUCT_COLUMNS} FROM restocked"
    );
    Ok(client
        .query_opt(&sql, &[&id, &store_id, &quantity])
        .await?
        .as_ref()
        .map(product_from_row))
}
