-- Initial schema. Times are integer milliseconds since the Unix epoch (UTC).
CREATE TABLE messages (
    message_id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    node TEXT NOT NULL,
    kind TEXT NOT NULL,
    seq BIGINT NOT NULL,
    sent_ms BIGINT NOT NULL,
    received_ms BIGINT NOT NULL,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX messages_received ON messages (received_ms);
CREATE INDEX messages_node ON messages (site, node, kind, received_ms);

CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ms BIGINT NOT NULL,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload_size BIGINT NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX dead_letters_received ON dead_letters (received_ms);

CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);

CREATE TABLE count_lines (
    message_id TEXT NOT NULL,
    site TEXT NOT NULL,
    node TEXT NOT NULL,
    line TEXT NOT NULL,
    class TEXT NOT NULL,
    start_ms BIGINT NOT NULL,
    end_ms BIGINT NOT NULL,
    n_in BIGINT NOT NULL,
    n_out BIGINT NOT NULL
);
CREATE INDEX count_lines_time ON count_lines (start_ms);
CREATE INDEX count_lines_node ON count_lines (site, node, start_ms);

CREATE TABLE count_zones (
    message_id TEXT NOT NULL,
    site TEXT NOT NULL,
    node TEXT NOT NULL,
    zone TEXT NOT NULL,
    class TEXT NOT NULL,
    start_ms BIGINT NOT NULL,
    end_ms BIGINT NOT NULL,
    current_count BIGINT NOT NULL,
    max_count BIGINT NOT NULL,
    mean_count DOUBLE PRECISION NOT NULL,
    entries BIGINT NOT NULL,
    exits BIGINT NOT NULL
);
CREATE INDEX count_zones_time ON count_zones (start_ms);
CREATE INDEX count_zones_node ON count_zones (site, node, start_ms);

CREATE TABLE nodes (
    site TEXT NOT NULL,
    node TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'unknown',
    state_reason TEXT,
    state_since_ms BIGINT,
    last_seen_ms BIGINT,
    last_heartbeat_ms BIGINT,
    software_version TEXT,
    model_name TEXT,
    model_sha256 TEXT,
    config_version TEXT,
    fps DOUBLE PRECISION,
    target_fps DOUBLE PRECISION,
    inference_ms DOUBLE PRECISION,
    outbox_depth BIGINT,
    source_state TEXT,
    last_seq BIGINT,
    seq_resets BIGINT NOT NULL DEFAULT 0,
    last_reset_ms BIGINT,
    PRIMARY KEY (site, node)
);

CREATE TABLE seq_gaps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    site TEXT NOT NULL,
    node TEXT NOT NULL,
    first_seq BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    missing BIGINT NOT NULL,
    opened_ms BIGINT NOT NULL,
    closed_ms BIGINT
);
CREATE INDEX seq_gaps_node ON seq_gaps (site, node, closed_ms);

CREATE TABLE incidents (
    incident_id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    node TEXT NOT NULL,
    type TEXT NOT NULL,
    rule TEXT NOT NULL,
    severity TEXT NOT NULL,
    zone TEXT,
    line TEXT,
    class TEXT,
    origin TEXT NOT NULL,
    active INTEGER NOT NULL,
    state TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    ended_ms BIGINT,
    detail TEXT NOT NULL,
    has_evidence INTEGER NOT NULL DEFAULT 0,
    acked_by TEXT,
    acked_ms BIGINT,
    ack_note TEXT,
    resolved_by TEXT,
    resolved_ms BIGINT,
    resolve_note TEXT,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX incidents_started ON incidents (started_ms);
CREATE INDEX incidents_node ON incidents (site, node, started_ms);

CREATE TABLE incident_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id TEXT NOT NULL,
    action TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    actor TEXT,
    note TEXT,
    message_id TEXT,
    detail TEXT
);
CREATE INDEX incident_events_incident ON incident_events (incident_id, at_ms);

CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms BIGINT NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX events_time ON events (at_ms);

CREATE TABLE tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT,
    revoked_ms BIGINT
);

CREATE TABLE users (
    username TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
