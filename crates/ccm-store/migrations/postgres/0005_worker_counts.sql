-- A page's `total` without counting on every page: `COUNT(*)` visits every matching row's
-- heap tuple, and a fleet page several clients follow asks for it hundreds of times a second
-- (`ccm bench api`). Workers are counted per value of the three filter columns by
-- statement-level triggers in the writing transaction, so the counts are exactly the table's
-- at every commit, whoever writes. A statement changes a count only when a worker moves
-- between values (a save that moves none writes no count: no contention between replicas),
-- and counts are changed in key order (no deadlock between two statements that both move
-- workers). A list filtered by text or ids still counts rows.
CREATE TABLE worker_counts (
    region         TEXT COLLATE "C" NOT NULL,
    ec2_state      TEXT COLLATE "C" NOT NULL,
    service_status TEXT COLLATE "C" NOT NULL,
    n              BIGINT NOT NULL,
    PRIMARY KEY (region, ec2_state, service_status)
);

INSERT INTO worker_counts (region, ec2_state, service_status, n)
SELECT region, ec2_state, service_status, COUNT(*) FROM workers
GROUP BY region, ec2_state, service_status;

CREATE FUNCTION worker_counts_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO worker_counts AS c (region, ec2_state, service_status, n)
    SELECT region, ec2_state, service_status, COUNT(*) FROM inserted_rows
    GROUP BY region, ec2_state, service_status
    ORDER BY region, ec2_state, service_status
    ON CONFLICT (region, ec2_state, service_status) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END $$;

CREATE FUNCTION worker_counts_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO worker_counts AS c (region, ec2_state, service_status, n)
    SELECT region, ec2_state, service_status, -COUNT(*) FROM deleted_rows
    GROUP BY region, ec2_state, service_status
    ORDER BY region, ec2_state, service_status
    ON CONFLICT (region, ec2_state, service_status) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END $$;

CREATE FUNCTION worker_counts_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO worker_counts AS c (region, ec2_state, service_status, n)
    SELECT region, ec2_state, service_status, SUM(k) FROM (
        SELECT region, ec2_state, service_status, -1 AS k FROM old_rows
        UNION ALL
        SELECT region, ec2_state, service_status, 1 AS k FROM new_rows
    ) AS moves
    GROUP BY region, ec2_state, service_status
    HAVING SUM(k) <> 0
    ORDER BY region, ec2_state, service_status
    ON CONFLICT (region, ec2_state, service_status) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END $$;

CREATE TRIGGER worker_counts_insert AFTER INSERT ON workers
REFERENCING NEW TABLE AS inserted_rows
FOR EACH STATEMENT EXECUTE FUNCTION worker_counts_inserted();

CREATE TRIGGER worker_counts_delete AFTER DELETE ON workers
REFERENCING OLD TABLE AS deleted_rows
FOR EACH STATEMENT EXECUTE FUNCTION worker_counts_deleted();

CREATE TRIGGER worker_counts_update AFTER UPDATE ON workers
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION worker_counts_updated();
