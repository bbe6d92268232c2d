-- Webhooks: the endpoints stores subscribe, one delivery per (endpoint, event), and every
-- attempt at it; plus what the dispatcher needs from the outbox (V4) and the products.
--
-- The path of an event: the change's transaction appends it to outbox_events; a
-- dispatcher claims undelivered outbox rows, writes one webhook_deliveries row per
-- matching endpoint and sets outbox_events.delivered_at, in one transaction (the outbox's
-- job is then done: the event is durably handed over); it then claims due deliveries
-- (FOR UPDATE SKIP LOCKED), POSTs them and records each attempt.

-- A store's subscription.
CREATE TABLE webhook_endpoints (
    id                     text        PRIMARY KEY,
    store_id               text        NOT NULL REFERENCES stores (id),
    url                    text        NOT NULL CHECK (length(url) <= 2000),
    -- Event types delivered to it (validated by the API against the known ones).
    events                 text[]      NOT NULL,
    description            text,
    status                 text        NOT NULL DEFAULT 'enabled'
                                       CHECK (status IN ('enabled', 'disabled')),
    -- Why the dispatcher disabled it (gone: a 410; failing: failed for the whole
    -- disable-after period); NULL when enabled or disabled by the store.
    disabled_reason        text,
    -- The signing secret (whsec_…). Kept as is: it is needed to sign, not only to check.
    secret                 text        NOT NULL,
    -- After a rotation the old secret signs beside the new one until previous_until.
    previous_secret        text,
    previous_until         timestamptz,
    -- Since when every attempt failed (NULL: the last attempt succeeded, or none yet).
    failing_since          timestamptz,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
-- Listings (a store's own, by id) and the per-store limit count.
CREATE INDEX webhook_endpoints_store_idx ON webhook_endpoints (store_id, id);

-- One event to one endpoint. Deleting an endpoint deletes its deliveries.
CREATE TABLE webhook_deliveries (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id     text        NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    store_id        text        NOT NULL,
    -- outbox_events.id: the order of events about one subject (see below).
    event_id        bigint      NOT NULL,
    type            text        NOT NULL,
    subject_id      text        NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'delivered', 'failed')),
    attempt_count   integer     NOT NULL DEFAULT 0,
    -- When it is due. A dispatcher that claims it moves this forward by its lease, so a
    -- dispatcher killed mid-attempt leaves it due again once the lease lapses.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    -- A redelivery of the outbox (two dispatchers, a crash between the fan-out's insert
    -- and its commit cannot happen, but a manual replay could) never makes a second row.
    CONSTRAINT webhook_deliveries_once UNIQUE (endpoint_id, event_id)
);
-- The claim: due pending deliveries, soonest first.
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
-- Order per subject: a delivery waits while an earlier one about the same subject to the
-- same endpoint is pending (the claim's NOT EXISTS reads this).
CREATE INDEX webhook_deliveries_subject_idx ON webhook_deliveries (endpoint_id, subject_id, event_id)
    WHERE status = 'pending';
-- The deliveries log of an endpoint, newest first.
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, id);
-- Pruning by age.
CREATE INDEX webhook_deliveries_created_idx ON webhook_deliveries (created_at);

-- Every attempt, oldest first per delivery.
CREATE TABLE webhook_attempts (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id      bigint      NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    at               timestamptz NOT NULL DEFAULT now(),
    -- NULL when no response came (refused, timed out, forbidden address).
    status_code      integer,
    duration_ms      integer     NOT NULL,
    error            text,
    -- The start of the response body, capped (for the store's debugging).
    response_snippet text
);
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id, id);

-- GET /api/v1/events: a store's events, newest first. An append-only index on a
-- monotonic id costs an insert into the rightmost leaf of the store's range.
CREATE INDEX outbox_events_store_idx ON outbox_events (store_id, id);
-- Pruning delivered events by age.
CREATE INDEX outbox_events_created_idx ON outbox_events (created_at) WHERE delivered_at IS NOT NULL;

-- drop.live: the sale start a drop.live event was recorded for. A timer claims each
-- opened sale once with a conditional UPDATE (so once across restarts and processes);
-- moving the start later makes the drop announce again when it opens.
ALTER TABLE products ADD COLUMN drop_live_for timestamptz;
-- Sales that opened before this migration are not announced now.
UPDATE products SET drop_live_for = sale_starts_at
WHERE sale_starts_at IS NOT NULL AND sale_starts_at <= now();
-- Only products with an unannounced start are in it; a stock update changes neither
-- column, so it stays a HOT update.
CREATE INDEX products_drop_live_idx ON products (sale_starts_at)
    WHERE sale_starts_at IS NOT NULL AND drop_live_for IS DISTINCT FROM sale_starts_at;

-- A timestamp as the API writes it (RFC 3339, UTC, microseconds).
CREATE FUNCTION webhook_time(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- The product representation of the API (src/domain/product.rs, ProductView) as of a
-- statement's row, for the `data` of product events; `now` decides its status as the
-- API would.
CREATE FUNCTION webhook_product_json(p products, at timestamptz) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'id', p.id, 'store_id', p.store_id, 'sku', p.sku, 'name', p.name,
        'description', p.description, 'price_cents', p.price_cents, 'currency', p.currency,
        'stock_total', p.stock_total, 'stock_available', p.stock_available,
        'max_per_customer', p.max_per_customer,
        'sale_starts_at', webhook_time(p.sale_starts_at), 'sale_ends_at', webhook_time(p.sale_ends_at),
        'hold_seconds', p.hold_seconds,
        'waiting_room', CASE WHEN p.queue_opens_seconds IS NULL THEN NULL ELSE
            jsonb_build_object('opens_seconds_before', p.queue_opens_seconds,
                               'admit_per_second', p.queue_admit_per_second) END,
        'status', CASE
            WHEN p.sale_ends_at IS NOT NULL AND at >= p.sale_ends_at THEN 'ended'
            WHEN p.sale_starts_at IS NOT NULL AND at < p.sale_starts_at THEN 'scheduled'
            WHEN p.stock_available = 0 THEN 'sold_out'
            ELSE 'live' END,
        'created_at', webhook_time(p.created_at), 'updated_at', webhook_time(p.updated_at))
$$;
