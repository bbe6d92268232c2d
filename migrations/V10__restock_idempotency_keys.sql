-- Restocks may carry an Idempotency-Key (issue 12): a restock answered 503
-- outcome_unknown (its answer was lost on the way back from PostgreSQL) can then be
-- retried with the same key, and the retry learns whether it was applied instead of
-- adding the stock twice.
--
-- One row per key used in a store, written in the same statement as the stock update
-- it stands for (src/db/products.rs::restock), so the row exists if and only if the
-- restock was applied. What the key was used for is kept to refuse its reuse for
-- another product or quantity (422 idempotency_key_reused).
CREATE TABLE restock_keys (
    store_id        text        NOT NULL,
    idempotency_key text        NOT NULL,
    product_id      text        NOT NULL,
    quantity        bigint      NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (store_id, idempotency_key)
);
