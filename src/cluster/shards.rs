//! Products to shards, shards to instances: pure functions, the same in every process
//! and every version (SHA-256, not the process-seeded hashers of the caches).

use sha2::{Digest, Sha256};

/// Shards a product id maps to (fixed: `shard_leases` has one row for each, made by
/// migration V14; changing it would move every product).
pub const SHARDS: usize = 256;

/// The shard of a product: a stable hash of its id.
pub fn shard_of(product_id: &str) -> usize {
    thread_local! {
        /// The last product this thread placed, and its shard: in a drop, request after
        /// request names the same product, and the hash is most of a placement's cost.
        static LAST: std::cell::RefCell<Option<(String, usize)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((id, shard)) if id == product_id => *shard,
        _ => {
            let shard = hashed_shard(product_id);
            *last = Some((product_id.to_owned(), shard));
            shard
        }
    })
}

fn hashed_shard(product_id: &str) -> usize {
    let digest = Sha256::digest(product_id.as_bytes());
    usize::from(u16::from_be_bytes([digest[0], digest[1]])) % SHARDS
}

/// Rendezvous (highest random weight) score of an instance for a shard: each shard goes
/// to the live instance with the highest score, so when one comes or goes only the
/// shards it wins or held move.
fn score(instance_url: &str, shard: usize) -> u64 {
    let mut h = Sha256::new();
    h.update(instance_url.as_bytes());
    h.update([0x1f]);
    h.update((shard as u32).to_be_bytes());
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// The index in `urls` of the instance a shard belongs with, if any is live.
pub fn rendezvous(urls: &[&str], shard: usize) -> Option<usize> {
    (0..urls.len()).max_by_key(|&i| (score(urls[i], shard), urls[i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard_of("prd_1"), shard_of("prd_1"));
        let mut seen = [0usize; SHARDS];
        for i in 0..25_600 {
            seen[shard_of(&format!("prd_{i}"))] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50 && n < 200), "{seen:?}");
    }

    #[test]
    fn the_remembered_shard_is_the_hashed_one() {
        for id in ["prd_a", "prd_a", "prd_b", "prd_a", "", "prd_b"] {
            assert_eq!(shard_of(id), hashed_shard(id), "{id}");
        }
    }

    #[test]
    fn rendezvous_moves_only_the_shards_of_who_came_or_went() {
        let three = ["http://a", "http://b", "http://c"];
        let two = ["http://a", "http://b"];
        let mut owned = [0usize; 3];
        for s in 0..SHARDS {
            let with_c = rendezvous(&three, s).unwrap();
            owned[with_c] += 1;
            let without = rendezvous(&two, s).unwrap();
            if with_c != 2 {
                assert_eq!(three[with_c], two[without], "shard {s} moved needlessly");
            }
        }
        assert!(owned.iter().all(|&n| n > 50), "{owned:?}");
        assert_eq!(rendezvous(&[], 3), None);
    }
}
