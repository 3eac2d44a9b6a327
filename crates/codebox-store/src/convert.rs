//! Conversions shared by both SQL backends between records and column values.

use std::collections::BTreeMap;

use codebox_types::{SandboxStatus, TerminationReason};
use time::OffsetDateTime;

use crate::sql_error::{corrupt, internal, InvalidArgument};
use crate::StoreError;

/// Microseconds since the epoch (floored). Always fits: `time`'s ±9999-year
/// range is about 3.2e17 microseconds.
pub(crate) fn micros(at: OffsetDateTime) -> i64 {
    let value = at.unix_timestamp_nanos().div_euclid(1000);
    i64::try_from(value).expect("±9999 years in microseconds fits in i64")
}

pub(crate) fn from_micros(
    operation: &'static str,
    column: &'static str,
    value: i64,
) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(value) * 1000)
        .map_err(|_| corrupt(operation, column))
}

pub(crate) fn optional_from_micros(
    operation: &'static str,
    column: &'static str,
    value: Option<i64>,
) -> Result<Option<OffsetDateTime>, StoreError> {
    value
        .map(|value| from_micros(operation, column, value))
        .transpose()
}

pub(crate) fn status(operation: &'static str, value: &str) -> Result<SandboxStatus, StoreError> {
    SandboxStatus::parse(value).ok_or_else(|| corrupt(operation, "status"))
}

pub(crate) fn reason(
    operation: &'static str,
    value: Option<&str>,
) -> Result<Option<TerminationReason>, StoreError> {
    value
        .map(|value| {
            TerminationReason::parse(value).ok_or_else(|| corrupt(operation, "termination_reason"))
        })
        .transpose()
}

pub(crate) fn metadata_to_json(metadata: &BTreeMap<String, String>) -> String {
    serde_json::to_string(metadata).expect("a map of strings always serialises")
}

pub(crate) fn metadata_from_json(
    operation: &'static str,
    value: &str,
) -> Result<BTreeMap<String, String>, StoreError> {
    serde_json::from_str(value).map_err(|_| corrupt(operation, "metadata"))
}

/// Unsigned counters are stored as SQL `BIGINT`; values past `i64::MAX` are
/// saturated (no real duration or size gets there).
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(
    operation: &'static str,
    column: &'static str,
    value: i64,
) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(operation, column))
}

/// `end_sandbox` only moves to an ended state.
pub(crate) fn check_end_status(
    operation: &'static str,
    status: SandboxStatus,
) -> Result<(), StoreError> {
    if status.is_live() {
        return Err(internal(
            operation,
            InvalidArgument {
                what: "end_sandbox needs an ended status (terminated or failed)",
            },
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_round_trip_and_floor() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789)
            .expect("valid time");
        let stored = micros(at);
        assert_eq!(stored, 1_700_000_000_123_456);
        let back = from_micros("test", "at", stored).expect("valid");
        assert_eq!(back, crate::truncate_to_micros(at));
        let before_epoch = OffsetDateTime::from_unix_timestamp_nanos(-1).expect("valid time");
        assert_eq!(micros(before_epoch), -1);
    }

    #[test]
    fn corrupt_values_are_internal_errors() {
        assert!(matches!(
            status("test", "zombie"),
            Err(StoreError::Internal { .. })
        ));
        assert!(matches!(
            metadata_from_json("test", "[1]"),
            Err(StoreError::Internal { .. })
        ));
    }
}
