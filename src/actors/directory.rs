//! The directory's routes to actors: a store's actor (started on first use), a
//! product's running actor straight from its store's catalog, and what a product
//! publishes (its page and sold-out gate), read without a mailbox.

use std::sync::Arc;

use actix::prelude::*;

use super::mailbox::{Deadline, Mailbox, Refused};
use super::product::{self, ProductMsg};
use super::store::{StoreActor, ToProduct};
use super::{Actors, Catalog, Failure, StoreEntry};

impl Actors {
    /// What `store_id`'s product publishes, if the store has it in memory, looked at
    /// under the catalog's read lock (nothing copied but what `look` returns).
    fn with_published<T>(
        &self,
        store_id: &str,
        product_id: &str,
        look: impl FnOnce(&product::Published) -> Option<T>,
    ) -> Option<T> {
        let stores = self.stores.read().expect("store directory");
        let catalog = stores.get(store_id)?.catalog.read().expect("catalog");
        look(&catalog.get(product_id)?.published)
    }

    /// The current published page of the store's product, if it has one in memory (a
    /// read of it marks the product in use).
    pub fn snapshot(&self, store_id: &str, product_id: &str) -> Option<product::Snapshot> {
        self.with_published(store_id, product_id, product::Published::current_snapshot)
    }

    /// Whether the store's product's sold-out gate refuses a checkout with `key` now.
    pub fn gate_refuses(&self, store_id: &str, product_id: &str, key: &str) -> bool {
        self.with_published(store_id, product_id, |p| Some(p.gate().refuses(key)))
            .unwrap_or(false)
    }

    fn store(&self, store_id: &str) -> Mailbox<StoreActor> {
        if let Some(entry) = self.stores.read().expect("store directory").get(store_id) {
            if entry.mailbox.connected() {
                return entry.mailbox.clone();
            }
        }
        let mut stores = self.stores.write().expect("store directory");
        match stores.get(store_id) {
            Some(entry) if entry.mailbox.connected() => entry.mailbox.clone(),
            _ => {
                let catalog = Arc::new(Catalog::default());
                let actor =
                    StoreActor::new(store_id.to_owned(), self.shared.clone(), catalog.clone());
                let addr = StoreActor::start_in_arbiter(self.shared.next_arbiter(), |_| actor);
                let mailbox = Mailbox::new(addr, self.shared.mailbox_capacity, "store");
                let entry = StoreEntry {
                    mailbox: mailbox.clone(),
                    catalog,
                };
                stores.insert(store_id.to_owned(), entry);
                mailbox
            }
        }
    }

    /// Sends `msg` to a product, with the deadline of a request arriving now: straight
    /// to its mailbox if its store has its actor running (the store's hop would only
    /// forward it), else through its store's actor, which looks the id up and starts
    /// the actor. A full mailbox answers the message's reply channel with
    /// [`Failure::Overloaded`] at once.
    pub fn to_product(&self, store_id: &str, product_id: &str, msg: ProductMsg) {
        let deadline = Deadline::from_now();
        let Some(msg) = self.to_running_product(store_id, product_id, msg, deadline) else {
            return;
        };
        let envelope = ToProduct {
            product_id: product_id.to_owned(),
            msg,
        };
        match self.store(store_id).send(envelope, deadline) {
            Ok(()) => {}
            Err(Refused::Full(envelope)) => envelope.msg.fail(Failure::Overloaded),
            Err(Refused::Closed(envelope)) => envelope.msg.fail(Failure::Unavailable),
        }
    }

    /// Sends `msg` to the product's running actor as its store published it; the
    /// message comes back if there is none (not started, or stopped since).
    fn to_running_product(
        &self,
        store_id: &str,
        product_id: &str,
        msg: ProductMsg,
        deadline: Deadline,
    ) -> Option<ProductMsg> {
        let stores = self.stores.read().expect("store directory");
        let Some(entry) = stores.get(store_id) else {
            return Some(msg);
        };
        let catalog = entry.catalog.read().expect("catalog");
        let Some(product) = catalog.get(product_id).and_then(|e| e.actor.as_ref()) else {
            return Some(msg);
        };
        match product.send(msg, deadline) {
            Ok(()) => None,
            Err(Refused::Full(msg)) => {
                msg.fail(Failure::Overloaded);
                None
            }
            Err(Refused::Closed(msg)) => Some(msg),
        }
    }
}
