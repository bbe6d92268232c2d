-- Orders and their append-only audit trail.

CREATE TABLE orders (
    id                 text        PRIMARY KEY,
    store_id           text        NOT NULL REFERENCES stores (id),
    product_id         text        NOT NULL REFERENCES products (id),
    customer_id        text        NOT NULL,
    quantity           integer     NOT NULL CHECK (quantity BETWEEN 1 AND 100),
    unit_price_cents   bigint      NOT NULL CHECK (unit_price_cents >= 0),
    currency           text        NOT NULL,
    total_cents        bigint      NOT NULL CHECK (total_cents = unit_price_cents * quantity),
    status             text        NOT NULL
                       CHECK (status IN ('reserved', 'confirmed', 'cancelled', 'expired')),
    -- Set for reserved orders: when the payment hold lapses.
    expires_at         timestamptz,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    -- Idempotency: the client's key and a SHA-256 of the request it came with, kept with
    -- the order so that a retry after a restart still finds its original answer.
    idempotency_key    text        NOT NULL,
    request_hash       bytea       NOT NULL,
    -- The key (api_keys.id) that placed the order.
    api_key_id         text        NOT NULL,

    -- The write-behind batch inserts with ON CONFLICT on this constraint, so a key can
    -- buy at most once per store even if two retries race through different batches.
    CONSTRAINT orders_store_idempotency_key UNIQUE (store_id, idempotency_key)
);

-- Product actors rebuild their per-customer counts from this on activation.
CREATE INDEX orders_product_customer_idx ON orders (product_id, customer_id);
-- Order listings, newest first, per store.
CREATE INDEX orders_store_created_idx ON orders (store_id, created_at, id);

-- The audit trail: consent records and status changes, appended and never changed.
CREATE TABLE order_audit (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id      text        NOT NULL REFERENCES orders (id),
    store_id      text        NOT NULL,
    -- 'created' carries the consent record; later issues add status changes.
    event         text        NOT NULL,
    status        text        NOT NULL,
    api_key_id    text,
    client_addr   inet,
    -- For 'created': {"terms_version": "...", "marketing": true|false}.
    detail        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    at            timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX order_audit_order_idx ON order_audit (order_id, id);

-- Append-only, enforced by the database rather than by convention.
CREATE FUNCTION order_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'order_audit is append-only (% refused)', TG_OP;
END;
$$;

CREATE TRIGGER order_audit_no_update_delete
    BEFORE UPDATE OR DELETE ON order_audit
    FOR EACH STATEMENT EXECUTE FUNCTION order_audit_append_only();
