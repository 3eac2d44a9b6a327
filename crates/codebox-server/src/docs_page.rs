//! `GET /docs`: a self-contained HTML rendering of the OpenAPI document,
//! generated on the server. No script, no CDN: it works offline and cannot load
//! anything a third party controls.

use serde_json::Value;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}\
h2{margin-top:2.5rem;border-bottom:1px solid #ddd}\
.op{border:1px solid #ddd;border-radius:6px;margin:1rem 0;padding:.5rem 1rem}\
.method{display:inline-block;min-width:4.5rem;font-weight:bold;font-family:monospace}\
.get{color:#0a6}.post{color:#06c}.delete{color:#c30}\
code,pre{background:#f5f5f5;font-family:monospace}pre{padding:.5rem;overflow-x:auto}\
.auth{font-size:.8rem;color:#666}";

/// The page for `document`.
pub fn render(document: &Value) -> String {
    let mut html = String::with_capacity(32 * 1024);
    html.push_str("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    html.push_str("<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">");
    html.push_str(&format!(
        "<title>{}</title><style>{STYLE}</style></head><body>",
        escape(text(&document["info"]["title"]))
    ));
    html.push_str(&format!(
        "<h1>{} <small>{}</small></h1><p>{}</p><p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a>. \
         Authenticate with the <code>X-API-Key</code> header or <code>Authorization: Bearer &lt;JWT&gt;</code>.</p>",
        escape(text(&document["info"]["title"])),
        escape(text(&document["info"]["version"])),
        escape(text(&document["info"]["description"])),
    ));
    render_operations(&mut html, document);
    render_schemas(&mut html, document);
    html.push_str("</body></html>");
    html
}

fn render_operations(html: &mut String, document: &Value) {
    html.push_str("<h2>Operations</h2>");
    let Some(paths) = document["paths"].as_object() else {
        return;
    };
    for (path, item) in paths {
        for (method, operation) in item.as_object().into_iter().flatten() {
            render_operation(html, path, method, operation);
        }
    }
}

fn render_operation(html: &mut String, path: &str, method: &str, operation: &Value) {
    let authenticated = operation["security"]
        .as_array()
        .is_some_and(|schemes| !schemes.is_empty());
    html.push_str(&format!(
        "<div class=\"op\" id=\"{id}\"><p><span class=\"method {method}\">{upper}</span><code>{path}</code> \
         <span class=\"auth\">{auth}</span></p><p><strong>{summary}</strong></p><p>{description}</p>",
        id = escape(text(&operation["operationId"])),
        method = escape(method),
        upper = escape(&method.to_ascii_uppercase()),
        path = escape(path),
        auth = if authenticated { "requires authentication" } else { "public" },
        summary = escape(text(&operation["summary"])),
        description = escape(text(&operation["description"])),
    ));
    if let Some(parameters) = operation["parameters"].as_array() {
        html.push_str("<p>Parameters:</p><ul>");
        for parameter in parameters {
            html.push_str(&format!(
                "<li><code>{}</code> ({}) {}</li>",
                escape(text(&parameter["name"])),
                escape(text(&parameter["in"])),
                escape(text(&parameter["description"])),
            ));
        }
        html.push_str("</ul>");
    }
    if let Some(schema) =
        operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str()
    {
        html.push_str(&format!(
            "<p>Body: <a href=\"#schema-{name}\"><code>{name}</code></a></p>",
            name = escape(schema.rsplit('/').next().unwrap_or(schema)),
        ));
    }
    html.push_str("<p>Responses:</p><ul>");
    for (status, response) in operation["responses"].as_object().into_iter().flatten() {
        html.push_str(&format!(
            "<li><code>{}</code> {}</li>",
            escape(status),
            escape(text(&response["description"]))
        ));
    }
    html.push_str("</ul></div>");
}

fn render_schemas(html: &mut String, document: &Value) {
    html.push_str("<h2>Schemas</h2>");
    for (name, schema) in document["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let pretty = serde_json::to_string_pretty(schema).unwrap_or_default();
        html.push_str(&format!(
            "<h3 id=\"schema-{name}\">{name}</h3><pre>{}</pre>",
            escape(&pretty),
            name = escape(name),
        ));
    }
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// Escapes the five characters that matter in HTML text and attributes.
fn escape(raw: &str) -> String {
    let mut escaped = String::with_capacity(raw.len());
    for character in raw.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn renders_operations_and_escapes_text() {
        let document = json!({
            "info": {"title": "t", "version": "1", "description": "<b>x</b>"},
            "paths": {"/a/{id}": {"get": {"operationId": "get_a", "summary": "Get <a>",
                "description": "d", "security": [], "responses": {"200": {"description": "ok"}}}}},
            "components": {"schemas": {"A": {"type": "object"}}}
        });
        let page = render(&document);
        assert!(page.contains("<code>/a/{id}</code>"));
        assert!(page.contains("Get &lt;a&gt;"));
        assert!(page.contains("&lt;b&gt;x&lt;/b&gt;"));
        assert!(!page.contains("<script"));
        assert!(page.contains("id=\"schema-A\""));
    }
}
