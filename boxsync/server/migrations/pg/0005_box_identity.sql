-- The box's id, made once: every server of the index tells it to the
-- clients, which notice a box that is not the one they synced with.

CREATE TABLE box_identity (
    id TEXT NOT NULL
);
INSERT INTO box_identity (id) VALUES (replace(gen_random_uuid()::text, '-', ''));
