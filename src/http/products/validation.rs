//! Product request bodies and listing cursors: parsed and checked in memory, before
//! anything is asked of an actor or the database.

use chrono::{DateTime, Utc};

use crate::domain::product::Product;
use crate::http::junk::is_plausible_id;

use crate::db::products::{NewProduct, ProductPatch};
use crate::domain::validate::{FieldError, Fields, Optional, Required};
use crate::domain::waiting_room::WaitingRoom;

/// `POST /products` body.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct CreateProductRequest {
    /// Unique within the store, 1–64 characters.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    sku: String,
    /// 1–200 characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    name: String,
    /// At most 5,000 characters.
    #[schema(
        min_length = 0,
        max_length = 5000,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    description: Option<String>,
    /// Integer minor units, ≥ 0.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    price_cents: i64,
    /// ISO 4217, e.g. `EUR`.
    #[schema(pattern = "^[A-Z]{3}$")]
    currency: String,
    /// Units put on sale, ≥ 0.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    stock: i64,
    /// Units one customer may buy, 1–1,000,000.
    #[schema(minimum = 1, maximum = 1_000_000)]
    max_per_customer: Option<i32>,
    sale_starts_at: Option<chrono::DateTime<Utc>>,
    /// After `sale_starts_at`.
    sale_ends_at: Option<chrono::DateTime<Utc>>,
    /// How long a checkout holds stock awaiting payment (default 0: confirmed at once),
    /// at most 7 days.
    #[schema(minimum = 0, maximum = 604_800)]
    hold_seconds: Option<i32>,
    /// A virtual waiting room for the drop (needs sale_starts_at).
    waiting_room: Option<WaitingRoom>,
}

/// `POST /products/{id}/restock` body.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct RestockRequest {
    /// ≥ 1.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    quantity: i64,
}

pub(super) const MAX_STOCK: i64 = 1_000_000_000_000;

pub(super) fn parse_new_product(body: &serde_json::Value) -> Result<NewProduct, Vec<FieldError>> {
    let mut f = Fields::new(body)?;
    let sku = f.string("sku", Required, 1..=64);
    let name = f.string("name", Required, 1..=200);
    let description = f.string("description", Optional, 0..=5000);
    let price_cents = f.int("price_cents", Required, 0..=MAX_STOCK);
    let currency = f.string("currency", Required, 3..=3);
    if let Some(c) = &currency {
        f.check(
            c.chars().all(|c| c.is_ascii_uppercase()),
            "currency",
            "must be an ISO 4217 code such as EUR",
        );
    }
    let stock = f.int("stock", Required, 0..=MAX_STOCK);
    let max_per_customer = f.int("max_per_customer", Optional, 1..=1_000_000);
    let sale_starts_at = f.timestamp("sale_starts_at", Optional);
    let sale_ends_at = f.timestamp("sale_ends_at", Optional);
    if let (Some(s), Some(e)) = (sale_starts_at, sale_ends_at) {
        f.check(e > s, "sale_ends_at", "must be after sale_starts_at");
    }
    let hold_seconds = f.int("hold_seconds", Optional, 0..=7 * 24 * 3600);
    let waiting_room = read_waiting_room(&mut f);
    f.check(
        waiting_room.is_none() || sale_starts_at.is_some(),
        "waiting_room",
        "needs sale_starts_at: the queue opens before the start",
    );
    f.finish()?;
    Ok(NewProduct {
        waiting_room,
        sku: sku.unwrap_or_default(),
        name: name.unwrap_or_default(),
        description,
        price_cents: price_cents.unwrap_or_default(),
        currency: currency.unwrap_or_default(),
        stock: stock.unwrap_or_default(),
        max_per_customer: max_per_customer.map(|m| m as i32),
        sale_starts_at,
        sale_ends_at,
        hold_seconds: hold_seconds.unwrap_or(0) as i32,
    })
}

/// `PATCH /products/{id}` body: any of these, at least one; `null` clears the nullable
/// ones.
#[derive(utoipa::ToSchema)]
#[schema(min_properties = 1)]
#[allow(dead_code)]
pub struct PatchProductRequest {
    /// 1–200 characters.
    #[schema(
        nullable = false,
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    name: Option<String>,
    /// At most 5,000 characters.
    #[schema(
        min_length = 0,
        max_length = 5000,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    description: Option<String>,
    #[schema(nullable = false, minimum = 0, maximum = 1_000_000_000_000_i64)]
    price_cents: Option<i64>,
    #[schema(minimum = 1, maximum = 1_000_000)]
    max_per_customer: Option<i32>,
    sale_starts_at: Option<chrono::DateTime<Utc>>,
    sale_ends_at: Option<chrono::DateTime<Utc>>,
    /// At most 7 days.
    #[schema(nullable = false, minimum = 0, maximum = 604_800)]
    hold_seconds: Option<i32>,
    waiting_room: Option<WaitingRoom>,
}

pub(super) fn parse_patch(body: &serde_json::Value) -> Result<ProductPatch, Vec<FieldError>> {
    let mut f = Fields::new(body)?;
    for name in ["name", "price_cents", "hold_seconds"] {
        let null = f.is_null(name);
        f.check(!null, name, "must not be null");
    }
    let given = |f: &Fields, name| f.present(name);
    let mut patch = ProductPatch {
        name: f.string("name", Optional, 1..=200),
        price_cents: f.int("price_cents", Optional, 0..=MAX_STOCK),
        hold_seconds: f
            .int("hold_seconds", Optional, 0..=7 * 24 * 3600)
            .map(|h| h as i32),
        ..ProductPatch::default()
    };
    let description = f.string("description", Optional, 0..=5000);
    let max = f
        .int("max_per_customer", Optional, 1..=1_000_000)
        .map(|m| m as i32);
    let starts = f.timestamp("sale_starts_at", Optional);
    let ends = f.timestamp("sale_ends_at", Optional);
    let waiting_room = read_waiting_room(&mut f);
    patch.waiting_room = given(&f, "waiting_room").then_some(waiting_room);
    patch.description = given(&f, "description").then_some(description);
    patch.max_per_customer = given(&f, "max_per_customer").then_some(max);
    patch.sale_starts_at = given(&f, "sale_starts_at").then_some(starts);
    patch.sale_ends_at = given(&f, "sale_ends_at").then_some(ends);
    let any = [
        "name",
        "description",
        "price_cents",
        "max_per_customer",
        "sale_starts_at",
        "sale_ends_at",
        "hold_seconds",
        "waiting_room",
    ]
    .iter()
    .any(|n| f.present(n));
    f.check(any, "body", "must name at least one field to change");
    f.finish()?;
    Ok(patch)
}

/// Cursor keys of timestamp sorts: microseconds within years 1–9999, as PostgreSQL can
/// compute with (an absurd key must be a 422, not a database error).
const CURSOR_MICROS: std::ops::RangeInclusive<i64> =
    -62_135_596_800_000_000..=253_402_300_799_999_999;

/// `?cursor=` of a product listing: `<sort>~<key>~<id>`.
pub(super) fn parse_cursor(cursor: &str, sort: &str) -> Option<(i64, String)> {
    let mut parts = cursor.splitn(3, '~');
    let (s, key, id) = (parts.next()?, parts.next()?, parts.next()?);
    (s == sort && id.starts_with("prd_") && is_plausible_id(id)).then_some(())?;
    let key: i64 = key.parse().ok()?;
    let by_time = !sort.trim_start_matches('-').starts_with("price");
    (!by_time || CURSOR_MICROS.contains(&key)).then_some(())?;
    Some((key, id.to_owned()))
}

/// `?cursor=` of the drop calendar: `drops~<sale_starts_at µs>~<id>`.
pub(super) fn parse_drops_cursor(cursor: &str) -> Option<(DateTime<Utc>, String)> {
    let (at, id) = cursor.strip_prefix("drops~")?.split_once('~')?;
    (id.starts_with("prd_") && is_plausible_id(id)).then_some(())?;
    let micros: i64 = at.parse().ok()?;
    CURSOR_MICROS.contains(&micros).then_some(())?;
    Some((DateTime::from_timestamp_micros(micros)?, id.to_owned()))
}

/// The drop-calendar cursor that continues after `p`.
pub(super) fn drops_cursor_of(p: &Product) -> String {
    let at = p.sale_starts_at.unwrap_or(p.created_at).timestamp_micros();
    format!("drops~{at}~{}", p.id)
}

/// `"waiting_room": {"opens_seconds_before": 1–86400, "admit_per_second": 1–100000}`.
fn read_waiting_room(f: &mut Fields) -> Option<WaitingRoom> {
    f.object("waiting_room", Optional, |w| {
        let opens = w.int("opens_seconds_before", Required, 1..=86_400);
        let rate = w.int("admit_per_second", Required, 1..=100_000);
        Some(WaitingRoom {
            opens_seconds_before: opens? as i32,
            admit_per_second: rate? as i32,
        })
    })
}
