-- The worker list sorts by one column and then by id, a page at a time (`WorkerRepo::list`):
-- one index per sort key, ending with id, so a page can be read in index order and stop after
-- `limit` rows instead of sorting the whole filtered fleet (`ccm bench api`). The filter
-- columns keep an index each (the same ones, now ending with id).
DROP INDEX workers_region;
DROP INDEX workers_ec2_state;
DROP INDEX workers_service_status;
DROP INDEX workers_name;
CREATE INDEX workers_region ON workers (region, id);
CREATE INDEX workers_ec2_state ON workers (ec2_state, id);
CREATE INDEX workers_service_status ON workers (service_status, id);
CREATE INDEX workers_name ON workers (name, id);
CREATE INDEX workers_created ON workers (created_at_ms, id);
CREATE INDEX workers_updated ON workers (updated_at_ms, id);
