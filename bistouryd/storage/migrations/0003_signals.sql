-- Strategy signals with their narratives (bistouryctl signals; the trader's inputs).
-- features: the named numbers behind the narrative, as a JSON object.
CREATE TABLE signals (
    id         VARCHAR PRIMARY KEY,
    strategy   VARCHAR NOT NULL CHECK (length(strategy) > 0),
    coin       VARCHAR NOT NULL CHECK (length(coin) > 0),
    ts_ms      BIGINT  NOT NULL CHECK (ts_ms > 0),
    direction  VARCHAR NOT NULL CHECK (direction IN ('long', 'short', 'neutral')),
    strength   DOUBLE  NOT NULL CHECK (strength >= 0 AND strength <= 1),
    confidence DOUBLE  NOT NULL CHECK (confidence >= 0 AND confidence <= 1),
    narrative  VARCHAR NOT NULL CHECK (length(narrative) > 0),
    features   JSON    NOT NULL
);

CREATE INDEX signals_coin_ts ON signals (coin, ts_ms);
