//! Request-rate limits of one store, held by its store actor and shared (read-mostly,
//! lock-free GCRA cells from `governor`) with the HTTP workers that enforce them.
//!
//! - the store as a whole, by plan (`free`, `pro`, `enterprise`; enterprise unlimited by
//!   default);
//! - each API key (`FLASHSALE_RATE_PER_KEY`, off by default);
//! - on checkout, each customer and each client address (free and pro plans).
//!
//! Each limit allows a burst of one second's worth.
//!
//! In a cluster each instance enforces its share of the store-wide limits (the plan's
//! rate and the per-key rate): the rate divided by the live instances, at least 1, so
//! that a store's requests spread over the instances get about its plan in all. The
//! per-customer and per-address checkout limits are not divided: a checkout is checked
//! by its product's owner alone, so one product's buyers always meet the whole limit in
//! one place (see docs/ARCHITECTURE.md, "What stays per instance").

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::Settings;

/// Why a request was refused: which limit, and when to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Requests per second the limit allows.
    pub limit: u32,
    /// When a request would be allowed again.
    pub retry_after: Duration,
}

pub struct StoreLimits {
    /// Among how many instances the store-wide limits were shared out.
    instances: usize,
    store: Option<(u32, DefaultDirectRateLimiter)>,
    per_key: Option<(u32, DefaultKeyedRateLimiter<String>)>,
    per_customer: Option<(u32, DefaultKeyedRateLimiter<String>)>,
    per_address: Option<(u32, DefaultKeyedRateLimiter<String>)>,
}

impl std::fmt::Debug for StoreLimits {
    /// The rates (per second, this instance's share), not the limiters' state.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = |l: &Option<(u32, _)>| l.as_ref().map(|(r, _)| *r);
        f.debug_struct("StoreLimits")
            .field("instances", &self.instances)
            .field("store", &self.store.as_ref().map(|(r, _)| *r))
            .field("per_key", &rate(&self.per_key))
            .field("per_customer", &rate(&self.per_customer))
            .field("per_address", &rate(&self.per_address))
            .finish()
    }
}

fn quota(per_second: u32) -> Option<(u32, Quota)> {
    let rate = NonZeroU32::new(per_second)?;
    Some((per_second, Quota::per_second(rate).allow_burst(rate)))
}

fn check_direct(limiter: &Option<(u32, DefaultDirectRateLimiter)>) -> Result<(), Limited> {
    let Some((limit, limiter)) = limiter else {
        return Ok(());
    };
    limiter.check().map_err(|not_until| Limited {
        limit: *limit,
        retry_after: not_until.wait_time_from(DefaultClock::default().now()),
    })
}

fn check_keyed(
    limiter: &Option<(u32, DefaultKeyedRateLimiter<String>)>,
    key: &str,
) -> Result<(), Limited> {
    let Some((limit, limiter)) = limiter else {
        return Ok(());
    };
    limiter
        .check_key(&key.to_owned())
        .map_err(|not_until| Limited {
            limit: *limit,
            retry_after: not_until.wait_time_from(DefaultClock::default().now()),
        })
}

/// One instance's share of `rate` among `instances`: rounded down, so that the shares
/// never add up to more than the rate, but at least 1; 0 (unlimited) stays 0.
pub fn share_of(rate: u32, instances: usize) -> u32 {
    if rate == 0 {
        return 0;
    }
    let instances = u32::try_from(instances.max(1)).unwrap_or(u32::MAX);
    (rate / instances).max(1)
}

impl StoreLimits {
    /// The limits of a store on `plan`, for one of `instances` live instances.
    pub fn for_plan(plan: &str, settings: &Settings, instances: usize) -> Self {
        let store_rate = match plan {
            "free" => settings.rate_free,
            "pro" => settings.rate_pro,
            _ => settings.rate_enterprise,
        };
        // Enterprise buys its way out of the per-buyer limits too, unless it has a rate.
        let buyer_limits = plan != "enterprise" || store_rate > 0;
        let keyed = |rate: u32| quota(rate).map(|(r, q)| (r, RateLimiter::keyed(q)));
        let share = |rate: u32| share_of(rate, instances);
        StoreLimits {
            instances,
            store: quota(share(store_rate)).map(|(r, q)| (r, RateLimiter::direct(q))),
            per_key: if buyer_limits {
                keyed(share(settings.rate_per_key))
            } else {
                None
            },
            per_customer: if buyer_limits {
                keyed(settings.checkout_rate_per_customer)
            } else {
                None
            },
            per_address: if buyer_limits {
                keyed(settings.checkout_rate_per_address)
            } else {
                None
            },
        }
    }

    /// Among how many instances these limits were shared out.
    pub fn instances(&self) -> usize {
        self.instances
    }

    /// Any request with this store's key.
    pub fn check_request(&self, key_id: &str) -> Result<(), Limited> {
        check_direct(&self.store)?;
        check_keyed(&self.per_key, key_id)
    }

    /// A checkout, on top of [`StoreLimits::check_request`].
    pub fn check_checkout(
        &self,
        customer_id: &str,
        client_addr: Option<&str>,
    ) -> Result<(), Limited> {
        check_keyed(&self.per_customer, customer_id)?;
        match client_addr {
            Some(addr) => check_keyed(&self.per_address, addr),
            None => Ok(()),
        }
    }

    /// Whether checkouts are limited per client address (if not, the address need not be
    /// known to check them).
    pub fn limits_addresses(&self) -> bool {
        self.per_address.is_some()
    }

    /// Forgets buyers and keys whose limits are back to full (bounds memory).
    pub fn forget_idle(&self) {
        for (_, limiter) in [&self.per_key, &self.per_customer, &self.per_address]
            .into_iter()
            .flatten()
        {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::share_of;

    #[test]
    fn shares_never_exceed_the_rate_and_never_reach_zero() {
        assert_eq!(
            share_of(20, 1),
            20,
            "a lone instance enforces the whole plan"
        );
        assert_eq!(share_of(20, 2), 10);
        assert_eq!(share_of(20, 3), 6);
        assert_eq!(share_of(2, 5), 1);
        assert_eq!(share_of(0, 3), 0, "unlimited stays unlimited");
        assert_eq!(share_of(7, 0), 7, "no view yet: alone");
    }
}
