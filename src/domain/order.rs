//! An order as stored and shown, and the checkout request it comes from.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The consent a buyer gave at checkout; kept in the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    pub terms_version: String,
    pub marketing: bool,
}

/// A validated checkout body.
#[derive(Debug, Clone)]
pub struct CheckoutBody {
    pub product_id: String,
    pub quantity: i64,
    pub customer_id: String,
    pub consent: Consent,
}

impl CheckoutBody {
    /// SHA-256 over the fields that make a request: a retry must send the same ones.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [
            self.product_id.as_bytes(),
            self.quantity.to_string().as_bytes(),
            self.customer_id.as_bytes(),
            self.consent.terms_version.as_bytes(),
            if self.consent.marketing { b"1" } else { b"0" },
        ] {
            // Length-prefixed, so that no two different bodies hash alike.
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        h.finalize().into()
    }
}

/// An order row, also its API representation.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Order {
    pub id: String,
    pub store_id: String,
    pub product_id: String,
    pub customer_id: String,
    pub quantity: i32,
    pub unit_price_cents: i64,
    pub currency: String,
    pub total_cents: i64,
    /// `reserved` or `confirmed` at checkout; later `cancelled` or `expired`.
    pub status: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// Everything the order writer needs to make an order durable.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub order: Order,
    pub idempotency_key: String,
    pub request_hash: [u8; 32],
    pub api_key_id: String,
    pub client_addr: Option<String>,
    pub consent: Consent,
}
