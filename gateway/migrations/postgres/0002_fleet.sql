-- Fleet operation: config requests, model roll-outs and their targets.
-- Times are integer milliseconds since the Unix epoch (UTC).
CREATE TABLE config_requests (
    request_id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    node TEXT NOT NULL,
    actor TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    body_sha256 TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX config_requests_node ON config_requests (site, node, created_ms);

CREATE TABLE rollouts (
    rollout_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    url TEXT,
    file TEXT,
    token_sha256 TEXT,
    max_bytes BIGINT,
    actor TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    stages TEXT NOT NULL,
    stage INTEGER NOT NULL,
    status TEXT NOT NULL,
    status_reason TEXT,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX rollouts_status ON rollouts (status);

CREATE TABLE rollout_targets (
    rollout_id TEXT NOT NULL,
    site TEXT NOT NULL,
    node TEXT NOT NULL,
    stage INTEGER NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    published_ms BIGINT,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (rollout_id, site, node)
);

-- gateway/site_plan.py creates these two with the same columns when it
-- first runs; creating them here lets the inventory read positions on a
-- store where no plan was ever saved.
CREATE TABLE IF NOT EXISTS site_settings (
    site TEXT PRIMARY KEY,
    time_zone TEXT,
    plan_content_type TEXT,
    plan_base64 TEXT,
    plan_bytes BIGINT,
    updated_ms BIGINT NOT NULL,
    updated_by TEXT
);

CREATE TABLE IF NOT EXISTS node_positions (
    site TEXT NOT NULL,
    node TEXT NOT NULL,
    x DOUBLE PRECISION NOT NULL,
    y DOUBLE PRECISION NOT NULL,
    updated_ms BIGINT NOT NULL,
    updated_by TEXT,
    PRIMARY KEY (site, node)
);
