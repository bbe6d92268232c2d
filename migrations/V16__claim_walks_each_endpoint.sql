-- The claim walks each endpoint's due deliveries in order and stops at its share
-- (src/db/webhooks/claims.rs). It used to rank every due delivery of every endpoint
-- before taking the first of each, so a claim cost grew with the backlog: 194 ms at
-- 26,000 pending, 300-500 ms at 50,000, and a sell-out's deliveries went out at
-- 200-450 a second. This index serves the walk; the one on next_attempt_at alone
-- served only the ranking.
CREATE INDEX webhook_deliveries_endpoint_due_idx
    ON webhook_deliveries (endpoint_id, next_attempt_at, id) WHERE status = 'pending';
DROP INDEX webhook_deliveries_due_idx;
