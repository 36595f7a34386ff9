-- Run once by the postgres image on a new data volume (docker-entrypoint-initdb.d): the
-- podscribe catalog gets its own database beside Prefect's. podscribe creates its tables.
CREATE DATABASE podscribe OWNER prefect;
