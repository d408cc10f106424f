-- The index of every account: the same tables as the embedded SQLite index
-- (boxsync/server/index.py) in its latest version, one schema for all
-- accounts. Paths sort by their bytes (COLLATE "C"), as in SQLite; flags
-- are integers 0/1, as there.

CREATE TABLE files (
    account TEXT NOT NULL,
    path TEXT COLLATE "C" NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    origin TEXT NOT NULL DEFAULT '',
    ctime_ns BIGINT NOT NULL DEFAULT 0,
    committed_ns BIGINT NOT NULL DEFAULT 0,
    executable INTEGER NOT NULL DEFAULT 0,
    folder INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account, path)
);
CREATE INDEX files_by_seq ON files (account, seq);
CREATE INDEX files_by_sha256 ON files (account, sha256);

-- The latest seq of each account; its row is locked by each commit until
-- it ends, so no two commits anywhere hand out the same seq.
CREATE TABLE accounts (
    account TEXT PRIMARY KEY,
    seq BIGINT NOT NULL
);

CREATE TABLE versions (
    account TEXT NOT NULL,
    seq BIGINT NOT NULL,
    path TEXT COLLATE "C" NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    origin TEXT NOT NULL,
    ended_seq BIGINT NOT NULL,
    ended_ns BIGINT NOT NULL,
    committed_ns BIGINT NOT NULL DEFAULT 0,
    executable INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account, seq)
);
CREATE INDEX versions_by_path ON versions (account, path, seq);
CREATE INDEX versions_by_end ON versions (account, ended_ns);
CREATE INDEX versions_by_sha256 ON versions (account, sha256);

CREATE TABLE blocks (
    account TEXT NOT NULL,
    seq BIGINT NOT NULL,
    n INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    "offset" BIGINT NOT NULL,
    size BIGINT NOT NULL,
    held INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (account, seq, n)
);
CREATE INDEX blocks_by_hash ON blocks (account, sha256);

CREATE TABLE recipes (
    account TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (account, seq)
);
