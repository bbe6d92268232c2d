-- One row per order on the write path (issue #15). Each order used to write three rows
-- (the order, its consent record in order_audit, its order.created event in
-- outbox_events) and twelve index entries. From here on it writes its order row, with
-- four index entries, and its batch writes ONE outbox row listing the batch's orders.

-- 1. The consent record is part of the order: it is written with it and never changes.
--    (api_key_id and created_at were already on the row; the consent's `at` was
--    created_at.)
ALTER TABLE orders
    ADD COLUMN terms_version text,
    ADD COLUMN marketing     boolean,
    ADD COLUMN client_addr   inet;

-- Existing orders take their consent from the audit trail's 'created' row, which is then
-- removed: the record now lives in the order row, and order_audit keeps status changes.
UPDATE orders o
SET terms_version = a.detail ->> 'terms_version',
    marketing     = (a.detail ->> 'marketing')::boolean,
    client_addr   = a.client_addr
FROM order_audit a
WHERE a.order_id = o.id AND a.event = 'created';

ALTER TABLE order_audit DISABLE TRIGGER order_audit_no_update_delete;
DELETE FROM order_audit WHERE event = 'created';
ALTER TABLE order_audit ENABLE TRIGGER order_audit_no_update_delete;

-- Every order wrote its consent record in the statement that inserted it, so every
-- order has one.
ALTER TABLE orders
    ALTER COLUMN terms_version SET NOT NULL,
    ALTER COLUMN marketing SET NOT NULL;

-- Append-only, enforced by the database: what an order was created with (its consent
-- record, and everything order.created says about it) cannot be changed, and an order
-- cannot be deleted. Only status, updated_at and payment_reference ever change.
-- A statement trigger on the named columns fires only for a statement that sets one of
-- them, so the status changes the service makes pay nothing for it.
CREATE FUNCTION orders_created_record_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'an order''s created record (consent included) is immutable (% refused)', TG_OP;
END;
$$;

CREATE TRIGGER orders_created_record_no_update
    BEFORE UPDATE OF id, store_id, product_id, customer_id, quantity, unit_price_cents, currency,
                     total_cents, expires_at, created_at, idempotency_key, request_hash,
                     api_key_id, terms_version, marketing, client_addr
    ON orders
    FOR EACH STATEMENT EXECUTE FUNCTION orders_created_record_immutable();

CREATE TRIGGER orders_no_delete
    BEFORE DELETE ON orders
    FOR EACH STATEMENT EXECUTE FUNCTION orders_created_record_immutable();

-- 2. order.created: one outbox row per write-behind batch and store, listing its orders
--    in the order the batch wrote them. Such a row stands for one event per order
--    (item 1, 2, … of the row); every other event is a row of its own (item 0). The
--    outbox order of events is (id, item).
ALTER TABLE outbox_events
    ADD COLUMN order_ids text[],
    ALTER COLUMN subject_id DROP NOT NULL,
    ALTER COLUMN data DROP NOT NULL,
    ADD CONSTRAINT outbox_events_one_form CHECK (
        CASE WHEN order_ids IS NULL THEN subject_id IS NOT NULL AND data IS NOT NULL
             ELSE type = 'order.created' AND subject_id IS NULL AND data IS NULL END);

-- The public id of the order.created event of an order: derived from the order id, so it
-- is the same wherever and however often the event is read, and there is one per order.
CREATE FUNCTION order_created_event_id(order_id text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT 'evt_' || md5('order.created:' || order_id)
$$;

-- The order representation of the API (src/domain/order.rs) as it was created, for the
-- `data` of order.created: every column it reads is immutable (the trigger above), and
-- the status at creation is 'reserved' exactly when the order has a payment hold
-- (expires_at is set at checkout and never changed).
CREATE FUNCTION webhook_order_created_json(o orders) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'id', o.id, 'store_id', o.store_id, 'product_id', o.product_id,
        'customer_id', o.customer_id, 'quantity', o.quantity,
        'unit_price_cents', o.unit_price_cents, 'currency', o.currency,
        'total_cents', o.total_cents,
        'status', CASE WHEN o.expires_at IS NULL THEN 'confirmed' ELSE 'reserved' END,
        'expires_at', webhook_time(o.expires_at), 'created_at', webhook_time(o.created_at))
$$;

-- Every event of the outbox, one row each, as it is delivered and listed (the whole
-- outbox: for audits and tests; the service's readers use outbox_event below). Only the
-- fan-out reads outbox_events rows as such.
CREATE VIEW events AS
SELECT o.id, 0 AS item, o.event_id, o.store_id, o.type, o.subject_id, o.data, o.created_at,
       o.delivered_at
FROM outbox_events o
WHERE o.order_ids IS NULL
UNION ALL
SELECT o.id, u.item::integer, order_created_event_id(r.id), o.store_id, o.type, r.id,
       webhook_order_created_json(r), r.created_at, o.delivered_at
FROM outbox_events o
CROSS JOIN LATERAL unnest(o.order_ids) WITH ORDINALITY AS u(order_id, item)
JOIN orders r ON r.id = u.order_id
WHERE o.order_ids IS NOT NULL;

-- One event by its position (outbox row, item), as the view has it. Readers that know
-- the positions they want (a claim's deliveries, a page of a listing) look each one up
-- with this: joined to the view instead, the planner may expand every batch row of the
-- outbox and read every order to find the few it needs.
CREATE FUNCTION outbox_event(row_id bigint, item integer)
RETURNS TABLE (event_id text, type text, subject_id text, data jsonb, created_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT o.event_id, o.type, o.subject_id, o.data, o.created_at
    FROM outbox_events o
    WHERE o.id = row_id AND item = 0 AND o.order_ids IS NULL
    UNION ALL
    SELECT order_created_event_id(r.id), o.type, r.id, webhook_order_created_json(r), r.created_at
    FROM outbox_events o JOIN orders r ON r.id = o.order_ids[item]
    WHERE o.id = row_id AND item > 0
$$;

-- A delivery is of one event: (outbox row, item).
ALTER TABLE webhook_deliveries ADD COLUMN item integer NOT NULL DEFAULT 0;
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_once;
ALTER TABLE webhook_deliveries
    ADD CONSTRAINT webhook_deliveries_once UNIQUE (endpoint_id, event_id, item);

-- 3. The indexes on orders, each with the queries it serves (src/db/orders.rs,
--    src/db/products.rs):
--   orders_pkey (id)                       find_order, existing_ids, order_statuses,
--                                          transition_orders, the events view;
--   orders_store_idempotency_key           the batch's ON CONFLICT, find_by_idempotency_key;
--     (store_id, idempotency_key)
--   orders_store_id_idx (store_id, id)     list_orders, newest first, with or without
--                                          filters;
--   orders_product_status_idx              held_by_customer, idempotency_keys,
--     (product_id, status)                 reserved_orders (a product actor's activation),
--                                          products_with_holds (one probe per product).
-- Dropped:
--   orders_product_customer_idx: its customer_id served no query (the per-customer counts
--     group the product's orders, they do not look a customer up);
--   orders_reserved_product_idx: the (product_id, status) index finds a product's
--     reserved orders;
--   orders_store_status_id_idx: a listing filtered by status walks orders_store_id_idx
--     newest first and skips the others; with the two statuses a sale is made of
--     (reserved, confirmed) that is a page's worth of rows, and it spared every order an
--     index entry.
-- (product_id, status) repeats one key for a hot product's orders, which B-tree
-- deduplication (PostgreSQL 13+) stores once per leaf page.
CREATE INDEX orders_product_status_idx ON orders (product_id, status);
DROP INDEX orders_product_customer_idx;
DROP INDEX orders_reserved_product_idx;
DROP INDEX orders_store_status_id_idx;
