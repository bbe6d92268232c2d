//! Who is calling: the operator, or a store's key.

use std::future::{ready, Ready};
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::{Either, LocalBoxFuture};

use actix_web::{web, FromRequest, HttpMessage, HttpRequest};

use super::errors::ApiError;
use super::recent_keys;
use super::{load_shared, AppState};
use crate::actors::limits::StoreLimits;
use crate::cluster::forward::{LimitsCounted, Via};
use crate::db::stores::{find_key, KeyGrant};
use crate::domain::ids::{hash_secret, KeyRole};

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The platform operator (`FLASHSALE_ADMIN_TOKEN`).
    Operator,
    /// A store's admin or storefront key, and its store's rate limits (looked up once
    /// per request, here).
    Key(Arc<KeyGrant>, Arc<StoreLimits>),
}

/// Both store roles.
pub const ANY_STORE_KEY: &[KeyRole] = &[KeyRole::Admin, KeyRole::Storefront];
/// The back office only.
pub const ADMIN_KEY: &[KeyRole] = &[KeyRole::Admin];

impl Caller {
    /// The store key behind this call, if its role is one of `roles`; else 403.
    pub fn store_key(&self, roles: &[KeyRole]) -> Result<&KeyGrant, ApiError> {
        match self {
            Caller::Key(grant, _) if roles.contains(&grant.role) => Ok(grant),
            _ => Err(ApiError::Forbidden),
        }
    }

    /// The rate limits of the caller's store (`None` for the operator).
    pub fn limits(&self) -> Option<&StoreLimits> {
        match self {
            Caller::Key(_, limits) => Some(limits),
            Caller::Operator => None,
        }
    }

    pub fn require_operator(&self) -> Result<(), ApiError> {
        match self {
            Caller::Operator => Ok(()),
            Caller::Key(..) => Err(ApiError::Forbidden),
        }
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future =
        Either<Ready<Result<Self, ApiError>>, LocalBoxFuture<'static, Result<Self, ApiError>>>;

    /// A key already in the cache is answered at once, without a boxed future: this runs
    /// on every authenticated request.
    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let token = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token);
        let (Some(token), Some(state)) = (token, req.app_data::<web::Data<AppState>>()) else {
            return Either::Left(ready(Err(ApiError::Unauthorized)));
        };
        // Counted once in the cluster: by the instance that authenticated it first.
        let counted = || {
            req.extensions()
                .get::<Via>()
                .is_some_and(|v| v.limits_counted)
        };
        // A key this worker admitted a moment ago: no hash, no shared cache.
        let now = Instant::now();
        if let Some(grant) = recent_keys::grant(token, now) {
            crate::metrics::cache_lookup("api_keys", true);
            return Either::Left(ready(admit_key(req, state, Some(grant), counted())));
        }
        let hash = hash_secret(token);
        if hash == state.admin_token_hash {
            return Either::Left(ready(Ok(Caller::Operator)));
        }
        // Not the shape of any key we give out: refused without a lookup.
        if !crate::domain::ids::is_key_shaped(token) {
            return Either::Left(ready(Err(ApiError::Unauthorized)));
        }
        let counted = counted();
        if let Some(grant) = state.keys.get(&hash) {
            crate::metrics::cache_lookup("api_keys", true);
            if let Some(grant) = &grant {
                recent_keys::remember(token, grant, now);
            }
            return Either::Left(ready(admit_key(req, state, grant, counted)));
        }
        let (state, req) = (state.clone(), req.clone());
        Either::Right(Box::pin(async move {
            let grant = load_key(&state, hash).await?;
            admit_key(&req, &state, grant, counted)
        }))
    }
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is matched
/// case-insensitively (RFC 9110 §11.1).
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("Bearer").then(|| token.trim())
}

/// The hash of the request's bearer token, whoever it names: the caller whose writes its
/// later reads must see (see [`crate::db::replica`]).
pub fn token_hash(headers: &actix_web::http::header::HeaderMap) -> Option<[u8; 32]> {
    let value = headers.get(actix_web::http::header::AUTHORIZATION)?;
    let token = bearer_token(value.to_str().ok()?)?;
    Some(hash_secret(token))
}

/// How long a key lookup waits for one of the bounded lookup slots.
const KEY_LOOKUP_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// A key that is not in the cache, from the database: one query for all the requests
/// that miss with it at the same time (see [`AppState::key_loads`]); the one that ran
/// it puts the answer in the key cache.
async fn load_key(state: &AppState, hash: [u8; 32]) -> Result<Option<Arc<KeyGrant>>, ApiError> {
    load_shared(&state.key_loads, "api_keys", hash, async {
        // Bounded: a flood of unknown keys takes a few connections, never the pool.
        let _permit = match tokio::time::timeout(KEY_LOOKUP_WAIT, state.key_lookups.acquire()).await
        {
            Ok(Ok(permit)) => permit,
            _ => {
                crate::metrics::KEY_LOOKUPS_SHED.inc();
                return Err(ApiError::Overloaded);
            }
        };
        let client = state.pool.get().await?;
        let grant = find_key(&**client, &hash).await?.map(Arc::new);
        state.keys.insert(hash, grant.clone());
        Ok(grant)
    })
    .await
}

/// A known key within its rate limits is a caller. `counted`: an earlier instance of
/// the cluster counted this request already (and forwarded it here).
fn admit_key(
    req: &HttpRequest,
    state: &AppState,
    grant: Option<Arc<KeyGrant>>,
    counted: bool,
) -> Result<Caller, ApiError> {
    let grant = grant.ok_or(ApiError::Unauthorized)?;
    let limits = state.actors.limits(&grant);
    if !counted {
        limits.check_request(&grant.key_id)?;
        req.extensions_mut().insert(LimitsCounted);
    }
    Ok(Caller::Key(grant, limits))
}
