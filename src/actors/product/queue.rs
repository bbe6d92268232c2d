//! The drop's waiting room, kept by the product actor (in memory: a restart empties
//! it); see [`crate::domain::waiting_room`] for the queue itself.

use chrono::Utc;

use super::Loaded;
use crate::actors::Failure;
use crate::domain::ledger::Refusal;
use crate::domain::waiting_room::{self, Place};

/// A place in a waiting room, and the admission token once it is the buyer's turn.
#[derive(Debug, Clone)]
pub struct QueueAnswer {
    pub place: Place,
    pub token: Option<String>,
}

impl Loaded {
    pub(super) fn join_queue(
        &mut self,
        customer_id: &str,
        secret: &[u8],
    ) -> Result<QueueAnswer, Failure> {
        let (Some(room), Some(starts_at)) =
            (self.product.waiting_room, self.product.sale_starts_at)
        else {
            return Err(Failure::Refused(Refusal::NoWaitingRoom));
        };
        let place = self
            .queue
            .get_or_insert_with(Box::default)
            .join(&room, starts_at, customer_id, Utc::now())
            .map_err(|_| Failure::Refused(Refusal::QueueNotOpen))?;
        Ok(self.admit(place, secret))
    }

    pub(super) fn queue_place(&mut self, ticket: &str, secret: &[u8]) -> Option<QueueAnswer> {
        let (room, starts_at) = (self.product.waiting_room?, self.product.sale_starts_at?);
        let place = self
            .queue
            .as_mut()?
            .place(&room, starts_at, ticket, Utc::now())?;
        Some(self.admit(place, secret))
    }

    /// The place, with a token if its time has come.
    fn admit(&self, place: Place, secret: &[u8]) -> QueueAnswer {
        let now = Utc::now();
        let token = place.admit_at.filter(|at| *at <= now).map(|_| {
            let expires = now + chrono::Duration::seconds(waiting_room::TOKEN_TTL_SECS);
            waiting_room::sign(secret, &self.product.id, &place.customer_id, expires)
        });
        QueueAnswer { place, token }
    }
}
