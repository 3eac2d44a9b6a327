//! A codebox result (a MIME bundle of strings) as the fields of E2B's
//! `Result`: `text/plain`→`text` (one surrounding pair of quotes stripped, as
//! upstream does), `image/png`→`png` (base64), `application/json`→`json` (an
//! object), `e2b/data`→`data`, `e2b/chart`→`chart`, the other well-known types
//! to their fields, everything else into `extra`.

use serde_json::{Map, Value};

use codebox_core::ResultView;

/// MIME types with a string field of their own.
const STRING_FIELDS: &[(&str, &str)] = &[
    ("text/html", "html"),
    ("text/markdown", "markdown"),
    ("image/svg+xml", "svg"),
    ("image/png", "png"),
    ("image/jpeg", "jpeg"),
    ("application/pdf", "pdf"),
    ("text/latex", "latex"),
    ("application/javascript", "javascript"),
];

/// MIME types whose value is JSON text, sent as an object.
const JSON_FIELDS: &[(&str, &str)] = &[
    ("application/json", "json"),
    ("e2b/data", "data"),
    ("e2b/chart", "chart"),
];

/// One `{"type": "result", ...}` line's object.
pub fn result_line(result: &ResultView) -> Value {
    let mut line = Map::new();
    line.insert("type".to_owned(), Value::from("result"));
    let mut extra = Map::new();
    for (mime, value) in &result.data {
        if mime == "text/plain" {
            line.insert("text".to_owned(), Value::from(strip_quotes(value)));
        } else if let Some((_, field)) = STRING_FIELDS.iter().find(|(m, _)| m == mime) {
            line.insert((*field).to_owned(), Value::from(value.as_str()));
        } else if let Some((_, field)) = JSON_FIELDS.iter().find(|(m, _)| m == mime) {
            match serde_json::from_str::<Value>(value) {
                Ok(parsed @ (Value::Object(_) | Value::Array(_))) => {
                    line.insert((*field).to_owned(), parsed);
                }
                // Not the object the SDKs expect: keep it, but out of their way.
                _ => {
                    extra.insert(mime.clone(), Value::from(value.as_str()));
                }
            }
        } else {
            extra.insert(mime.clone(), Value::from(value.as_str()));
        }
    }
    if result.truncated {
        extra.insert("truncated".to_owned(), Value::Bool(true));
    }
    line.insert("extra".to_owned(), Value::Object(extra));
    line.insert(
        "is_main_result".to_owned(),
        Value::Bool(result.is_main_result),
    );
    Value::Object(line)
}

/// `'abc'` → `abc` and `"abc"` → `abc`; anything else unchanged.
pub fn strip_quotes(text: &str) -> &str {
    for quote in ['\'', '"'] {
        if text.len() >= 2 && text.starts_with(quote) && text.ends_with(quote) {
            return &text[1..text.len() - 1];
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn view(pairs: &[(&str, &str)], main: bool) -> ResultView {
        ResultView {
            data: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            is_main_result: main,
            truncated: false,
        }
    }

    #[test]
    fn quotes_are_stripped_once() {
        assert_eq!(strip_quotes("'abc'"), "abc");
        assert_eq!(strip_quotes("\"abc\""), "abc");
        assert_eq!(strip_quotes("''x''"), "'x'");
        assert_eq!(strip_quotes("'"), "'");
        assert_eq!(strip_quotes("'abc\""), "'abc\"");
        assert_eq!(strip_quotes("2"), "2");
    }

    #[test]
    fn bundles_map_to_result_fields() {
        let line = result_line(&view(
            &[
                ("text/plain", "'hi'"),
                ("image/png", "iVBOR"),
                ("application/json", "{\"a\":1}"),
                ("e2b/data", "not json"),
                ("application/vnd.custom", "x"),
            ],
            true,
        ));
        assert_eq!(
            line,
            serde_json::json!({
                "type": "result",
                "text": "hi",
                "png": "iVBOR",
                "json": {"a": 1},
                "extra": {"e2b/data": "not json", "application/vnd.custom": "x"},
                "is_main_result": true,
            })
        );
        let minimal = result_line(&view(&[("text/plain", "2")], true));
        assert_eq!(
            minimal,
            serde_json::json!({"type": "result", "text": "2", "extra": {}, "is_main_result": true})
        );
    }
}
