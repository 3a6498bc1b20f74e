-- Market data: what HyperLiquid sent (raw_messages) and the same data as typed rows.
-- Units are in the column names: _ts_ms (Unix milliseconds, UTC), _px (quote currency,
-- USDC), _sz (base asset), _usd, _n (a count). Writers: bistouryd.storage.marketdata.
-- Rows older than storage.retention move to Parquet (bistouryd.storage.retention); the
-- <table>_all views read both.

-- Every message exactly as received. seq is the arrival order (a sequence, assigned by
-- the writer in the order the messages came in); there is no natural key.
CREATE SEQUENCE raw_messages_seq START 1;

CREATE TABLE raw_messages (
    seq            BIGINT  NOT NULL,
    received_ts_ms BIGINT  NOT NULL CHECK (received_ts_ms > 0),
    source         VARCHAR NOT NULL CHECK (source IN ('ws', 'rest', 'archive')),
    channel        VARCHAR NOT NULL CHECK (length(channel) > 0),
    coin           VARCHAR CHECK (coin IS NULL OR length(coin) > 0),
    text           VARCHAR NOT NULL
);

-- OHLCV bars. Upserted: a bar's last message (its final value) wins.
CREATE TABLE candles (
    coin        VARCHAR NOT NULL CHECK (length(coin) > 0),
    interval    VARCHAR NOT NULL CHECK (interval IN ('1m', '3m', '5m', '15m', '30m', '1h', '2h',
                                                     '4h', '8h', '12h', '1d', '3d', '1w', '1M')),
    open_ts_ms  BIGINT  NOT NULL CHECK (open_ts_ms > 0),
    close_ts_ms BIGINT  NOT NULL,
    open_px     DOUBLE  NOT NULL CHECK (open_px > 0),
    high_px     DOUBLE  NOT NULL CHECK (high_px > 0),
    low_px      DOUBLE  NOT NULL CHECK (low_px > 0),
    close_px    DOUBLE  NOT NULL CHECK (close_px > 0),
    volume_sz   DOUBLE  NOT NULL CHECK (volume_sz >= 0),
    trades_n    INTEGER CHECK (trades_n >= 0),
    CHECK (close_ts_ms >= open_ts_ms),
    CHECK (high_px >= low_px),
    PRIMARY KEY (coin, interval, open_ts_ms)
);

-- Full L2 book snapshots, keyed by the exchange's time stamp. Levels are parallel lists,
-- best first on each side: bid_px[i], bid_sz[i], bid_n[i] is level i (1-based in SQL).
CREATE TABLE l2_snapshots (
    coin   VARCHAR   NOT NULL CHECK (length(coin) > 0),
    ts_ms  BIGINT    NOT NULL CHECK (ts_ms > 0),
    bid_px DOUBLE[]  NOT NULL CHECK (list_min(bid_px) > 0),
    bid_sz DOUBLE[]  NOT NULL CHECK (list_min(bid_sz) >= 0),
    bid_n  INTEGER[] NOT NULL CHECK (list_min(bid_n) >= 0),
    ask_px DOUBLE[]  NOT NULL CHECK (list_min(ask_px) > 0),
    ask_sz DOUBLE[]  NOT NULL CHECK (list_min(ask_sz) >= 0),
    ask_n  INTEGER[] NOT NULL CHECK (list_min(ask_n) >= 0),
    CHECK (len(bid_px) = len(bid_sz) AND len(bid_px) = len(bid_n)),
    CHECK (len(ask_px) = len(ask_sz) AND len(ask_px) = len(ask_n)),
    PRIMARY KEY (coin, ts_ms)
);

-- Public trades. tid is the exchange's trade id: a REST backfill's duplicates are ignored.
-- side is the aggressor's: buy lifted an ask.
CREATE TABLE trades (
    coin  VARCHAR NOT NULL CHECK (length(coin) > 0),
    tid   BIGINT  NOT NULL,
    ts_ms BIGINT  NOT NULL CHECK (ts_ms > 0),
    px    DOUBLE  NOT NULL CHECK (px > 0),
    sz    DOUBLE  NOT NULL CHECK (sz >= 0),
    side  VARCHAR NOT NULL CHECK (side IN ('buy', 'sell')),
    hash  VARCHAR NOT NULL,
    PRIMARY KEY (coin, tid)
);

-- Asset contexts (activeAssetCtx, metaAndAssetCtxs, the archive's asset_ctxs files).
-- funding_rate is the current (predicted) hourly rate; settled rates are in funding_history.
CREATE TABLE asset_ctx (
    coin             VARCHAR NOT NULL CHECK (length(coin) > 0),
    ts_ms            BIGINT  NOT NULL CHECK (ts_ms > 0),
    funding_rate     DOUBLE  NOT NULL,
    open_interest_sz DOUBLE  NOT NULL CHECK (open_interest_sz >= 0),
    mark_px          DOUBLE  NOT NULL CHECK (mark_px > 0),
    oracle_px        DOUBLE  NOT NULL CHECK (oracle_px > 0),
    mid_px           DOUBLE  CHECK (mid_px > 0),
    premium          DOUBLE,
    prev_day_px      DOUBLE  CHECK (prev_day_px > 0),
    day_ntl_vlm_usd  DOUBLE  CHECK (day_ntl_vlm_usd >= 0),
    impact_bid_px    DOUBLE  CHECK (impact_bid_px > 0),
    impact_ask_px    DOUBLE  CHECK (impact_ask_px > 0),
    PRIMARY KEY (coin, ts_ms)
);

-- Settled hourly funding rates (fundingHistory).
CREATE TABLE funding_history (
    coin         VARCHAR NOT NULL CHECK (length(coin) > 0),
    ts_ms        BIGINT  NOT NULL CHECK (ts_ms > 0),
    funding_rate DOUBLE  NOT NULL,
    premium      DOUBLE,
    PRIMARY KEY (coin, ts_ms)
);

-- "One coin, one time range": the typed tables' primary keys start with coin, and DuckDB
-- answers time ranges from its min/max zone maps (rows arrive roughly in time order).
-- No further ART index on purpose: measured on 500k rows, an index on trades (coin, ts_ms)
-- made the file 3.4 times larger and writes 20 % slower without making a one-coin,
-- one-range query faster (DuckDB uses ART indexes for point lookups, not ranges).

-- Files brought in by `bistoury data import`: the same file (by content) is not imported twice.
CREATE TABLE import_log (
    sha256          VARCHAR PRIMARY KEY CHECK (length(sha256) = 64),
    file_name       VARCHAR NOT NULL,
    file_bytes      BIGINT  NOT NULL CHECK (file_bytes >= 0),
    format          VARCHAR NOT NULL,
    imported_ts_ms  BIGINT  NOT NULL CHECK (imported_ts_ms > 0),
    lines_n         BIGINT  NOT NULL CHECK (lines_n >= 0),
    rows            JSON    NOT NULL DEFAULT '{}'
);

-- Old and new rows alike. These plain views are replaced (bistouryd.storage.retention
-- .refresh_views) by "table UNION ALL read_parquet(...)" once Parquet files exist.
CREATE VIEW raw_messages_all AS SELECT * FROM raw_messages;
CREATE VIEW candles_all AS SELECT * FROM candles;
CREATE VIEW l2_snapshots_all AS SELECT * FROM l2_snapshots;
CREATE VIEW trades_all AS SELECT * FROM trades;
CREATE VIEW asset_ctx_all AS SELECT * FROM asset_ctx;
CREATE VIEW funding_history_all AS SELECT * FROM funding_history;
