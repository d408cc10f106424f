-- The web page's sessions signed out before their time, until they would
-- have ended: every server refuses their cookies.

CREATE TABLE ended_sessions (
    id TEXT PRIMARY KEY,
    until BIGINT NOT NULL
);
