-- The token registry, for servers whose index is here: every token minted
-- (never its value), as the box's tokens.sqlite holds them for a server
-- alone; a count of the changes, for the servers to notice them; and the
-- one-time sign-in links used, until they expire.

CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    client TEXT NOT NULL,
    issued BIGINT NOT NULL,
    expires BIGINT,
    revoked BIGINT
);
CREATE INDEX tokens_by_account ON tokens (account);

CREATE TABLE token_changes (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    changes BIGINT NOT NULL
);
INSERT INTO token_changes (one, changes) VALUES (1, 0);

CREATE TABLE used_links (
    id TEXT PRIMARY KEY,
    until BIGINT NOT NULL
);
