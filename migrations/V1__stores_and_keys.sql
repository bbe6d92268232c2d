-- Stores and their API keys.
--
-- A store is a tenant: every product, order and key belongs to exactly one store, and
-- every query the service makes is scoped by store_id so that one store can never see
-- another's rows (a foreign resource answers 404, as if it did not exist).

CREATE TABLE stores (
    -- Opaque id, "st_" + UUIDv7 (time-ordered, so b-tree inserts stay at the right edge).
    id          text        PRIMARY KEY,
    name        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- The plan sets the store's request-rate tier.
    plan        text        NOT NULL CHECK (plan IN ('free', 'pro', 'enterprise')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- API keys are shown once, at creation, and stored only as SHA-256 hashes. A key is a
-- 160-bit random secret, so a plain (unsalted) hash is enough: there is nothing to
-- brute-force that a salt would protect.
CREATE TABLE api_keys (
    id          text        PRIMARY KEY,
    key_hash    bytea       NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    store_id    text        NOT NULL REFERENCES stores (id),
    -- admin: the store's back office (everything in its store);
    -- storefront: its public frontend (read products, checkout, read one order).
    role        text        NOT NULL CHECK (role IN ('admin', 'storefront')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE INDEX api_keys_store_id_idx ON api_keys (store_id);
