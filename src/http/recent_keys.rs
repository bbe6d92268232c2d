//! The store keys each HTTP worker admitted a moment ago, in front of the key cache.
//!
//! A keep-alive client sends the same key on every request. Found here, the key costs
//! neither its SHA-256 nor a lookup in the shared key cache (whose reads are recorded
//! for its eviction policy): about 0.3 µs of a 10-µs refusal. Only grants found in the
//! key cache are remembered, for [`RECENT_KEY_TTL`] from then, so a key's grant is at
//! most that much older than the cache would serve (`KEY_CACHE_TTL`, 60 s). A worker
//! keeps [`RECENT_KEYS`] keys, whatever clients send; a miss falls back to the cache.
//! Tokens are compared in constant time.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

use crate::db::stores::KeyGrant;

/// How long a worker trusts a grant without asking the key cache again.
pub const RECENT_KEY_TTL: Duration = Duration::from_secs(1);
/// Keys remembered per HTTP worker.
pub const RECENT_KEYS: usize = 8;
/// The length of every key given out: `sk_` or `pk_`, then 40 hex digits.
const KEY_LEN: usize = 43;

struct Recent {
    token: [u8; KEY_LEN],
    grant: Arc<KeyGrant>,
    until: Instant,
}

#[derive(Default)]
struct Keys {
    slots: [Option<Recent>; RECENT_KEYS],
    /// The slot the next new key takes (round robin).
    next: usize,
}

thread_local! {
    static KEYS: RefCell<Keys> = RefCell::default();
}

/// The grant of `token` if this worker admitted it less than [`RECENT_KEY_TTL`] ago.
pub fn grant(token: &str, now: Instant) -> Option<Arc<KeyGrant>> {
    let token: &[u8; KEY_LEN] = token.as_bytes().try_into().ok()?;
    KEYS.with_borrow(|keys| {
        keys.slots
            .iter()
            .flatten()
            .find(|k| bool::from(k.token.ct_eq(token)) && now < k.until)
            .map(|k| k.grant.clone())
    })
}

/// Remembers that `token` is `grant`, as the key cache said at `now`.
pub fn remember(token: &str, grant: &Arc<KeyGrant>, now: Instant) {
    let Ok(token) = <[u8; KEY_LEN]>::try_from(token.as_bytes()) else {
        return;
    };
    KEYS.with_borrow_mut(|keys| {
        let recent = Recent {
            token,
            grant: grant.clone(),
            until: now + RECENT_KEY_TTL,
        };
        // The same key again (its entry lapsed): renewed in place, not duplicated.
        if let Some(slot) = keys.slots.iter_mut().find(|s| {
            s.as_ref()
                .is_some_and(|k| bool::from(k.token.ct_eq(&token)))
        }) {
            *slot = Some(recent);
            return;
        }
        let at = keys.next;
        keys.slots[at] = Some(recent);
        keys.next = (at + 1) % RECENT_KEYS;
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::KeyRole;

    fn key(n: usize) -> String {
        format!("pk_{n:040x}")
    }

    fn grant_of(store: &str) -> Arc<KeyGrant> {
        Arc::new(KeyGrant {
            key_id: format!("key_{store}"),
            store_id: store.to_owned(),
            role: KeyRole::Storefront,
            plan: "free".to_owned(),
        })
    }

    #[test]
    fn a_key_is_known_for_its_ttl_only_and_only_as_itself() {
        let now = Instant::now();
        remember(&key(1), &grant_of("st_a"), now);
        let found = grant(&key(1), now + RECENT_KEY_TTL / 2).expect("known");
        assert_eq!(found.store_id, "st_a");
        assert!(grant(&key(2), now).is_none(), "another key is not this one");
        assert!(
            grant(&key(1), now + RECENT_KEY_TTL).is_none(),
            "lapsed after its TTL"
        );
        assert!(grant("pk_short", now).is_none());
    }

    #[test]
    fn a_worker_keeps_a_bounded_number_of_keys() {
        let now = Instant::now();
        for n in 100..100 + RECENT_KEYS + 3 {
            remember(&key(n), &grant_of(&format!("st_{n}")), now);
        }
        let kept = (100..100 + RECENT_KEYS + 3)
            .filter(|&n| grant(&key(n), now).is_some())
            .count();
        assert_eq!(kept, RECENT_KEYS, "the oldest were replaced");
        assert!(grant(&key(100), now).is_none());
        let last = 100 + RECENT_KEYS + 2;
        assert_eq!(
            grant(&key(last), now).expect("newest kept").store_id,
            format!("st_{last}")
        );
        // Renewing a key does not take a second slot.
        remember(&key(last), &grant_of("st_renewed"), now);
        let slots = KEYS.with_borrow(|k| k.slots.iter().flatten().count());
        assert_eq!(slots, RECENT_KEYS);
        assert_eq!(grant(&key(last), now).unwrap().store_id, "st_renewed");
    }
}
