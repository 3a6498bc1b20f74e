-- The trader's decisions, one row per DecisionRecord (bistoury decisions; the replay cache).
-- The decision itself is flattened (action … rationale); its coin is the row's coin.
-- contributions, fallbacks, signal_ids: JSON arrays (SignalContribution, FallbackStep, ids).
-- prompt_*: the prompt exactly as sent, so a decision can be explained and replayed.
CREATE TABLE decisions (
    id              VARCHAR PRIMARY KEY CHECK (length(id) > 0),
    ts_ms           BIGINT  NOT NULL CHECK (ts_ms > 0),
    coin            VARCHAR NOT NULL CHECK (length(coin) > 0),
    action          VARCHAR NOT NULL
        CHECK (action IN ('open_long', 'open_short', 'close', 'reduce', 'hold')),
    size_fraction   DOUBLE  NOT NULL CHECK (size_fraction >= 0 AND size_fraction <= 1),
    stop_loss_pct   DOUBLE  CHECK (stop_loss_pct > 0 AND stop_loss_pct <= 0.5),
    take_profit_pct DOUBLE  CHECK (take_profit_pct > 0 AND take_profit_pct <= 2),
    confidence      DOUBLE  NOT NULL CHECK (confidence >= 0 AND confidence <= 1),
    rationale       VARCHAR NOT NULL CHECK (length(rationale) > 0),
    contributions   JSON    NOT NULL,
    provider        VARCHAR NOT NULL CHECK (length(provider) > 0),
    model           VARCHAR NOT NULL CHECK (length(model) > 0),
    prompt_version  VARCHAR NOT NULL,
    prompt_sha256   VARCHAR NOT NULL,
    prompt_system   VARCHAR NOT NULL,
    prompt_user     VARCHAR NOT NULL,
    raw_answer      VARCHAR NOT NULL,
    latency_s       DOUBLE  NOT NULL CHECK (latency_s >= 0),
    input_tokens    BIGINT  CHECK (input_tokens >= 0),
    output_tokens   BIGINT  CHECK (output_tokens >= 0),
    cost_usd        DOUBLE  NOT NULL CHECK (cost_usd >= 0),
    fallbacks       JSON    NOT NULL,
    signal_ids      JSON    NOT NULL,
    cached          BOOLEAN NOT NULL,
    contaminated    BOOLEAN NOT NULL
);

CREATE INDEX decisions_coin_ts ON decisions (coin, ts_ms);
-- The decision cache looks decisions up by prompt hash.
CREATE INDEX decisions_prompt_sha256 ON decisions (prompt_sha256);
