-- Answers keep the memories and passages recall put in their prompt
-- (ids, titles, markers and scores; never the passages' text).
ALTER TABLE messages ADD COLUMN citations JSONB;
