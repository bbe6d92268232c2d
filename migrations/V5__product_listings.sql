-- Product listings: keyset pagination for every sort the API offers, and the drop
-- calendar. Each index leads with store_id (every listing is one store's) and ends with
-- id (the tie-breaker that makes cursors stable).

CREATE INDEX products_store_price_idx ON products (store_id, price_cents, id);
-- A product without sale_starts_at is on sale since it was created: listings sort it by
-- that instant, so the expression is indexed as written in the queries.
CREATE INDEX products_store_starts_idx ON products (store_id, (coalesce(sale_starts_at, created_at)), id);
-- The drop calendar and cache warming look for windows by their start.
CREATE INDEX products_sale_starts_idx ON products (sale_starts_at) WHERE sale_starts_at IS NOT NULL;
