//! Renders the reference part of `docs/configuration.md` from the code: the
//! environment-variable registry and the default YAML. A test in this crate
//! fails when the checked-in document drifts from it.

use crate::env::REGISTRY;
use crate::model::CodeboxConfig;

/// Marks the start of the generated section in `docs/configuration.md`.
pub const BEGIN_MARKER: &str = "<!-- BEGIN GENERATED: codebox-config -->";
/// Marks its end.
pub const END_MARKER: &str = "<!-- END GENERATED: codebox-config -->";

/// The generated section, markers included.
pub fn render_reference() -> String {
    let mut out = String::new();
    out.push_str(BEGIN_MARKER);
    out.push_str("\n\n## Environment variables\n\n");
    out.push_str("| variable | config key | meaning |\n|---|---|---|\n");
    for var in REGISTRY {
        let doc = var.doc.split_whitespace().collect::<Vec<_>>().join(" ");
        out.push_str(&format!(
            "| `{}` | `{}` | {} |\n",
            var.name,
            var.key,
            doc.replace('|', "\\|")
        ));
    }
    out.push_str("\n## Defaults\n\nThe effective configuration with no file and no environment ");
    out.push_str("(`codebox config print` shows yours):\n\n```yaml\n");
    out.push_str(&default_yaml());
    out.push_str("```\n\n");
    out.push_str(END_MARKER);
    out.push('\n');
    out
}

/// The defaults as YAML.
pub fn default_yaml() -> String {
    serde_yaml::to_string(&CodeboxConfig::default()).expect("the config tree always serialises")
}

/// Replaces the generated section of `document` (or appends it).
pub fn splice_reference(document: &str) -> String {
    let generated = render_reference();
    match (document.find(BEGIN_MARKER), document.find(END_MARKER)) {
        (Some(start), Some(end)) if end > start => {
            let after = &document[end + END_MARKER.len()..];
            let after = after.strip_prefix('\n').unwrap_or(after);
            format!("{}{generated}{after}", &document[..start])
        }
        _ => format!("{document}\n{generated}"),
    }
}
