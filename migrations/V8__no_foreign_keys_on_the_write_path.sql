-- A foreign key costs a trigger per inserted row: a lookup of the parent row and a
-- KEY SHARE lock on it. On the write-behind path every order row (and its audit and
-- outbox rows) paid four of them, and all of them locked the same hot rows (the store
-- and the product on sale), which turns those locks into MultiXacts shared by every
-- batch in flight. Measured on the hot-SKU benchmark, the triggers were about a quarter
-- of PostgreSQL's CPU per order.
--
-- These rows are written only by the order writer, from product actors that were loaded
-- from the very rows the keys pointed at, and stores and products are never deleted (the
-- API has no such operation), so the references cannot dangle. The tests' stock checks
-- (tests/api/helpers.rs) and the Locust audit (loadtests/locust/audit.py) look for rows
-- without their parent after every run.
-- Keys that protect rows written by hand-rolled paths (products → stores, api_keys →
-- stores) stay.
ALTER TABLE orders DROP CONSTRAINT orders_store_id_fkey;
ALTER TABLE orders DROP CONSTRAINT orders_product_id_fkey;
ALTER TABLE order_audit DROP CONSTRAINT order_audit_order_id_fkey;
ALTER TABLE outbox_events DROP CONSTRAINT outbox_events_store_id_fkey;
