//! `docs/api-errors.md` documents every code of the catalogue, with its status.

use codebox_types::ErrorCode;

const DOC: &str = include_str!("../../../../docs/api-errors.md");

#[test]
fn every_error_code_is_documented_with_its_status() {
    for code in ErrorCode::ALL {
        let row = format!("| `{}` | {} |", code.as_str(), code.http_status());
        assert!(
            DOC.contains(&row),
            "docs/api-errors.md lacks the table row {row}"
        );
        let section = format!("### `{}` ({})", code.as_str(), code.http_status());
        assert!(
            DOC.contains(&section),
            "docs/api-errors.md lacks the section {section}"
        );
    }
}

#[test]
fn the_doc_names_no_code_outside_the_catalogue() {
    for line in DOC.lines().filter(|line| line.starts_with("### `")) {
        let name = line
            .trim_start_matches("### `")
            .split('`')
            .next()
            .unwrap_or_default();
        assert!(
            ErrorCode::ALL.iter().any(|code| code.as_str() == name),
            "{name} is documented but not in the catalogue"
        );
    }
}
