//! The one integration-test binary of codebox-store: the Store conformance
//! suite (run against SQLite and Postgres), the Redis cache and the rate
//! limiters.
//!
//! Postgres and Redis come from `CODEBOX_TEST_DATABASE_URL` and
//! `CODEBOX_TEST_REDIS_URL` (defaults: the local services). When one is
//! unreachable its tests are skipped with a note on stderr, unless
//! `CODEBOX_REQUIRE_SERVICES=1` (CI), which makes them fail.

mod conformance;
mod nodes;
mod postgres;
mod redis_layer;
mod sqlite;
mod support;
