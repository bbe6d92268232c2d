//! The virtual waiting room of a drop: who gets in when, and the tokens that prove it.
//!
//! Arrivals during the pre-queue window (`opens_seconds_before` before the sale starts)
//! are shuffled once, when the sale starts, so that arriving first by a millisecond buys
//! nothing; then they are admitted at `admit_per_second`, the i-th at
//! `starts_at + i / rate`. Arrivals after the start queue behind, in arrival order.
//! Admitted buyers get a token (HMAC-SHA256 over product, customer and expiry) that
//! checkout requires.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use rand::seq::SliceRandom;
use serde::Serialize;
use sha2::Sha256;

/// How long an admission token is good for.
pub const TOKEN_TTL_SECS: i64 = 120;

/// A drop's waiting-room settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct WaitingRoom {
    /// How long before the sale starts the queue opens.
    pub opens_seconds_before: i32,
    /// Buyers admitted per second once the sale starts.
    pub admit_per_second: i32,
}

/// Why a buyer cannot join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRefusal {
    /// The product has no waiting room.
    NoWaitingRoom,
    /// The pre-queue window has not opened yet.
    NotOpen,
}

/// Where a ticket stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub ticket: String,
    pub customer_id: String,
    /// `None` until the queue is ordered (at the start).
    pub admit_at: Option<DateTime<Utc>>,
}

/// One drop's queue.
#[derive(Debug, Default)]
pub struct Queue {
    /// In arrival order until shuffled, then in admission order.
    places: Vec<Place>,
    by_ticket: HashMap<String, usize>,
    by_customer: HashMap<String, usize>,
    ordered: bool,
}

impl Queue {
    /// Nobody has joined.
    pub fn is_empty(&self) -> bool {
        self.places.is_empty()
    }

    /// Orders the queue once the sale has started (idempotent).
    fn order(&mut self, room: &WaitingRoom, starts_at: DateTime<Utc>, now: DateTime<Utc>) {
        if self.ordered || now < starts_at {
            return;
        }
        self.places.shuffle(&mut rand::rng());
        for (i, place) in self.places.iter_mut().enumerate() {
            place.admit_at = Some(slot(room, starts_at, i));
        }
        self.reindex();
        self.ordered = true;
    }

    fn reindex(&mut self) {
        self.by_ticket = self
            .places
            .iter()
            .enumerate()
            .map(|(i, p)| (p.ticket.clone(), i))
            .collect();
        self.by_customer = self
            .places
            .iter()
            .enumerate()
            .map(|(i, p)| (p.customer_id.clone(), i))
            .collect();
    }

    /// Joins (or finds again) `customer_id`'s place.
    pub fn join(
        &mut self,
        room: &WaitingRoom,
        starts_at: DateTime<Utc>,
        customer_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Place, QueueRefusal> {
        if now < starts_at - Duration::seconds(room.opens_seconds_before.into()) {
            return Err(QueueRefusal::NotOpen);
        }
        self.order(room, starts_at, now);
        if let Some(&i) = self.by_customer.get(customer_id) {
            return Ok(self.places[i].clone());
        }
        let i = self.places.len();
        let admit_at = self.ordered.then(|| slot(room, starts_at, i).max(now));
        let place = Place {
            ticket: crate::domain::ids::new_id("tkt"),
            customer_id: customer_id.to_owned(),
            admit_at,
        };
        self.by_ticket.insert(place.ticket.clone(), i);
        self.by_customer.insert(place.customer_id.clone(), i);
        self.places.push(place.clone());
        Ok(place)
    }

    /// Where `ticket` stands now.
    pub fn place(
        &mut self,
        room: &WaitingRoom,
        starts_at: DateTime<Utc>,
        ticket: &str,
        now: DateTime<Utc>,
    ) -> Option<Place> {
        self.order(room, starts_at, now);
        self.by_ticket.get(ticket).map(|&i| self.places[i].clone())
    }
}

/// When the i-th buyer is let in.
fn slot(room: &WaitingRoom, starts_at: DateTime<Utc>, i: usize) -> DateTime<Utc> {
    let micros = (i as i64) * 1_000_000 / i64::from(room.admit_per_second.max(1));
    starts_at + Duration::microseconds(micros)
}

fn mac(secret: &[u8], product_id: &str, customer_id: &str, expires: i64) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(format!("{product_id}\n{customer_id}\n{expires}").as_bytes());
    mac
}

/// A token admitting `customer_id` to buy `product_id` until `expires`.
pub fn sign(secret: &[u8], product_id: &str, customer_id: &str, expires: DateTime<Utc>) -> String {
    let expires = expires.timestamp();
    let tag = mac(secret, product_id, customer_id, expires)
        .finalize()
        .into_bytes();
    format!("{expires}.{}", hex::encode(tag))
}

/// Whether `token` admits `customer_id` to `product_id` at `now`.
pub fn verify(
    secret: &[u8],
    token: &str,
    product_id: &str,
    customer_id: &str,
    now: DateTime<Utc>,
) -> bool {
    let Some((expires, tag)) = token.split_once('.') else {
        return false;
    };
    let (Ok(expires), Ok(tag)) = (expires.parse::<i64>(), hex::decode(tag)) else {
        return false;
    };
    expires >= now.timestamp()
        && mac(secret, product_id, customer_id, expires)
            .verify_slice(&tag)
            .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOM: WaitingRoom = WaitingRoom {
        opens_seconds_before: 60,
        admit_per_second: 4,
    };

    #[test]
    fn early_arrivals_are_shuffled_then_admitted_at_the_rate() {
        let start = Utc::now();
        let mut q = Queue::default();
        assert_eq!(
            q.join(&ROOM, start, "early", start - Duration::seconds(61)),
            Err(QueueRefusal::NotOpen)
        );
        let tickets: Vec<String> = (0..40)
            .map(|i| {
                q.join(
                    &ROOM,
                    start,
                    &format!("c{i}"),
                    start - Duration::seconds(30),
                )
                .unwrap()
                .ticket
            })
            .collect();
        assert!(q
            .place(&ROOM, start, &tickets[0], start - Duration::seconds(1))
            .unwrap()
            .admit_at
            .is_none());
        let mut slots: Vec<(DateTime<Utc>, String)> = tickets
            .iter()
            .map(|t| {
                let p = q.place(&ROOM, start, t, start).unwrap();
                (p.admit_at.unwrap(), p.customer_id)
            })
            .collect();
        slots.sort();
        for (i, (at, _)) in slots.iter().enumerate() {
            assert_eq!(*at, start + Duration::milliseconds(250 * i as i64));
        }
        let order: Vec<&str> = slots.iter().map(|(_, c)| c.as_str()).collect();
        let arrival: Vec<String> = (0..40).map(|i| format!("c{i}")).collect();
        assert_ne!(
            order,
            arrival.iter().map(String::as_str).collect::<Vec<_>>(),
            "shuffled"
        );
        // A late arrival queues behind everyone; joining twice keeps one place.
        let late = q
            .join(&ROOM, start, "late", start + Duration::seconds(1))
            .unwrap();
        assert_eq!(late.admit_at, Some(start + Duration::seconds(10)));
        assert_eq!(
            q.join(&ROOM, start, "late", start + Duration::seconds(2))
                .unwrap(),
            late
        );
    }

    #[test]
    fn tokens_bind_product_customer_and_time() {
        let now = Utc::now();
        let token = sign(b"secret", "prd_1", "alice", now + Duration::seconds(10));
        assert!(verify(b"secret", &token, "prd_1", "alice", now));
        assert!(!verify(b"secret", &token, "prd_1", "bob", now));
        assert!(!verify(b"secret", &token, "prd_2", "alice", now));
        assert!(!verify(b"other", &token, "prd_1", "alice", now));
        assert!(!verify(
            b"secret",
            &token,
            "prd_1",
            "alice",
            now + Duration::seconds(11)
        ));
        assert!(!verify(
            b"secret",
            &token.replace('.', "x"),
            "prd_1",
            "alice",
            now
        ));
    }
}
