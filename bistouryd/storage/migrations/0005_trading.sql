-- What the positions agent did with the decisions: the orders it sent (as approved by the
-- risk engine), what became of them, their fills, funding on open positions, refusals,
-- and the account after every change (the equity curve). mode: paper or live.
CREATE TABLE orders (
    cloid        VARCHAR PRIMARY KEY CHECK (length(cloid) = 34),
    ts_ms        BIGINT  NOT NULL CHECK (ts_ms > 0),
    coin         VARCHAR NOT NULL CHECK (length(coin) > 0),
    is_buy       BOOLEAN NOT NULL,
    sz           DOUBLE  NOT NULL CHECK (sz > 0),
    kind         VARCHAR NOT NULL CHECK (kind IN ('market', 'limit', 'stop_loss', 'take_profit')),
    limit_px     DOUBLE  CHECK (limit_px > 0),
    trigger_px   DOUBLE  CHECK (trigger_px > 0),
    reduce_only  BOOLEAN NOT NULL,
    purpose      VARCHAR NOT NULL,
    decision_id  VARCHAR,
    mode         VARCHAR NOT NULL CHECK (mode IN ('paper', 'live'))
);
CREATE INDEX orders_decision ON orders (decision_id);
CREATE INDEX orders_coin_ts ON orders (coin, ts_ms);

CREATE TABLE order_updates (
    cloid      VARCHAR NOT NULL,
    ts_ms      BIGINT  NOT NULL CHECK (ts_ms > 0),
    coin       VARCHAR NOT NULL,
    status     VARCHAR NOT NULL CHECK (status IN
        ('filled', 'partially_filled', 'resting', 'waiting_trigger', 'rejected', 'canceled')),
    filled_sz  DOUBLE  NOT NULL CHECK (filled_sz >= 0),
    avg_px     DOUBLE  CHECK (avg_px > 0),
    oid        BIGINT,
    error      VARCHAR,
    PRIMARY KEY (cloid, status, ts_ms)
);

CREATE TABLE fills (
    id              VARCHAR PRIMARY KEY CHECK (length(id) > 0),
    ts_ms           BIGINT  NOT NULL CHECK (ts_ms > 0),
    coin            VARCHAR NOT NULL CHECK (length(coin) > 0),
    cloid           VARCHAR NOT NULL,
    is_buy          BOOLEAN NOT NULL,
    px              DOUBLE  NOT NULL CHECK (px > 0),
    sz              DOUBLE  NOT NULL CHECK (sz > 0),
    fee_usd         DOUBLE  NOT NULL,
    liquidity       VARCHAR NOT NULL CHECK (liquidity IN ('taker', 'maker')),
    closed_pnl_usd  DOUBLE  NOT NULL,
    purpose         VARCHAR NOT NULL,
    decision_id     VARCHAR,
    opened_by       VARCHAR,
    mode            VARCHAR NOT NULL CHECK (mode IN ('paper', 'live'))
);
CREATE INDEX fills_coin_ts ON fills (coin, ts_ms);
CREATE INDEX fills_decision ON fills (decision_id);
CREATE INDEX fills_opened_by ON fills (opened_by);

CREATE TABLE funding_payments (
    ts_ms       BIGINT  NOT NULL CHECK (ts_ms > 0),
    coin        VARCHAR NOT NULL,
    szi         DOUBLE  NOT NULL,
    rate        DOUBLE  NOT NULL,
    px          DOUBLE  NOT NULL CHECK (px > 0),
    amount_usd  DOUBLE  NOT NULL,
    mode        VARCHAR NOT NULL CHECK (mode IN ('paper', 'live')),
    PRIMARY KEY (mode, coin, ts_ms)
);

CREATE TABLE risk_refusals (
    id           VARCHAR PRIMARY KEY CHECK (length(id) > 0),
    ts_ms        BIGINT  NOT NULL CHECK (ts_ms > 0),
    coin         VARCHAR NOT NULL,
    decision_id  VARCHAR,
    action       VARCHAR NOT NULL,
    rule         VARCHAR NOT NULL,
    message      VARCHAR NOT NULL,
    hint         VARCHAR NOT NULL,
    mode         VARCHAR NOT NULL CHECK (mode IN ('paper', 'live'))
);
CREATE INDEX risk_refusals_decision ON risk_refusals (decision_id);

-- One row per PortfolioSnapshot; positions is a JSON object coin -> PositionView,
-- buy_and_hold coin -> that coin's price change over the same period.
CREATE TABLE portfolio (
    ts_ms               BIGINT  NOT NULL CHECK (ts_ms > 0),
    mode                VARCHAR NOT NULL CHECK (mode IN ('paper', 'live')),
    equity_usd          DOUBLE  NOT NULL,
    cash_usd            DOUBLE  NOT NULL,
    exposure_usd        DOUBLE  NOT NULL,
    unrealised_pnl_usd  DOUBLE  NOT NULL,
    realised_pnl_usd    DOUBLE  NOT NULL,
    fees_usd            DOUBLE  NOT NULL,
    funding_usd         DOUBLE  NOT NULL,
    pnl_today_usd       DOUBLE  NOT NULL,
    risk_budget_usd     DOUBLE  NOT NULL,
    max_positions_left  INTEGER NOT NULL,
    trading_paused      BOOLEAN NOT NULL,
    positions           JSON    NOT NULL,
    session_return      DOUBLE  NOT NULL,
    buy_and_hold        JSON    NOT NULL,
    PRIMARY KEY (mode, ts_ms)
);
