-- Every order row pays for every index on orders and outbox_events, on the hottest path
-- there is. Two of them serve no query the service makes:
--   orders_store_created_idx  — listings page by id since V4 (orders_store_id_idx);
--   outbox_events_subject_idx — a dispatcher reads pending events by id
--                               (outbox_events_pending_idx); per-subject history is the
--                               audit trail's job (order_audit_order_idx).
DROP INDEX orders_store_created_idx;
DROP INDEX outbox_events_subject_idx;
