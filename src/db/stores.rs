//! Stores and API keys.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;

use crate::domain::ids::{hash_secret, new_id, new_secret, KeyRole};

/// A store, as the API shows it (without keys).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Store {
    pub id: String,
    pub name: String,
    pub plan: String,
    pub created_at: DateTime<Utc>,
}

/// The secrets of a new store, shown once.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StoreKeys {
    pub admin: String,
    pub storefront: String,
}

/// What an API key grants.
#[derive(Debug, Clone)]
pub struct KeyGrant {
    pub key_id: String,
    pub store_id: String,
    pub role: KeyRole,
    /// The store's plan (its rate tier).
    pub plan: String,
}

fn store_from_row(row: &tokio_postgres::Row) -> Store {
    Store {
        id: row.get("id"),
        name: row.get("name"),
        plan: row.get("plan"),
        created_at: row.get("created_at"),
    }
}

/// Inserts a store with one admin and one storefront key; returns the keys in clear.
pub async fn insert_store(
    client: &mut tokio_postgres::Client,
    name: &str,
    plan: &str,
) -> Result<(Store, StoreKeys), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let row = tx
        .query_one(
            "INSERT INTO stores (id, name, plan) VALUES ($1, $2, $3) RETURNING id, name, plan, created_at",
            &[&new_id("st"), &name, &plan],
        )
        .await?;
    let store = store_from_row(&row);
    let mut secrets = Vec::new();
    for role in [KeyRole::Admin, KeyRole::Storefront] {
        let secret = new_secret(role);
        tx.execute(
            "INSERT INTO api_keys (id, key_hash, store_id, role) VALUES ($1, $2, $3, $4)",
            &[
                &new_id("key"),
                &hash_secret(&secret).as_slice(),
                &store.id,
                &role.as_str(),
            ],
        )
        .await?;
        secrets.push(secret);
    }
    tx.commit().await?;
    let storefront = secrets.pop().unwrap_or_default();
    let admin = secrets.pop().unwrap_or_default();
    Ok((store, StoreKeys { admin, storefront }))
}

pub async fn find_store(
    client: &impl GenericClient,
    id: &str,
) -> Result<Option<Store>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT id, name, plan, created_at FROM stores WHERE id = $1",
            &[&id],
        )
        .await?;
    Ok(row.as_ref().map(store_from_row))
}

pub async fn count_stores(client: &impl GenericClient) -> Result<i64, tokio_postgres::Error> {
    Ok(client
        .query_one("SELECT count(*) FROM stores", &[])
        .await?
        .get(0))
}

/// The grant of the live key whose SHA-256 is `hash`.
pub async fn find_key(
    client: &impl GenericClient,
    hash: &[u8; 32],
) -> Result<Option<KeyGrant>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT k.id, k.store_id, k.role, s.plan FROM api_keys k JOIN stores s ON s.id = k.store_id \
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
            &[&hash.as_slice()],
        )
        .await?;
    Ok(row.and_then(|r| {
        Some(KeyGrant {
            key_id: r.get("id"),
            store_id: r.get("store_id"),
            role: KeyRole::parse(r.get("role"))?,
            plan: r.get("plan"),
        })
    }))
}
