-- A virtual waiting room for a drop that asks for one: buyers who arrive in the window
-- before the sale starts are shuffled at the start and admitted at a steady rate; only
-- admitted buyers (with a signed, short-lived token) may check out.

ALTER TABLE products
    -- How long before sale_starts_at the queue opens.
    ADD COLUMN queue_opens_seconds integer,
    -- Buyers let in per second once the sale starts.
    ADD COLUMN queue_admit_per_second integer,
    ADD CONSTRAINT products_waiting_room CHECK (
        (queue_opens_seconds IS NULL AND queue_admit_per_second IS NULL)
        OR (queue_opens_seconds > 0 AND queue_admit_per_second > 0 AND sale_starts_at IS NOT NULL)
    );
