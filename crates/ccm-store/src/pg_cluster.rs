//! [`ClusterRepo`] on PostgreSQL: the `replicas` and `leases` tables (migration
//! `0003_cluster.sql`). Every time comparison is made by the server (`now()`).

use std::time::Duration;

use async_trait::async_trait;

use sqlx::postgres::PgListener;

use crate::cluster::{
    Acquired, ClusterRepo, LeaseRecord, Notifications, ReplicaRecord, ReplicaRow,
};
use crate::common::{from_ms, ms};
use crate::{PgStore, Result};

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn duration(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

#[async_trait]
impl ClusterRepo for PgStore {
    async fn heartbeat(&self, me: &ReplicaRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO replicas (id, address, version, started_at_ms, heartbeat_at) \
             VALUES ($1, $2, $3, $4, now()) \
             ON CONFLICT (id) DO UPDATE SET address = EXCLUDED.address, \
             version = EXCLUDED.version, heartbeat_at = now()",
        )
        .bind(&me.id)
        .bind(&me.address)
        .bind(&me.version)
        .bind(ms(me.started_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn replicas(&self) -> Result<Vec<ReplicaRow>> {
        let rows: Vec<(String, String, String, i64, i64)> = sqlx::query_as(
            "SELECT id, address, version, started_at_ms, \
             GREATEST(0, (EXTRACT(EPOCH FROM (now() - heartbeat_at)) * 1000))::bigint \
             FROM replicas ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, address, version, started, age)| ReplicaRow {
                record: ReplicaRecord {
                    id,
                    address,
                    version,
                    started_at: from_ms(started),
                },
                heartbeat_age: duration(age),
            })
            .collect())
    }

    async fn forget(&self, id: &str, forget_after: Duration) -> Result<()> {
        sqlx::query(
            "DELETE FROM replicas WHERE id = $1 \
             OR heartbeat_at < now() - $2::bigint * interval '1 millisecond'",
        )
        .bind(id)
        .bind(millis(forget_after))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn acquire(&self, holder: &str, keys: &[String], ttl: Duration) -> Result<Vec<Acquired>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // `prev` reads the rows as they were before this statement (same snapshot), so the
        // previous holder can be returned; a row is taken only when free or expired.
        let rows: Vec<(String, i64, Option<String>)> = sqlx::query_as(
            "WITH prev AS (SELECT key, holder FROM leases WHERE key = ANY($2)) \
             INSERT INTO leases AS l (key, holder, fence, expires_at) \
             SELECT k, $1, 1, now() + $3::bigint * interval '1 millisecond' \
             FROM unnest($2::text[]) AS k ORDER BY k \
             ON CONFLICT (key) DO UPDATE SET holder = EXCLUDED.holder, fence = l.fence + 1, \
             expires_at = EXCLUDED.expires_at \
             WHERE l.expires_at <= now() \
             RETURNING l.key, l.fence, (SELECT p.holder FROM prev p WHERE p.key = l.key)",
        )
        .bind(holder)
        .bind(keys)
        .bind(millis(ttl))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(key, fence, previous)| Acquired {
                key,
                fence: u64::try_from(fence).unwrap_or(0),
                previous_holder: previous.unwrap_or_default(),
            })
            .collect())
    }

    async fn renew(
        &self,
        holder: &str,
        held: &[(String, u64)],
        ttl: Duration,
    ) -> Result<Vec<String>> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let (keys, fences): (Vec<&str>, Vec<i64>) = held
            .iter()
            .map(|(k, f)| (k.as_str(), i64::try_from(*f).unwrap_or(i64::MAX)))
            .unzip();
        // Rows are locked in key order first, as `acquire` locks them (`ORDER BY k`): a
        // replica lists what it holds in any order, and two statements locking overlapping
        // rows in different orders deadlock (PostgreSQL then aborts one, a lease round lost).
        let renewed: Vec<String> = sqlx::query_scalar(
            "WITH locked AS MATERIALIZED (SELECT l.key FROM leases AS l \
               JOIN unnest($2::text[], $3::bigint[]) AS h(key, fence) \
                 ON l.key = h.key AND l.fence = h.fence \
               WHERE l.holder = $1 AND l.expires_at > now() ORDER BY l.key FOR UPDATE OF l) \
             UPDATE leases AS l SET expires_at = now() + $4::bigint * interval '1 millisecond' \
             FROM locked WHERE l.key = locked.key \
             RETURNING l.key",
        )
        .bind(holder)
        .bind(&keys)
        .bind(&fences)
        .bind(millis(ttl))
        .fetch_all(&self.pool)
        .await?;
        Ok(renewed)
    }

    async fn release(&self, holder: &str, held: &[(String, u64)]) -> Result<u64> {
        if held.is_empty() {
            return Ok(0);
        }
        let (keys, fences): (Vec<&str>, Vec<i64>) = held
            .iter()
            .map(|(k, f)| (k.as_str(), i64::try_from(*f).unwrap_or(i64::MAX)))
            .unzip();
        // Key order, as in `renew`.
        let done = sqlx::query(
            "WITH locked AS MATERIALIZED (SELECT l.key FROM leases AS l \
               JOIN unnest($2::text[], $3::bigint[]) AS h(key, fence) \
                 ON l.key = h.key AND l.fence = h.fence \
               WHERE l.holder = $1 ORDER BY l.key FOR UPDATE OF l) \
             UPDATE leases AS l SET expires_at = now(), holder = '' \
             FROM locked WHERE l.key = locked.key",
        )
        .bind(holder)
        .bind(&keys)
        .bind(&fences)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn listen(&self, channels: &[&str]) -> Result<Box<dyn Notifications>> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen_all(channels.iter().copied()).await?;
        Ok(Box::new(Listener(listener)))
    }

    async fn leases(&self) -> Result<Vec<LeaseRecord>> {
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT key, holder, fence, \
             GREATEST(0, (EXTRACT(EPOCH FROM (expires_at - now())) * 1000))::bigint \
             FROM leases WHERE expires_at > now() ORDER BY key",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(key, holder, fence, left)| LeaseRecord {
                key,
                holder,
                fence: u64::try_from(fence).unwrap_or(0),
                remaining: duration(left),
            })
            .collect())
    }
}

struct Listener(PgListener);

#[async_trait]
impl Notifications for Listener {
    async fn recv(&mut self) -> Result<(String, String)> {
        let n = self.0.recv().await?;
        Ok((n.channel().to_owned(), n.payload().to_owned()))
    }
}
