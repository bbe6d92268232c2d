//! The product actor's decision logic: sale window, stock and per-customer limits.
//!
//! Kept free of actors and I/O so that property tests can drive it through any
//! interleaving. The invariant, checked by [`Ledger::check_invariant`]:
//! `available + Σ held-per-customer == total` and `available >= 0`, which is exactly
//! "confirmed + reserved never exceed the stock put in".
//!
//! Per-customer counts are kept compactly: 16 bytes a customer (a 64-bit keyed hash of
//! the id and the units held), not the id itself. The hash is SipHash-1-3 under a key
//! drawn at random when the process starts (the standard library's `RandomState`), so
//! nobody can craft two ids that share a count. Two ids that share one by chance
//! (about n²/2⁶⁵ for n customers of one product: one in 30 million for a million) make
//! one of them count the other's units: a refusal too many, never a unit oversold.

use super::spread::{tag64, Spread};

use chrono::{DateTime, Utc};

/// What the ledger keeps of a customer id: its keyed 64-bit hash.
fn customer_tag(customer: &str) -> u64 {
    tag64(customer)
}

/// Why a checkout (or a confirm, cancel) is refused. Each maps to one stable error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    SaleNotStarted,
    SaleEnded,
    /// Nothing left.
    SoldOut,
    /// Less left than asked.
    InsufficientStock {
        available: i64,
    },
    /// Over `max_per_customer`, counting reserved and confirmed orders.
    CustomerLimitExceeded {
        limit: i64,
        held: i64,
    },
    /// A payment hold lapsed before it was confirmed (or cancelled).
    HoldExpired,
    /// The order was cancelled; it cannot be confirmed.
    OrderCancelled,
    /// The drop admits buyers through its waiting room: no valid token, no checkout.
    WaitingRoomTokenRequired,
    /// The product has no waiting room to join.
    NoWaitingRoom,
    /// The waiting room's pre-queue window has not opened yet.
    QueueNotOpen,
}

/// Stock accounting of one product.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// Everything ever put in.
    total: i64,
    /// What is left to sell.
    available: i64,
    /// Units each customer holds in reserved and confirmed orders, by [`customer_tag`]
    /// (the tags are uniform already, so the map's own hash need not resist attacks),
    /// in a map that grows a part at a time: a product's customers can be millions.
    held: Spread<u64, i64>,
}

impl Ledger {
    /// A ledger for `total` units of which `held` (customer id, units) are in live orders.
    pub fn new<'a>(total: i64, held: impl IntoIterator<Item = (&'a str, i64)>) -> Self {
        let mut tags: Spread<u64, i64> = Spread::default();
        for (customer, units) in held {
            if units > 0 {
                *tags.entry(customer_tag(customer)).or_default() += units;
            }
        }
        tags.shrink_to_fit();
        let held = tags;
        let available = total - held.values().sum::<i64>();
        Ledger {
            total,
            available,
            held,
        }
    }

    /// A ledger rebuilt from the database: `available` as stored, `held` from live orders.
    /// Should the two disagree, the smaller availability wins: never sell what may be gone.
    pub fn from_db<'a>(
        total: i64,
        available: i64,
        held: impl IntoIterator<Item = (&'a str, i64)>,
    ) -> Self {
        let mut ledger = Ledger::new(total, held);
        if ledger.available != available {
            tracing::error!(
                stock.total = total,
                stock.available = available,
                stock.held = total - ledger.available,
                "stored stock disagrees with live orders"
            );
            ledger.available = ledger.available.min(available).max(0);
        }
        ledger
    }

    pub fn total(&self) -> i64 {
        self.total
    }

    pub fn available(&self) -> i64 {
        self.available
    }

    /// Customers holding units.
    pub fn customers(&self) -> usize {
        self.held.len()
    }

    pub fn held_by(&self, customer: &str) -> i64 {
        self.held.get(customer_tag(customer)).copied().unwrap_or(0)
    }

    /// Takes `quantity` units for `customer` if the window, stock and limit allow.
    pub fn take(
        &mut self,
        customer: &str,
        quantity: i64,
        max_per_customer: Option<i64>,
        window: &SaleWindow,
        now: DateTime<Utc>,
    ) -> Result<(), Refusal> {
        window.check(now)?;
        if self.available == 0 {
            return Err(Refusal::SoldOut);
        }
        if quantity > self.available {
            return Err(Refusal::InsufficientStock {
                available: self.available,
            });
        }
        let held = self.held_by(customer);
        if let Some(limit) = max_per_customer {
            if held + quantity > limit {
                return Err(Refusal::CustomerLimitExceeded { limit, held });
            }
        }
        self.available -= quantity;
        *self.held.entry(customer_tag(customer)).or_default() += quantity;
        Ok(())
    }

    /// Returns units taken by [`Ledger::take`] (a failed write, a cancellation).
    pub fn give_back(&mut self, customer: &str, quantity: i64) {
        let tag = customer_tag(customer);
        let Some(held) = self.held.get_mut(tag) else {
            return;
        };
        let back = quantity.min(*held);
        *held -= back;
        if *held == 0 {
            self.held.remove(tag);
        }
        self.available += back;
    }

    /// Puts `quantity` more units in.
    pub fn restock(&mut self, quantity: i64) {
        self.total += quantity;
        self.available += quantity;
    }

    /// `Err` describes the broken invariant.
    pub fn check_invariant(&self) -> Result<(), String> {
        let held: i64 = self.held.values().sum();
        if self.available < 0
            || self.available + held != self.total
            || self.held.values().any(|&h| h <= 0)
        {
            return Err(format!(
                "total {} available {} held {held}",
                self.total, self.available
            ));
        }
        Ok(())
    }
}

/// When a product is on sale: `[starts_at, ends_at)`, either end open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaleWindow {
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
}

impl SaleWindow {
    pub fn check(&self, now: DateTime<Utc>) -> Result<(), Refusal> {
        if self.starts_at.is_some_and(|s| now < s) {
            return Err(Refusal::SaleNotStarted);
        }
        if self.ends_at.is_some_and(|e| now >= e) {
            return Err(Refusal::SaleEnded);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Take { customer: u8, quantity: i64 },
        GiveBack { taken_index: usize },
        Restock(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..6, 1i64..=7).prop_map(|(customer, quantity)| Op::Take { customer, quantity }),
            2 => any::<usize>().prop_map(|taken_index| Op::GiveBack { taken_index }),
            1 => (1i64..=20).prop_map(Op::Restock),
        ]
    }

    proptest! {
        /// Any interleaving of takes, give-backs and restocks keeps the invariant, never
        /// sells more than was put in, and respects the per-customer limit.
        #[test]
        fn invariant_holds_under_any_interleaving(
            initial in 0i64..50,
            limit in proptest::option::of(1i64..10),
            ops in proptest::collection::vec(op(), 0..200),
        ) {
            let mut ledger = Ledger::new(initial, []);
            let window = SaleWindow::default();
            let now = Utc::now();
            let mut taken: Vec<(String, i64)> = Vec::new();
            let mut put_in = initial;
            for op in ops {
                match op {
                    Op::Take { customer, quantity } => {
                        let customer = format!("c{customer}");
                        let before = ledger.available();
                        match ledger.take(&customer, quantity, limit, &window, now) {
                            Ok(()) => {
                                prop_assert!(quantity <= before);
                                taken.push((customer, quantity));
                            }
                            Err(Refusal::SoldOut) => prop_assert_eq!(before, 0),
                            Err(Refusal::InsufficientStock { available }) => {
                                prop_assert!(quantity > available && available == before)
                            }
                            Err(Refusal::CustomerLimitExceeded { limit: l, held }) => {
                                prop_assert!(held + quantity > l)
                            }
                            Err(other) => prop_assert!(false, "unexpected {other:?}"),
                        }
                    }
                    Op::GiveBack { taken_index } if !taken.is_empty() => {
                        let (customer, quantity) = taken.swap_remove(taken_index % taken.len());
                        ledger.give_back(&customer, quantity);
                    }
                    Op::GiveBack { .. } => {}
                    Op::Restock(quantity) => {
                        put_in += quantity;
                        ledger.restock(quantity);
                    }
                }
                prop_assert!(ledger.check_invariant().is_ok(), "{:?}", ledger.check_invariant());
                let sold: i64 = taken.iter().map(|(_, q)| q).sum();
                prop_assert_eq!(sold + ledger.available(), put_in);
                if let Some(l) = limit {
                    for c in 0..6 {
                        let held = ledger.held_by(&format!("c{c}"));
                        prop_assert!(held <= l, "customer c{} holds {} over {}", c, held, l);
                    }
                }
            }
        }
    }

    #[test]
    fn window_refuses_before_start_and_from_end() {
        let now = Utc::now();
        let w = SaleWindow {
            starts_at: Some(now),
            ends_at: Some(now + chrono::Duration::seconds(10)),
        };
        assert_eq!(
            w.check(now - chrono::Duration::seconds(1)),
            Err(Refusal::SaleNotStarted)
        );
        assert_eq!(w.check(now), Ok(()));
        assert_eq!(
            w.check(now + chrono::Duration::seconds(10)),
            Err(Refusal::SaleEnded)
        );
    }

    /// Rebuilt from stored orders (a customer's rows summed), the compact counts still
    /// hold each customer to the limit, apart from every other.
    #[test]
    fn counts_rebuilt_from_stored_orders_keep_the_limit() {
        let stored = [("ann", 1), ("bob", 1), ("ann", 1)];
        let mut l = Ledger::from_db(10, 7, stored);
        let w = SaleWindow::default();
        assert_eq!(l.held_by("ann"), 2);
        assert_eq!(
            l.take("ann", 1, Some(2), &w, Utc::now()),
            Err(Refusal::CustomerLimitExceeded { limit: 2, held: 2 })
        );
        assert_eq!(l.take("bob", 1, Some(2), &w, Utc::now()), Ok(()));
        assert_eq!(l.take("carl", 2, Some(2), &w, Utc::now()), Ok(()));
        l.give_back("ann", 2);
        assert_eq!(l.held_by("ann"), 0);
        assert_eq!((l.available(), l.held_by("bob")), (6, 2));
        assert!(l.check_invariant().is_ok());
    }

    #[test]
    fn sold_out_before_insufficient() {
        let mut l = Ledger::new(2, []);
        let w = SaleWindow::default();
        assert_eq!(
            l.take("a", 3, None, &w, Utc::now()),
            Err(Refusal::InsufficientStock { available: 2 })
        );
        assert_eq!(l.take("a", 2, None, &w, Utc::now()), Ok(()));
        assert_eq!(l.take("b", 1, None, &w, Utc::now()), Err(Refusal::SoldOut));
    }
}
