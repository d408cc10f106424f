-- The clients panel across servers: each server's report of the clients it
-- serves (a JSON list, by account), and when each server last reported.

CREATE TABLE server_reports (
    server TEXT PRIMARY KEY,
    reported DOUBLE PRECISION NOT NULL
);

CREATE TABLE clients_seen (
    server TEXT NOT NULL,
    account TEXT NOT NULL,
    clients TEXT NOT NULL,
    PRIMARY KEY (account, server)
);
