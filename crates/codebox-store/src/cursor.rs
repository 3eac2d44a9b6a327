//! Opaque pagination cursors: base64url of `<created_at micros>:<id>`, the
//! sort key of the last item of a page (listings are newest first, ties broken
//! by id). Clients must treat them as opaque; anything we did not issue is
//! rejected as [`StoreError::InvalidCursor`].

use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::StoreError;

/// Longer strings are rejected before decoding (a real cursor is ~60 bytes).
const MAX_CURSOR_LEN: usize = 128;
/// The largest page; `limit` is clamped to `1..=MAX_PAGE`.
pub(crate) const MAX_PAGE: u32 = 100;

/// The position after which the next page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Position {
    pub created_at_micros: i64,
    pub id: String,
}

pub(crate) fn encode(created_at_micros: i64, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{created_at_micros}:{id}"))
}

/// Decodes a cursor whose id must parse as `Id`.
pub(crate) fn decode<Id: FromStr>(cursor: &str) -> Result<Position, StoreError> {
    if cursor.len() > MAX_CURSOR_LEN {
        return Err(StoreError::InvalidCursor);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| StoreError::InvalidCursor)?;
    let text = String::from_utf8(bytes).map_err(|_| StoreError::InvalidCursor)?;
    let (micros, id) = text.split_once(':').ok_or(StoreError::InvalidCursor)?;
    let created_at_micros = micros.parse().map_err(|_| StoreError::InvalidCursor)?;
    id.parse::<Id>().map_err(|_| StoreError::InvalidCursor)?;
    Ok(Position {
        created_at_micros,
        id: id.to_owned(),
    })
}

/// The page size to ask the database for: the clamped limit plus one row that
/// tells whether another page follows.
pub(crate) fn clamp_limit(limit: u32) -> u32 {
    limit.clamp(1, MAX_PAGE)
}

/// Cuts a `limit + 1` result down to `limit` and derives the next cursor from
/// the last item kept.
pub(crate) fn paginate<T>(
    mut rows: Vec<T>,
    limit: u32,
    key: impl Fn(&T) -> (i64, String),
) -> crate::Page<T> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    let next_cursor = match rows.last() {
        Some(last) if has_more => {
            let (micros, id) = key(last);
            Some(encode(micros, &id))
        }
        _ => None,
    };
    crate::Page {
        items: rows,
        next_cursor,
    }
}

#[cfg(test)]
mod tests {
    use codebox_types::SandboxId;

    use super::*;

    #[test]
    fn round_trips() {
        let id = SandboxId::generate();
        let cursor = encode(-42, id.as_str());
        let position = decode::<SandboxId>(&cursor).expect("valid cursor");
        assert_eq!(position.created_at_micros, -42);
        assert_eq!(position.id, id.as_str());
    }

    #[test]
    fn rejects_foreign_cursors() {
        for bad in [
            "",
            "!!!",
            &URL_SAFE_NO_PAD.encode("12:not-an-id"),
            &URL_SAFE_NO_PAD.encode("x:abcdefghijklmnopqrstuvwxyz"),
            &URL_SAFE_NO_PAD.encode("12"),
            &"a".repeat(500),
        ] {
            assert!(
                matches!(decode::<SandboxId>(bad), Err(StoreError::InvalidCursor)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn limit_is_clamped() {
        assert_eq!(clamp_limit(0), 1);
        assert_eq!(clamp_limit(7), 7);
        assert_eq!(clamp_limit(10_000), MAX_PAGE);
    }

    #[test]
    fn paginate_sets_cursor_only_when_more_rows_exist() {
        let page = paginate(vec![(3, "c"), (2, "b"), (1, "a")], 2, |row| {
            (row.0, row.1.to_owned())
        });
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.next_cursor, Some(encode(2, "b")));
        let last = paginate(vec![(1, "a")], 2, |row| (row.0, row.1.to_owned()));
        assert_eq!(last.next_cursor, None);
    }
}
