//! `codebox sandbox create|list|info|kill`.

use hyper::Method;
use serde_json::{json, Map, Value};

use crate::cli::OutputFormat;
use crate::client::http::{query, sandbox_path, ApiClient};
use crate::client::output::{self, field, table};
use crate::client::{ClientError, CreateArgs, SandboxCommand};

/// The page size asked for while listing (the API's maximum `limit`).
const PAGE: usize = 100;

pub async fn run(
    api: &ApiClient,
    command: SandboxCommand,
    format: OutputFormat,
) -> Result<(), ClientError> {
    match command {
        SandboxCommand::Create(args) => {
            let view = create(api, &create_body(&args)).await?;
            match format {
                OutputFormat::Json => output::json(&view),
                OutputFormat::Text => {
                    output::stdout(format!("{}\n", field(&view, "id")).as_bytes())
                }
            }
        }
        SandboxCommand::List {
            status,
            metadata,
            limit,
        } => {
            let sandboxes = list(api, status.as_deref(), &metadata, limit).await?;
            match format {
                OutputFormat::Json => output::json(&json!({ "sandboxes": sandboxes })),
                OutputFormat::Text => output::stdout(render_list(&sandboxes).as_bytes()),
            }
        }
        SandboxCommand::Info { id } => {
            let view: Value = api.json(Method::GET, &sandbox_path(&id, ""), None).await?;
            match format {
                OutputFormat::Json => output::json(&view),
                OutputFormat::Text => output::stdout(render_info(&view).as_bytes()),
            }
        }
        SandboxCommand::Kill { ids } => {
            let mut killed = Vec::new();
            for id in &ids {
                let view = kill(api, id).await?;
                if format == OutputFormat::Text {
                    output::stdout(format!("killed {}\n", field(&view, "id")).as_bytes())?;
                }
                killed.push(view);
            }
            match format {
                OutputFormat::Json => output::json(&json!({ "sandboxes": killed })),
                OutputFormat::Text => Ok(()),
            }
        }
    }
}

/// The body of `POST /api/v1/sandboxes`.
pub fn create_body(args: &CreateArgs) -> Value {
    let mut body = json!({ "runtime": args.runtime });
    let mut resources = Map::new();
    if let Some(cpu) = args.cpu {
        resources.insert("cpu".into(), json!(cpu));
    }
    if let Some(memory) = args.memory {
        resources.insert("memory".into(), json!(memory));
    }
    if !resources.is_empty() {
        body["resources"] = Value::Object(resources);
    }
    if let Some(timeout) = args.timeout {
        body["timeout"] = json!(timeout);
    }
    if !args.metadata.is_empty() {
        body["metadata"] = pairs(&args.metadata);
    }
    if !args.env.is_empty() {
        body["env_vars"] = pairs(&args.env);
    }
    body
}

/// `KEY=VALUE` pairs as a JSON object.
pub fn pairs(pairs: &[(String, String)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(key, value)| (key.clone(), Value::from(value.clone())))
            .collect(),
    )
}

/// Creates a sandbox; its view.
pub async fn create(api: &ApiClient, body: &Value) -> Result<Value, ClientError> {
    api.json(Method::POST, "/api/v1/sandboxes", Some(body))
        .await
}

/// Kills a sandbox; its final view.
pub async fn kill(api: &ApiClient, id: &str) -> Result<Value, ClientError> {
    api.json(Method::DELETE, &sandbox_path(id, ""), None).await
}

/// Every page (or the first `limit` sandboxes), newest first.
async fn list(
    api: &ApiClient,
    status: Option<&str>,
    metadata: &[(String, String)],
    limit: Option<usize>,
) -> Result<Vec<Value>, ClientError> {
    let mut sandboxes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let wanted = limit.map_or(PAGE, |limit| {
            limit.saturating_sub(sandboxes.len()).clamp(1, PAGE)
        });
        let wanted = wanted.to_string();
        let labels: Vec<(String, &str)> = metadata
            .iter()
            .map(|(key, value)| (format!("metadata.{key}"), value.as_str()))
            .collect();
        let mut params: Vec<(&str, &str)> = vec![("limit", wanted.as_str())];
        if let Some(status) = status {
            params.push(("status", status));
        }
        if let Some(cursor) = &cursor {
            params.push(("cursor", cursor));
        }
        params.extend(labels.iter().map(|(key, value)| (key.as_str(), *value)));
        let page: Value = api
            .json(
                Method::GET,
                &format!("/api/v1/sandboxes{}", query(&params)),
                None,
            )
            .await?;
        if let Some(items) = page.get("sandboxes").and_then(Value::as_array) {
            sandboxes.extend(items.iter().cloned());
        }
        if limit.is_some_and(|limit| sandboxes.len() >= limit) {
            sandboxes.truncate(limit.unwrap_or(usize::MAX));
            return Ok(sandboxes);
        }
        match page.get("next_cursor").and_then(Value::as_str) {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(sandboxes),
        }
    }
}

fn render_list(sandboxes: &[Value]) -> String {
    let rows: Vec<Vec<String>> = sandboxes
        .iter()
        .map(|view| {
            vec![
                field(view, "id").to_owned(),
                field(view, "status").to_owned(),
                field(view, "runtime").to_owned(),
                field(view, "created_at").to_owned(),
                field(view, "expires_at").to_owned(),
                labels(view),
            ]
        })
        .collect();
    table(
        &["ID", "STATUS", "RUNTIME", "CREATED", "EXPIRES", "METADATA"],
        &rows,
    )
}

/// `k=v,k=v`, or `-`.
fn labels(view: &Value) -> String {
    match view.get("metadata").and_then(Value::as_object) {
        Some(map) if !map.is_empty() => map
            .iter()
            .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(","),
        _ => "-".to_owned(),
    }
}

fn render_info(view: &Value) -> String {
    let resources = view.get("resources");
    let cpu = resources
        .and_then(|r| r.get("cpu"))
        .map_or_else(|| "-".to_owned(), Value::to_string);
    let memory = resources
        .and_then(|r| r.get("memory"))
        .map_or_else(|| "-".to_owned(), |memory| format!("{memory} MiB"));
    let mut lines = vec![
        ("id", field(view, "id").to_owned()),
        ("status", field(view, "status").to_owned()),
        ("runtime", field(view, "runtime").to_owned()),
        ("cpu", cpu),
        ("memory", memory),
        ("isolation", field(view, "isolation").to_owned()),
        ("metadata", labels(view)),
        ("created_at", field(view, "created_at").to_owned()),
        ("expires_at", field(view, "expires_at").to_owned()),
    ];
    for optional in ["termination_reason", "ended_at"] {
        if let Some(value) = view.get(optional).and_then(Value::as_str) {
            lines.push((optional, value.to_owned()));
        }
    }
    lines
        .iter()
        .map(|(name, value)| format!("{name:<11} {value}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_create_body_sends_only_what_was_given() {
        let mut args = CreateArgs {
            runtime: "python3".into(),
            cpu: None,
            memory: None,
            timeout: None,
            metadata: Vec::new(),
            env: Vec::new(),
        };
        assert_eq!(create_body(&args), json!({"runtime": "python3"}));
        args.cpu = Some(0.5);
        args.memory = Some(256);
        args.timeout = Some(60);
        args.metadata = vec![("team".into(), "data".into())];
        args.env = vec![("A".into(), "1=2".into())];
        assert_eq!(
            create_body(&args),
            json!({"runtime": "python3", "resources": {"cpu": 0.5, "memory": 256},
                   "timeout": 60, "metadata": {"team": "data"}, "env_vars": {"A": "1=2"}})
        );
    }

    #[test]
    fn info_lists_the_fields_people_look_for() {
        let view = json!({"id": "abc", "status": "running", "runtime": "python3",
            "resources": {"cpu": 1.0, "memory": 512}, "isolation": "namespaces",
            "metadata": {}, "created_at": "t0", "expires_at": "t1"});
        let text = render_info(&view);
        assert!(text.contains("memory      512 MiB\n"), "{text}");
        assert!(text.contains("metadata    -\n"), "{text}");
        assert!(!text.contains("ended_at"), "{text}");
    }
}
