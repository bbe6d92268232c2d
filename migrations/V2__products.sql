-- Products and their stock.
--
-- Stock is kept as two numbers:
--   stock_total      everything ever put in (initial stock + restocks);
--   stock_available  what is left to sell.
-- The invariant the whole service exists to keep:
--   stock_available + sum(quantity of reserved and confirmed orders) = stock_total
-- so "no oversell" is "stock_available never goes below zero". The CHECK below is the
-- last line of defence: the product actor decides in memory, and should it ever be wrong
-- the write-behind batch fails and rolls back instead of selling what is not there.

CREATE TABLE products (
    id                text        PRIMARY KEY,
    store_id          text        NOT NULL REFERENCES stores (id),
    sku               text        NOT NULL,
    name              text        NOT NULL,
    description       text,
    price_cents       bigint      NOT NULL CHECK (price_cents >= 0),
    currency          text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    stock_total       bigint      NOT NULL CHECK (stock_total >= 0),
    stock_available   bigint      NOT NULL,
    max_per_customer  integer     CHECK (max_per_customer IS NULL OR max_per_customer >= 1),
    sale_starts_at    timestamptz,
    sale_ends_at      timestamptz,
    -- How long a checkout holds stock awaiting payment; 0 = orders are confirmed at once.
    hold_seconds      integer     NOT NULL DEFAULT 0 CHECK (hold_seconds >= 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),

    -- The oversell guard (see above).
    CONSTRAINT products_stock_available_range
        CHECK (stock_available >= 0 AND stock_available <= stock_total),
    CONSTRAINT products_sale_window
        CHECK (sale_ends_at IS NULL OR sale_starts_at IS NULL OR sale_ends_at > sale_starts_at),
    -- A sku names one product within its store (409 sku_taken is mapped from this name).
    CONSTRAINT products_store_sku_key UNIQUE (store_id, sku)
);

-- Listing a store's products newest first / by id (cursor pagination).
CREATE INDEX products_store_created_idx ON products (store_id, created_at, id);
