-- System events: what the daemon did and why (bistouryctl events).
CREATE TABLE sys_events (
    id       VARCHAR PRIMARY KEY,
    ts_ms    BIGINT  NOT NULL CHECK (ts_ms > 0),
    kind     VARCHAR NOT NULL CHECK (length(kind) > 0),
    level    VARCHAR NOT NULL CHECK (level IN ('info', 'warning', 'error', 'critical')),
    source   VARCHAR NOT NULL CHECK (length(source) > 0),
    message  VARCHAR NOT NULL,
    details  JSON    NOT NULL DEFAULT '{}'
);

CREATE INDEX sys_events_ts ON sys_events (ts_ms);
