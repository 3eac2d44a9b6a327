//! What the client commands print: tables and `key: value` lines for people,
//! one JSON document for programs (`--output json`), and the raw output of
//! code and commands passed through as it arrives.

use std::io::Write as _;

use serde_json::Value;

use crate::client::ClientError;

/// Writes to stdout and flushes (streamed output must show at once).
pub fn stdout(bytes: &[u8]) -> Result<(), ClientError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|error| ClientError::local("cannot write to stdout", error))
}

/// Writes to stderr and flushes. A closed stderr is not worth failing for.
pub fn stderr(bytes: &[u8]) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(bytes).and_then(|()| err.flush());
}

/// One JSON document on stdout, pretty-printed, with a final newline.
pub fn json(value: &Value) -> Result<(), ClientError> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|error| ClientError::Protocol(format!("cannot print JSON: {error}")))?;
    text.push('\n');
    stdout(text.as_bytes())
}

/// A string field of a JSON object, or `-`.
pub fn field<'a>(value: &'a Value, name: &str) -> &'a str {
    value.get(name).and_then(Value::as_str).unwrap_or("-")
}

/// A table: the header row, then one row per item, columns padded to the
/// widest cell (the last column is not padded).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|cell| cell.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header: Vec<String> = header.iter().map(|cell| (*cell).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (index, cell) in row.iter().enumerate() {
            if index == last {
                text.push_str(cell);
            } else {
                let pad = widths[index].saturating_sub(cell.chars().count());
                text.push_str(cell);
                text.push_str(&" ".repeat(pad + 2));
            }
        }
        text.push('\n');
    }
    text
}

/// A human size: bytes, KiB, MiB, GiB.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Strips control characters (terminal escapes) from text that came from
/// the sandbox before it is shown in a table or message.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_leave_the_last_unpadded() {
        let text = table(
            &["ID", "STATUS", "NAME"],
            &[
                vec!["a".into(), "running".into(), "x".into()],
                vec!["bbbb".into(), "-".into(), "y".into()],
            ],
        );
        assert_eq!(
            text,
            "ID    STATUS   NAME\na     running  x\nbbbb  -        y\n"
        );
    }

    #[test]
    fn sizes_and_hostile_names_are_printable() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 << 20), "3.0 MiB");
        assert_eq!(printable("evil\x1b[2Jname\n"), "evil?[2Jname?");
    }
}
