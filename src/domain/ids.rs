//! Opaque identifiers and API key secrets.

use sha2::{Digest, Sha256};

/// A new opaque id: `prefix` + `_` + a UUIDv7 (time-ordered, so indexes stay compact).
pub fn new_id(prefix: &str) -> String {
    id_from_bits(prefix, new_id_bits())
}

/// The 128 bits of a new id, for whoever keeps many ids and wants them 16 bytes each
/// rather than a string; [`id_from_bits`] makes the id.
pub fn new_id_bits() -> u128 {
    uuid::Uuid::now_v7().as_u128()
}

/// The id `prefix` + `_` + `bits` (as [`new_id`] writes it).
pub fn id_from_bits(prefix: &str, bits: u128) -> String {
    // Written directly (once per order): `format!` costs about twice as much.
    let mut hex = [0u8; uuid::fmt::Simple::LENGTH];
    let hex = uuid::Uuid::from_u128(bits).simple().encode_lower(&mut hex);
    let mut id = String::with_capacity(prefix.len() + 1 + hex.len());
    id.push_str(prefix);
    id.push('_');
    id.push_str(hex);
    id
}

/// Which kind of API key a secret is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    /// `sk_…`: the store's back office.
    Admin,
    /// `pk_…`: the store's frontend.
    Storefront,
}

impl KeyRole {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRole::Admin => "admin",
            KeyRole::Storefront => "storefront",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(KeyRole::Admin),
            "storefront" => Some(KeyRole::Storefront),
            _ => None,
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            KeyRole::Admin => "sk",
            KeyRole::Storefront => "pk",
        }
    }
}

/// Whether `token` has the shape of a key [`new_secret`] makes (prefix and 40 lowercase
/// hex digits), so that anything else is refused without a database lookup.
pub fn is_key_shaped(token: &str) -> bool {
    let Some(hex) = token
        .strip_prefix("sk_")
        .or_else(|| token.strip_prefix("pk_"))
    else {
        return false;
    };
    hex.len() == 40
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A fresh secret: 160 random bits, hex, behind the role's prefix.
pub fn new_secret(role: KeyRole) -> String {
    random_secret(role.prefix())
}

/// A generated operator token, from the same generator as the store keys (160 random
/// bits: the contract asks ≥ 128 of every key; an id's UUIDv7 has only 74).
pub fn new_operator_token() -> String {
    random_secret("op")
}

/// `prefix` + `_` + 160 random bits in hex, from the thread's CSPRNG.
fn random_secret(prefix: &str) -> String {
    format!("{prefix}_{}", hex::encode(rand::random::<[u8; 20]>()))
}

/// What is stored for a secret: its SHA-256.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_its_prefix_and_its_bits_in_lowercase_hex() {
        let bits = 0x0192_3a4b_5c6d_7e8f_9a0b_1c2d_3e4f_5a6bu128;
        assert_eq!(
            id_from_bits("ord", bits),
            "ord_01923a4b5c6d7e8f9a0b1c2d3e4f5a6b"
        );
        assert_eq!(
            id_from_bits("prd", bits),
            format!("prd_{}", uuid::Uuid::from_u128(bits).simple())
        );
    }

    #[test]
    fn secrets_are_prefixed_random_and_hash_stably() {
        let a = new_secret(KeyRole::Admin);
        let b = new_secret(KeyRole::Admin);
        assert!(a.starts_with("sk_") && a.len() == 43, "{a}");
        assert_ne!(a, b);
        assert!(new_secret(KeyRole::Storefront).starts_with("pk_"));
        let op = new_operator_token();
        assert!(op.starts_with("op_") && op.len() == 43, "{op}");
        assert_ne!(op, new_operator_token());
        assert!(is_key_shaped(&a) && is_key_shaped(&new_secret(KeyRole::Storefront)));
        for bad in [
            "",
            "sk_",
            "xx_0123456789abcdef0123456789abcdef01234567",
            &a[..42],
            &a.to_uppercase(),
        ] {
            assert!(!is_key_shaped(bad), "{bad}");
        }
        assert_eq!(hash_secret(&a), hash_secret(&a));
        assert_ne!(hash_secret(&a), hash_secret(&b));
    }
}
