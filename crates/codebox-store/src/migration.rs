//! The shape of an embedded schema migration. Each backend keeps one ordered
//! list and its own tiny runner (SQLite and Postgres lock differently); both
//! record applied versions in a `schema_migrations` table and apply each
//! migration in its own transaction.

/// One schema step, applied once, in order.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// The statements of a migration: `--` comments removed, then split on `;`.
/// Migration files keep `;` and `--` out of string literals. Executing
/// statements one by one (rather than one multi-statement string) keeps every
/// store future `Send` with sqlx 0.8.
pub(crate) fn statements(sql: &str) -> Vec<String> {
    let code: String = sql
        .lines()
        .map(|line| line.split_once("--").map_or(line, |(code, _comment)| code))
        .collect::<Vec<_>>()
        .join("\n");
    code.split(';')
        .map(str::trim)
        .filter(|statement| !statement.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Versions must be strictly increasing: checked by each backend's tests.
#[cfg(test)]
pub(crate) fn is_ordered(migrations: &[Migration]) -> bool {
    migrations
        .windows(2)
        .all(|pair| pair[0].version < pair[1].version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_ignore_comments() {
        let sql = "-- header; with a semicolon\nCREATE TABLE a (x INT); -- trailing\n\
                   -- note\nCREATE INDEX b ON a (x);\n-- end\n";
        assert_eq!(
            statements(sql),
            vec!["CREATE TABLE a (x INT)", "CREATE INDEX b ON a (x)"]
        );
    }
}
