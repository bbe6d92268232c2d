-- Order lifecycle (confirm, cancel, expire) and the outbox of events.

-- What the payment provider called the payment that confirmed a reserved order.
ALTER TABLE orders ADD COLUMN payment_reference text;

-- Order listings page by id (UUIDv7, so newest first is id DESC) within a store, with
-- optional filters; these serve the common ones without a sort.
CREATE INDEX orders_store_id_idx ON orders (store_id, id);
CREATE INDEX orders_store_status_id_idx ON orders (store_id, status, id);
-- A product actor reloads its live payment holds on activation.
CREATE INDEX orders_reserved_product_idx ON orders (product_id) WHERE status = 'reserved';

-- The transactional outbox: every event is written in the same transaction as the change
-- that caused it, so a dispatcher (webhooks) can deliver each one at least once and none
-- is ever lost. Rows are appended; a dispatcher sets delivered_at.
CREATE TABLE outbox_events (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Public id of the event (what a webhook carries as "id").
    event_id      text        NOT NULL UNIQUE DEFAULT ('evt_' || replace(gen_random_uuid()::text, '-', '')),
    store_id      text        NOT NULL REFERENCES stores (id),
    -- order.created, order.confirmed, order.cancelled, order.expired,
    -- product.sold_out, product.restocked
    type          text        NOT NULL,
    -- The order or product the event is about.
    subject_id    text        NOT NULL,
    data          jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    delivered_at  timestamptz
);

-- A dispatcher reads what is not delivered yet, oldest first.
CREATE INDEX outbox_events_pending_idx ON outbox_events (id) WHERE delivered_at IS NULL;
CREATE INDEX outbox_events_subject_idx ON outbox_events (subject_id, id);
