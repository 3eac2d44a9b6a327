//! Monthly partitions of `executions`. Partitions are created ahead (the
//! current month and the next two) at connect time and by
//! [`super::PostgresStore::ensure_partitions`], which the server calls daily;
//! rows outside every monthly partition land in `executions_default`.
//!
//! Partition DDL cannot take bind parameters, so names and bounds are
//! formatted here, from integers only (never from input).

use sqlx::{PgConnection, PgPool};
use time::{Date, Month, OffsetDateTime};

use crate::sql_error::{map_op, InvalidArgument};
use crate::StoreError;

/// Serialises partition maintenance across processes.
const PARTITION_LOCK: i64 = 0x636f_6465_626f_7802;
/// Months created ahead of the current one.
pub(crate) const MONTHS_AHEAD: u32 = 2;

/// One calendar month, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct MonthStart {
    year: i32,
    month: Month,
}

impl MonthStart {
    pub(crate) fn of(at: OffsetDateTime) -> Self {
        let utc = at.to_offset(time::UtcOffset::UTC);
        Self {
            year: utc.year(),
            month: utc.month(),
        }
    }

    pub(crate) fn next(self) -> Self {
        let year = if self.month == Month::December {
            self.year + 1
        } else {
            self.year
        };
        Self {
            year,
            month: self.month.next(),
        }
    }

    pub(crate) fn start(self) -> OffsetDateTime {
        Date::from_calendar_date(self.year, self.month, 1)
            .expect("the first of a month is a valid date")
            .midnight()
            .assume_utc()
    }

    pub(crate) fn table_name(self) -> String {
        format!("executions_p{:04}{:02}", self.year, u8::from(self.month))
    }

    /// Parses a name made by [`MonthStart::table_name`].
    pub(crate) fn from_table_name(name: &str) -> Option<Self> {
        let digits = name.strip_prefix("executions_p")?;
        if digits.len() != 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let year = digits[..4].parse().ok()?;
        let month = Month::try_from(digits[4..].parse::<u8>().ok()?).ok()?;
        Some(Self { year, month })
    }

    fn literal(self) -> String {
        format!(
            "'{:04}-{:02}-01 00:00:00+00'",
            self.year,
            u8::from(self.month)
        )
    }
}

/// Creates the monthly partitions from `at`'s month through `MONTHS_AHEAD`
/// later that do not exist yet; returns the names created.
pub(crate) async fn ensure(pool: &PgPool, at: OffsetDateTime) -> Result<Vec<String>, StoreError> {
    const OP: &str = "ensure_partitions";
    let mut tx = pool.begin().await.map_err(map_op(OP))?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PARTITION_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(map_op(OP))?;
    let existing = existing(&mut tx).await?;
    let mut created = Vec::new();
    let mut month = MonthStart::of(at);
    for _ in 0..=MONTHS_AHEAD {
        if !existing.contains(&month) {
            create(&mut tx, month).await?;
            created.push(month.table_name());
        }
        month = month.next();
    }
    tx.commit().await.map_err(map_op(OP))?;
    for name in &created {
        tracing::info!(partition = %name, "executions partition created");
    }
    Ok(created)
}

/// The monthly partitions attached to `executions` now.
pub(crate) async fn existing(conn: &mut PgConnection) -> Result<Vec<MonthStart>, StoreError> {
    let names: Vec<String> = sqlx::query_scalar(LIST_PARTITIONS)
        .fetch_all(conn)
        .await
        .map_err(map_op("list_partitions"))?;
    Ok(names
        .iter()
        .filter_map(|name| MonthStart::from_table_name(name))
        .collect())
}

const LIST_PARTITIONS: &str = "SELECT c.relname::text FROM pg_inherits i \
    JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'executions'::regclass";

/// Creates one month's partition. Rows of that month already in the default
/// partition are moved into it first: attaching a range the default
/// partition still holds rows for would fail.
async fn create(conn: &mut PgConnection, month: MonthStart) -> Result<(), StoreError> {
    const OP: &str = "ensure_partitions";
    let name = month.table_name();
    let (from, to) = (month.literal(), month.next().literal());
    if MonthStart::from_table_name(&name) != Some(month) {
        return Err(crate::sql_error::internal(
            OP,
            InvalidArgument {
                what: "partition name out of range",
            },
        ));
    }
    let statements = [
        format!("CREATE TABLE {name} (LIKE executions INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"),
        format!(
            "WITH moved AS (DELETE FROM executions_default \
             WHERE created_at >= {from} AND created_at < {to} RETURNING *) \
             INSERT INTO {name} SELECT * FROM moved"
        ),
        format!(
            "ALTER TABLE executions ATTACH PARTITION {name} FOR VALUES FROM ({from}) TO ({to})"
        ),
    ];
    for statement in statements {
        sqlx::query(&statement)
            .execute(&mut *conn)
            .await
            .map_err(map_op(OP))?;
    }
    Ok(())
}

/// Drops monthly partitions that end at or before `before` (every row in them
/// is due for deletion); returns how many rows they held.
pub(crate) async fn drop_before(
    conn: &mut PgConnection,
    before: OffsetDateTime,
) -> Result<u64, StoreError> {
    const OP: &str = "purge";
    let mut rows = 0u64;
    let names: Vec<String> = sqlx::query_scalar(LIST_PARTITIONS)
        .fetch_all(&mut *conn)
        .await
        .map_err(map_op(OP))?;
    for month in names
        .iter()
        .filter_map(|name| MonthStart::from_table_name(name))
    {
        if month.next().start() > before {
            continue;
        }
        let name = month.table_name();
        let count_sql = format!("SELECT COUNT(*) FROM {name}");
        let count: i64 = sqlx::query_scalar(&count_sql)
            .fetch_one(&mut *conn)
            .await
            .map_err(map_op(OP))?;
        let drop_sql = format!("DROP TABLE {name}");
        sqlx::query(&drop_sql)
            .execute(&mut *conn)
            .await
            .map_err(map_op(OP))?;
        rows += u64::try_from(count).unwrap_or(0);
        tracing::info!(partition = %name, rows = count, "executions partition dropped");
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_months_roll_over() {
        let at = time::macros::datetime!(2026-12-31 23:59:59 UTC);
        let month = MonthStart::of(at);
        assert_eq!(month.table_name(), "executions_p202612");
        assert_eq!(
            MonthStart::from_table_name("executions_p202612"),
            Some(month)
        );
        assert_eq!(month.next().table_name(), "executions_p202701");
        assert_eq!(month.next().literal(), "'2027-01-01 00:00:00+00'");
        assert_eq!(MonthStart::from_table_name("executions_default"), None);
        assert_eq!(MonthStart::from_table_name("executions_p202613"), None);
    }
}
