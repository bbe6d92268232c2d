//! The store actor: one per store, owning its catalog of product actors.
//!
//! Product actors are made on first use and placed on the arbiters round robin; a
//! catalog of a million products costs nothing until a product is touched.

use foldhash::{HashMap, HashMapExt};
use std::sync::Arc;

use actix::prelude::*;

use super::mailbox::{Letter, Mail, Mailbox, Refused};
use super::product::{ProductActor, ProductMsg};
use super::{Failure, Shared};
use crate::telemetry::SPAN_STORE;

/// A message for one of the store's products.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ToProduct {
    pub product_id: String,
    pub msg: ProductMsg,
}

impl Letter for ToProduct {
    fn caller_gone(&self) -> bool {
        self.msg.caller_gone()
    }

    fn fail(self, failure: Failure) {
        self.msg.fail(failure)
    }
}

pub struct StoreActor {
    store_id: String,
    shared: Arc<Shared>,
    /// product id → its actor, for every product of this store touched so far.
    catalog: HashMap<String, Mailbox<ProductActor>>,
}

impl StoreActor {
    pub fn new(store_id: String, shared: Arc<Shared>) -> Self {
        StoreActor {
            store_id,
            shared,
            catalog: HashMap::new(),
        }
    }

    /// The product's actor, started (on the next arbiter) if it is not running.
    /// `warm`: started ahead of a drop, not by a request (counted apart: a request that
    /// has to start its product's actor is a cold read).
    fn product(&mut self, product_id: &str, warm: bool) -> Mailbox<ProductActor> {
        if let Some(addr) = self.catalog.get(product_id) {
            if addr.connected() {
                return addr.clone();
            }
        }
        let cause = if warm { "warm" } else { "request" };
        crate::metrics::PRODUCT_LOADS
            .with_label_values(&[cause])
            .inc();
        let actor = ProductActor::new(
            product_id.to_owned(),
            self.store_id.clone(),
            self.shared.clone(),
        );
        let addr = ProductActor::start_in_arbiter(self.shared.next_arbiter(), |_| actor);
        let mailbox = Mailbox::new(addr, self.shared.mailbox_capacity, "product");
        self.catalog.insert(product_id.to_owned(), mailbox.clone());
        mailbox
    }
}

/// How often the catalog drops the entries of product actors that stopped (passivated,
/// or an unknown id's), so that it holds only running ones.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl Actor for StoreActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(SWEEP_EVERY, |act, _| {
            act.catalog.retain(|_, mailbox| mailbox.connected());
            if act.catalog.capacity() > 2 * act.catalog.len() + 64 {
                act.catalog.shrink_to_fit();
            }
        });
    }
}

impl Handler<Mail<ToProduct>> for StoreActor {
    type Result = ();

    fn handle(&mut self, mail: Mail<ToProduct>, _: &mut Self::Context) {
        let Some((ToProduct { product_id, msg }, deadline)) = mail.open() else {
            return;
        };
        let mut msg = msg;
        // The hop through the store, in the checkout's trace.
        let span = msg.span().map(
            |parent| tracing::debug_span!(parent: parent, SPAN_STORE, product.id = %product_id),
        );
        let _entered = span.as_ref().map(|s| s.enter());
        if let Some(span) = &span {
            msg.set_span(span.clone());
        }
        // An id this store already found to name nothing: 404 from memory, no actor.
        if self.catalog.get(&product_id).is_none_or(|m| !m.connected())
            && self
                .shared
                .missing
                .contains_key(&super::product::missing_key(&self.store_id, &product_id))
        {
            return msg.fail(Failure::NotFound);
        }
        // Once more if the actor stopped between our check and the send (an unknown id's
        // actor stops itself after a while; a failed load stops it at once).
        for _ in 0..2 {
            let warm = matches!(msg, ProductMsg::Warm);
            match self.product(&product_id, warm).send(msg, deadline) {
                Ok(()) => return,
                Err(Refused::Full(m)) => return m.fail(Failure::Overloaded),
                Err(Refused::Closed(m)) => {
                    self.catalog.remove(&product_id);
                    msg = m;
                }
            }
        }
        msg.fail(Failure::Unavailable);
    }
}
