-- Counts and incident messages that reused a seq without an outbox reset.
ALTER TABLE nodes ADD COLUMN seq_conflicts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN last_seq_conflict_ms BIGINT;
