-- The worker list sorts by one column and then by id, a page at a time (`WorkerRepo::list`).
-- One index per sort key: the key, id, then the filter columns. A page's ids are read in the
-- index's order, the filters checked from the index itself (the list's query tells SQLite not
-- to use the filter columns' own indexes for it), and reading stops after `limit` matches —
-- instead of sorting the whole filtered fleet with its documents (10,000 documents per request
-- while every sync rewrote `updated_at_ms`: ~1 s per page under load, `ccm bench api`).
-- The leading column of the region, state and service indexes still serves their filters
-- (the count).
DROP INDEX workers_region;
DROP INDEX workers_ec2_state;
DROP INDEX workers_service_status;
DROP INDEX workers_name;
CREATE INDEX workers_region ON workers (region, id, ec2_state, service_status);
CREATE INDEX workers_ec2_state ON workers (ec2_state, id, region, service_status);
CREATE INDEX workers_service_status ON workers (service_status, id, region, ec2_state);
CREATE INDEX workers_name ON workers (name, id, region, ec2_state, service_status);
CREATE INDEX workers_created ON workers (created_at_ms, id, region, ec2_state, service_status);
CREATE INDEX workers_updated ON workers (updated_at_ms, id, region, ec2_state, service_status);
