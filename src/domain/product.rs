//! A product as stored, and its public representation.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::ledger::SaleWindow;
use super::waiting_room::WaitingRoom;

/// A product row.
#[derive(Debug, Clone)]
pub struct Product {
    pub id: String,
    pub store_id: String,
    pub sku: String,
    pub name: String,
    pub description: Option<String>,
    pub price_cents: i64,
    pub currency: String,
    pub stock_total: i64,
    pub stock_available: i64,
    pub max_per_customer: Option<i32>,
    pub sale_starts_at: Option<DateTime<Utc>>,
    pub sale_ends_at: Option<DateTime<Utc>>,
    pub hold_seconds: i32,
    /// A drop that admits buyers through a virtual waiting room.
    pub waiting_room: Option<WaitingRoom>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Where a product stands in its sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProductStatus {
    Scheduled,
    Live,
    SoldOut,
    Ended,
}

impl Product {
    pub fn window(&self) -> SaleWindow {
        SaleWindow {
            starts_at: self.sale_starts_at,
            ends_at: self.sale_ends_at,
        }
    }

    pub fn status(&self, now: DateTime<Utc>) -> ProductStatus {
        if self.sale_ends_at.is_some_and(|e| now >= e) {
            ProductStatus::Ended
        } else if self.sale_starts_at.is_some_and(|s| now < s) {
            ProductStatus::Scheduled
        } else if self.stock_available == 0 {
            ProductStatus::SoldOut
        } else {
            ProductStatus::Live
        }
    }

    pub fn to_view(&self, now: DateTime<Utc>) -> ProductView<'_> {
        ProductView {
            id: &self.id,
            store_id: &self.store_id,
            sku: &self.sku,
            name: &self.name,
            description: self.description.as_deref(),
            price_cents: self.price_cents,
            currency: &self.currency,
            stock_total: self.stock_total,
            stock_available: self.stock_available,
            max_per_customer: self.max_per_customer,
            sale_starts_at: self.sale_starts_at,
            sale_ends_at: self.sale_ends_at,
            hold_seconds: self.hold_seconds,
            waiting_room: self.waiting_room,
            status: self.status(now),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// The product representation of the API.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProductView<'a> {
    pub id: &'a str,
    pub store_id: &'a str,
    pub sku: &'a str,
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub price_cents: i64,
    pub currency: &'a str,
    pub stock_total: i64,
    pub stock_available: i64,
    pub max_per_customer: Option<i32>,
    pub sale_starts_at: Option<DateTime<Utc>>,
    pub sale_ends_at: Option<DateTime<Utc>>,
    pub hold_seconds: i32,
    pub waiting_room: Option<WaitingRoom>,
    pub status: ProductStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `GET /products/{id}/stock`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StockView {
    pub stock_available: i64,
    pub status: ProductStatus,
}
