//! The OpenAPI document: checked in without drift, and in step with the router.

use std::collections::BTreeSet;
use std::path::PathBuf;

use axum::http::{Method, StatusCode};
use codebox_server::openapi::operations;
use codebox_server::openapi_document;

use crate::support::{build, TestApp};

fn checked_in_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../openapi/openapi.json")
}

/// Regenerate with `UPDATE_OPENAPI=1 cargo nextest run -p codebox-server`.
#[test]
fn checked_in_document_has_no_drift() {
    let generated = format!(
        "{}\n",
        serde_json::to_string_pretty(&openapi_document()).expect("serialises")
    );
    let path = checked_in_path();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("openapi/openapi.json is writable");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "openapi/openapi.json is out of date: run `UPDATE_OPENAPI=1 cargo nextest run -p codebox-server`"
    );
}

#[tokio::test]
async fn served_document_is_the_generated_one() {
    let app = TestApp::start().await;
    let reply = app.get("/openapi.json", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), openapi_document());
    assert_eq!(reply.json()["openapi"], "3.1.0");
}

/// Every documented operation is routed (neither the unknown-route fallback
/// nor a 405), and on every documented path the router refuses every method the
/// document does not list: the router serves exactly the document.
#[tokio::test]
async fn router_and_document_describe_the_same_operations() {
    let app = TestApp::start().await;
    let id = app.create_sandbox(&app.alice).await;
    let documented: BTreeSet<(String, String)> =
        operations(&openapi_document()).into_iter().collect();
    assert!(documented.len() >= 13, "{documented:?}");
    let paths: BTreeSet<&String> = documented.iter().map(|(_, path)| path).collect();
    for path in paths {
        let concrete = path.replace("{id}", &id).replace("{cid}", "default-python");
        for method in ["GET", "POST", "DELETE", "PUT", "PATCH"] {
            let request = build(
                Method::from_bytes(method.as_bytes()).expect("valid"),
                &concrete,
                Some(&app.bob.key),
                None,
            );
            let reply = app.call(request).await;
            let is_documented = documented.contains(&(method.to_owned(), path.clone()));
            let message = serde_json::from_slice::<serde_json::Value>(&reply.body)
                .ok()
                .map(|json| json["error"]["message"].clone());
            let routed = reply.status != StatusCode::METHOD_NOT_ALLOWED
                && message != Some(serde_json::json!("no such route"));
            assert_eq!(routed, is_documented, "{method} {path}: {}", reply.text());
        }
    }
}

/// A small structural check of `value` against `schema` from the document:
/// types, `required`, no property outside `properties` (the API's schemas are
/// closed), `enum`/`const`, arrays, `$ref`. Enough to catch a view that drifted
/// from its documented schema.
fn conforms(
    document: &serde_json::Value,
    schema: &serde_json::Value,
    value: &serde_json::Value,
    at: &str,
) {
    use serde_json::Value;
    if let Some(reference) = schema["$ref"].as_str() {
        let target = document
            .pointer(reference.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("dangling {reference}"));
        return conforms(document, target, value, at);
    }
    if let Some(types) = schema.get("type") {
        let allowed: Vec<&str> = match types {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let actual = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(number) if number.is_i64() || number.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let ok = allowed.contains(&actual) || (actual == "integer" && allowed.contains(&"number"));
        assert!(ok, "{at}: {actual} is not {allowed:?}");
    }
    if let Some(constant) = schema.get("const") {
        assert_eq!(value, constant, "{at}");
    }
    if let Some(options) = schema["enum"].as_array() {
        assert!(options.contains(value), "{at}: {value} not in {options:?}");
    }
    if let (Some(object), Some(properties)) = (value.as_object(), schema["properties"].as_object())
    {
        for required in schema["required"].as_array().into_iter().flatten() {
            let name = required.as_str().unwrap_or_default();
            assert!(object.contains_key(name), "{at}: missing {name}");
        }
        for (name, field) in object {
            let field_schema = properties
                .get(name)
                .unwrap_or_else(|| panic!("{at}: undocumented property {name}"));
            conforms(document, field_schema, field, &format!("{at}.{name}"));
        }
    }
    if let (Some(items), Some(schema)) = (value.as_array(), schema.get("items")) {
        for (index, item) in items.iter().enumerate() {
            conforms(document, schema, item, &format!("{at}[{index}]"));
        }
    }
}

/// The success schema of `(method, path)` for `status`.
fn response_schema(
    document: &serde_json::Value,
    method: &str,
    path: &str,
    status: u16,
) -> serde_json::Value {
    document["paths"][path][method]["responses"][status.to_string()]["content"]["application/json"]
        ["schema"]
        .clone()
}

#[tokio::test]
async fn responses_conform_to_their_documented_schemas() {
    let app = TestApp::start().await;
    let document = openapi_document();
    let key = Some(app.alice.key.as_str());
    let create = app
        .post(
            "/api/v1/sandboxes",
            key,
            &serde_json::json!({"runtime": app.runtime_name(), "metadata": {"a": "b"}}),
        )
        .await;
    let id = create.json()["data"]["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let sandbox = format!("/api/v1/sandboxes/{id}");
    let command = app
        .post(
            &format!("{sandbox}/commands"),
            key,
            &serde_json::json!({"cmd": "echo hi"}),
        )
        .await;
    let timeout = app
        .post(
            &format!("{sandbox}/timeout"),
            key,
            &serde_json::json!({"timeout": 600}),
        )
        .await;
    let cases = [
        ("post", "/api/v1/sandboxes", create),
        (
            "get",
            "/api/v1/sandboxes",
            app.get("/api/v1/sandboxes", key).await,
        ),
        (
            "get",
            "/api/v1/sandboxes/{id}",
            app.get(&sandbox, key).await,
        ),
        ("post", "/api/v1/sandboxes/{id}/commands", command),
        ("post", "/api/v1/sandboxes/{id}/timeout", timeout),
        (
            "get",
            "/api/v1/sandboxes/{id}/executions",
            app.get(&format!("{sandbox}/executions"), key).await,
        ),
        (
            "get",
            "/api/v1/runtimes",
            app.get("/api/v1/runtimes", key).await,
        ),
        ("get", "/health", app.get("/health", None).await),
        ("get", "/ready", app.get("/ready", None).await),
        (
            "delete",
            "/api/v1/sandboxes/{id}",
            app.delete(&sandbox, key).await,
        ),
    ];
    for (method, path, reply) in cases {
        let status = reply.status.as_u16();
        let schema = response_schema(&document, method, path, status);
        assert!(
            schema.is_object(),
            "{method} {path}: {status} is not documented"
        );
        conforms(
            &document,
            &schema,
            &reply.json(),
            &format!("{method} {path}"),
        );
    }
    // An error, against the shared envelope (with the optional reason).
    let gone = app.get(&sandbox, key).await;
    let schema = response_schema(&document, "get", "/api/v1/sandboxes/{id}", 410);
    conforms(&document, &schema, &gone.json(), "410");
}

#[test]
fn the_schema_check_rejects_drifted_views() {
    let document = openapi_document();
    let sandbox = serde_json::json!({"$ref": "#/components/schemas/Sandbox"});
    let drifted = [
        serde_json::json!({"id": "x"}),
        serde_json::json!({"id": "x", "status": "running", "runtime": "r",
            "resources": {"cpu": 1, "memory": 512}, "isolation": "i", "metadata": {},
            "created_at": "t", "expires_at": "t", "secret_field": 1}),
        serde_json::json!({"id": "x", "status": "sleeping", "runtime": "r",
            "resources": {"cpu": 1, "memory": 512}, "isolation": "i", "metadata": {},
            "created_at": "t", "expires_at": "t"}),
    ];
    for value in drifted {
        let result = std::panic::catch_unwind(|| conforms(&document, &sandbox, &value, "test"));
        assert!(result.is_err(), "{value} passed");
    }
}
