-- Several instances on one database form one cluster (docs/ARCHITECTURE.md, "Cluster").
-- Ownership lives here, the way Temporal owns its history shards: a product belongs to
-- one of a fixed number of shards (a stable hash of its id), each shard has a lease
-- (owner, epoch, expiry) claimed and renewed by conditional updates, and every write of
-- an owner is conditioned on its shard's epoch (cluster_fence below), so a former owner
-- that was only paused can never commit once another instance owns the shard.

-- The members: each instance registers itself and heartbeats. One not seen for its
-- lease (FLASHSALE_LEASE_SECS) is gone: expires_at is in the past.
CREATE TABLE cluster_instances (
    id          text PRIMARY KEY,         -- random per process (ins_…)
    url         text NOT NULL,            -- FLASHSALE_ADVERTISE_URL
    started_at  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    -- As of its last heartbeat: product actors it runs, shards it holds.
    products_owned integer NOT NULL DEFAULT 0,
    shards_owned   integer NOT NULL DEFAULT 0
);

-- One row per shard, made here once: the shard count is fixed (256, also
-- cluster::SHARDS in the code), so a product's shard never changes.
-- epoch: bumped by every change of owner (never by a renewal); the fencing token.
-- expires_at: '-infinity' when free (never owned, or released on a clean handover).
CREATE TABLE shard_leases (
    shard       integer PRIMARY KEY CHECK (shard >= 0 AND shard < 256),
    owner       text,                     -- cluster_instances.id (no foreign key: the
                                          -- owner's row is deleted while the lease lapses)
    owner_url   text,
    epoch       bigint NOT NULL DEFAULT 0,
    expires_at  timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO shard_leases (shard) SELECT generate_series(0, 255);

-- The fence: called first in every write transaction of an owner (write-behind batch,
-- restock, PATCH, confirm, cancel, hold expiry) with the shards it writes for and the
-- epochs it holds them at. It key-share-locks those lease rows until the transaction
-- ends, so a claim (which locks the rows FOR UPDATE first) waits for writes under the
-- old epoch to finish, and any write that starts after a claim sees the new epoch and
-- is refused with SQLSTATE FS001: the transaction aborts and nothing it did commits.
-- A renewal (an UPDATE of expires_at alone, FOR NO KEY UPDATE) does not conflict with
-- the fences, so a slow write never holds up its own lease's renewal.
CREATE FUNCTION cluster_fence(shards integer[], epochs bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    held integer;
BEGIN
    -- In shard order, so that two fences never wait on each other in a cycle.
    SELECT count(*) INTO held FROM (
        SELECT 1 FROM shard_leases l
        JOIN unnest(shards, epochs) AS f(shard, epoch)
          ON l.shard = f.shard AND l.epoch = f.epoch
        ORDER BY l.shard
        FOR KEY SHARE OF l
    ) still_held;
    IF held <> cardinality(shards) THEN
        RAISE EXCEPTION 'shard lease lost: another instance owns the shard now'
            USING ERRCODE = 'FS001';
    END IF;
END;
$$;

-- The secret instances prove themselves with when they forward a request to the owner
-- (its client address and deadline are believed only then). Made once, here.
CREATE TABLE cluster_secret (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    secret   text NOT NULL
);
INSERT INTO cluster_secret (secret)
VALUES (encode(sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text
                                 || clock_timestamp()::text, 'UTF8')), 'hex'));
