-- A page's `total` without counting an index on every page: `COUNT(*)` over the ec2_state
-- index is ~0.5 ms at 10,000 workers, and a fleet page several clients follow asks for it
-- hundreds of times a second (`ccm bench api`). Workers are counted per value of the three
-- filter columns, by triggers in the writing transaction, so the counts are exactly the
-- table's at every commit, whoever writes. A list filtered by text or ids still counts rows.
CREATE TABLE worker_counts (
    region         TEXT NOT NULL,
    ec2_state      TEXT NOT NULL,
    service_status TEXT NOT NULL,
    n              INTEGER NOT NULL,
    PRIMARY KEY (region, ec2_state, service_status)
) WITHOUT ROWID;

INSERT INTO worker_counts (region, ec2_state, service_status, n)
SELECT region, ec2_state, service_status, COUNT(*) FROM workers
GROUP BY region, ec2_state, service_status;

CREATE TRIGGER worker_counts_insert AFTER INSERT ON workers BEGIN
    INSERT INTO worker_counts (region, ec2_state, service_status, n)
    VALUES (NEW.region, NEW.ec2_state, NEW.service_status, 1)
    ON CONFLICT (region, ec2_state, service_status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER worker_counts_delete AFTER DELETE ON workers BEGIN
    UPDATE worker_counts SET n = n - 1
    WHERE region = OLD.region AND ec2_state = OLD.ec2_state
      AND service_status = OLD.service_status;
END;

-- Every save sets these columns; only a change of one of them moves the worker's count.
CREATE TRIGGER worker_counts_update AFTER UPDATE OF region, ec2_state, service_status ON workers
WHEN OLD.region IS NOT NEW.region OR OLD.ec2_state IS NOT NEW.ec2_state
  OR OLD.service_status IS NOT NEW.service_status
BEGIN
    UPDATE worker_counts SET n = n - 1
    WHERE region = OLD.region AND ec2_state = OLD.ec2_state
      AND service_status = OLD.service_status;
    INSERT INTO worker_counts (region, ec2_state, service_status, n)
    VALUES (NEW.region, NEW.ec2_state, NEW.service_status, 1)
    ON CONFLICT (region, ec2_state, service_status) DO UPDATE SET n = n + 1;
END;
