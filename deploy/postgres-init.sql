-- Run by the postgres image once, on a new data volume (docker-entrypoint-initdb.d): localnemo's render queue
-- lives in a database of its own, beside the bot's (POSTGRES_DB=nemobot).
CREATE DATABASE localnemo OWNER nemobot;
