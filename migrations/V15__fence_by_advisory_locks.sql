-- The fence without row locks. V14's cluster_fence took FOR KEY SHARE locks on the
-- lease rows, and a row lock is a write: every fenced transaction dirtied the lease
-- rows' page and wrote a WAL record per shard (about a third of a small batch's
-- statements' time, measured with pg_stat_statements in loadtests/cluster.sh). The
-- same exclusion is had from advisory locks, which live in the lock manager only:
--
-- * a fenced write takes a SHARED advisory lock per shard (in shard order), then checks
--   the epochs with a fresh snapshot (a volatile function's statement in READ
--   COMMITTED sees what committed before it began, so after the locks were granted);
-- * a claim takes the EXCLUSIVE lock of each shard it can claim (in shard order), then
--   bumps the epochs; both in one statement, so the locks are held until it commits.
--
-- So a claim waits for the writes fenced under the old epoch to commit or roll back, and
-- a write that starts after the claim waits for it and then sees the new epoch: it is
-- refused with SQLSTATE FS001, its transaction aborts and nothing it did commits.
-- Renewals and releases change no epoch and take no advisory lock: a slow write never
-- holds up its own lease's renewal. The lock key is (1718510437 = 'fnce', shard), a
-- two-key advisory lock, so it cannot meet the one-key locks other code takes.
CREATE OR REPLACE FUNCTION cluster_fence(shards integer[], epochs bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    s integer;
    held integer;
BEGIN
    FOR s IN SELECT DISTINCT f FROM unnest(shards) AS f ORDER BY f LOOP
        PERFORM pg_advisory_xact_lock_shared(1718510437, s);
    END LOOP;
    SELECT count(*) INTO held
    FROM shard_leases l
    JOIN unnest(shards, epochs) AS f(shard, epoch)
      ON l.shard = f.shard AND l.epoch = f.epoch;
    IF held <> cardinality(shards) THEN
        RAISE EXCEPTION 'shard lease lost: another instance owns the shard now'
            USING ERRCODE = 'FS001';
    END IF;
END;
$$;

-- Claims for `owner` (at `url`) those of `shards` that are free or lapsed, for
-- `lease_ms`: each one's epoch is bumped. Returns the shards claimed and their epochs.
CREATE FUNCTION cluster_claim(owner_id text, url text, shards integer[], lease_ms double precision)
RETURNS TABLE (shard integer, epoch bigint)
LANGUAGE plpgsql AS $$
DECLARE
    s integer;
    locked integer[] := '{}';
BEGIN
    FOR s IN
        SELECT l.shard FROM shard_leases l
        WHERE l.shard = ANY(shards) AND l.expires_at <= now()
        ORDER BY l.shard
    LOOP
        PERFORM pg_advisory_xact_lock(1718510437, s);
        locked := locked || s;
    END LOOP;
    -- Only the shards locked (one freed since the loop waits for the next claim), and
    -- with a fresh snapshot, after the locks: a shard renewed meanwhile is not taken.
    RETURN QUERY
    UPDATE shard_leases l
    SET owner = owner_id, owner_url = url, epoch = l.epoch + 1,
        expires_at = now() + lease_ms * interval '1 millisecond'
    WHERE l.shard = ANY(locked) AND l.expires_at <= now()
    RETURNING l.shard, l.epoch;
END;
$$;
