//! `codebox run FILE|-`: a new sandbox, the file executed in its default
//! context with the output streamed (stdout to stdout, stderr to stderr, as
//! it arrives), image results written to `out-1.png`, ..., and the sandbox
//! killed at the end unless `--keep`.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{json, Map, Value};
use tokio::io::AsyncReadExt as _;

use crate::cli::OutputFormat;
use crate::client::http::{sandbox_path, ApiClient};
use crate::client::output::{self, field};
use crate::client::{ctrl_c, exit, sandbox, ClientError, Language, RunArgs};

/// Image MIME types saved as files, with their extension.
const IMAGES: [(&str, &str); 4] = [
    ("image/png", "png"),
    ("image/jpeg", "jpg"),
    ("image/gif", "gif"),
    ("image/svg+xml", "svg"),
];

pub async fn run(api: &ApiClient, args: RunArgs, format: OutputFormat) -> Result<u8, ClientError> {
    let code = read_code(&args.file).await?;
    let language = args.language.or_else(|| language_of(&args.file));
    let out_dir = args.out_dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let created = sandbox::create(api, &json!({ "runtime": args.runtime })).await?;
    let id = field(&created, "id").to_owned();
    let mut body = json!({ "code": code });
    if let Some(language) = language {
        body["language"] = json!(language.as_str());
    }
    if let Some(timeout) = args.timeout {
        body["timeout"] = json!(timeout);
    }
    let mut execution = Execution::new(format, out_dir);
    let outcome = tokio::select! {
        outcome = execute(api, &id, &body, &mut execution) => outcome,
        () = ctrl_c() => Err(ClientError::Interrupted),
    };
    if args.keep {
        if format == OutputFormat::Text {
            output::stderr(
                format!("codebox: sandbox {id} kept running (codebox sandbox kill {id})\n")
                    .as_bytes(),
            );
        }
    } else if let Err(error) = sandbox::kill(api, &id).await {
        output::stderr(
            format!("codebox: cannot kill sandbox {id}: {}\n", error.render()).as_bytes(),
        );
    }
    let outcome = outcome?;
    let code = if outcome == "ok" { 0 } else { exit::FAILED };
    if format == OutputFormat::Json {
        output::json(&execution.report(&id, args.keep))?;
    }
    Ok(code)
}

/// The code: the file, or standard input for `-`.
async fn read_code(file: &Path) -> Result<String, ClientError> {
    let bytes = if file == Path::new("-") {
        let mut bytes = Vec::new();
        tokio::io::stdin()
            .read_to_end(&mut bytes)
            .await
            .map_err(|error| ClientError::local("cannot read the code from stdin", error))?;
        bytes
    } else {
        tokio::fs::read(file)
            .await
            .map_err(|error| ClientError::local(format!("cannot read {}", file.display()), error))?
    };
    String::from_utf8(bytes)
        .map_err(|_| ClientError::Usage(format!("{} is not UTF-8 text", file.display())))
}

/// The language a file's extension names.
pub fn language_of(file: &Path) -> Option<Language> {
    match file.extension()?.to_str()? {
        "py" | "ipy" => Some(Language::Python),
        "js" | "mjs" | "cjs" => Some(Language::Javascript),
        "ts" | "mts" => Some(Language::Typescript),
        "sh" | "bash" => Some(Language::Bash),
        _ => None,
    }
}

/// Streams one execution; the `end` event's outcome.
async fn execute(
    api: &ApiClient,
    id: &str,
    body: &Value,
    execution: &mut Execution,
) -> Result<String, ClientError> {
    let mut events = api.ndjson(&sandbox_path(id, "/execute"), body).await?;
    while let Some(event) = events.next().await? {
        if let Some(outcome) = execution.handle(event).await? {
            return Ok(outcome);
        }
    }
    Err(ClientError::Protocol(
        "the execution stream ended without its end event".to_owned(),
    ))
}

/// What one execution produced, shown as it arrives (text) or collected for
/// one JSON report.
#[derive(Debug)]
struct Execution {
    format: OutputFormat,
    out_dir: PathBuf,
    images: usize,
    stdout: String,
    stderr: String,
    results: Vec<Value>,
    files: Vec<String>,
    error: Option<Value>,
    end: Option<Value>,
}

impl Execution {
    fn new(format: OutputFormat, out_dir: PathBuf) -> Execution {
        Execution {
            format,
            out_dir,
            images: 0,
            stdout: String::new(),
            stderr: String::new(),
            results: Vec::new(),
            files: Vec::new(),
            error: None,
            end: None,
        }
    }

    fn text(&self) -> bool {
        self.format == OutputFormat::Text
    }

    /// Handles one event; the outcome once the execution ended.
    async fn handle(&mut self, event: Value) -> Result<Option<String>, ClientError> {
        match field(&event, "type") {
            "stdout" => {
                let text = field(&event, "text");
                if self.text() {
                    output::stdout(text.as_bytes())?;
                } else {
                    self.stdout.push_str(text);
                }
            }
            "stderr" => {
                let text = field(&event, "text");
                if self.text() {
                    output::stderr(text.as_bytes());
                } else {
                    self.stderr.push_str(text);
                }
            }
            "result" => self.result(event).await?,
            "error" => {
                if self.text() {
                    output::stderr(render_error(&event).as_bytes());
                }
                self.error = Some(event);
            }
            "end" => {
                let outcome = field(&event, "outcome").to_owned();
                if self.text() {
                    if let Some(line) = end_line(&event) {
                        output::stderr(line.as_bytes());
                    }
                }
                self.end = Some(event);
                return Ok(Some(outcome));
            }
            // Events a newer server adds are skipped, not fatal.
            _ => {}
        }
        Ok(None)
    }

    /// Saves a result's images; prints its text when it has none.
    async fn result(&mut self, mut event: Value) -> Result<(), ClientError> {
        let mut written = Vec::new();
        for (mime, extension) in IMAGES {
            let Some(data) = event.get(mime).and_then(Value::as_str) else {
                continue;
            };
            let bytes = decode_image(mime, data)?;
            self.images += 1;
            tokio::fs::create_dir_all(&self.out_dir)
                .await
                .map_err(|error| {
                    ClientError::local(format!("cannot create {}", self.out_dir.display()), error)
                })?;
            let path = self
                .out_dir
                .join(format!("out-{}.{extension}", self.images));
            tokio::fs::write(&path, &bytes).await.map_err(|error| {
                ClientError::local(format!("cannot write {}", path.display()), error)
            })?;
            written.push(path.display().to_string());
            if let Some(object) = event.as_object_mut() {
                object.remove(mime);
            }
        }
        if self.text() {
            if written.is_empty() {
                if let Some(text) = event.get("text/plain").and_then(Value::as_str) {
                    output::stdout(format!("{text}\n").as_bytes())?;
                }
            }
            for path in &written {
                output::stderr(format!("codebox: wrote {path}\n").as_bytes());
            }
        }
        if let Some(object) = event.as_object_mut() {
            object.remove("type");
            object.insert("files".into(), json!(written));
        }
        self.files.extend(written);
        self.results.push(event);
        Ok(())
    }

    fn report(&self, id: &str, kept: bool) -> Value {
        let mut report = Map::new();
        report.insert("sandbox_id".into(), json!(id));
        report.insert("kept".into(), json!(kept));
        if let Some(end) = &self.end {
            for name in [
                "execution_id",
                "execution_count",
                "outcome",
                "duration_ms",
                "truncated",
                "restarted",
                "reason",
            ] {
                if let Some(value) = end.get(name) {
                    report.insert(name.into(), value.clone());
                }
            }
        }
        report.insert("stdout".into(), json!(self.stdout));
        report.insert("stderr".into(), json!(self.stderr));
        report.insert("results".into(), json!(self.results));
        report.insert("files".into(), json!(self.files));
        let error = self.error.as_ref().map(|error| {
            json!({"name": field(error, "name"), "value": field(error, "value"),
                   "traceback": field(error, "traceback")})
        });
        report.insert("error".into(), error.unwrap_or(Value::Null));
        Value::Object(report)
    }
}

/// An image result's bytes (base64, or the text itself for SVG).
fn decode_image(mime: &str, data: &str) -> Result<Vec<u8>, ClientError> {
    if mime == "image/svg+xml" && data.trim_start().starts_with('<') {
        return Ok(data.as_bytes().to_vec());
    }
    let compact: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| ClientError::Protocol(format!("a {mime} result that is not base64")))
}

/// The traceback (or `name: value`), ending with a newline.
fn render_error(event: &Value) -> String {
    let traceback = field(event, "traceback");
    let mut text = if traceback == "-" || traceback.is_empty() {
        format!("{}: {}", field(event, "name"), field(event, "value"))
    } else {
        traceback.to_owned()
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// What to say about an execution that did not end normally.
fn end_line(end: &Value) -> Option<String> {
    let mut line = match field(end, "outcome") {
        "ok" | "error" => return None,
        "timeout" => "codebox: the code timed out".to_owned(),
        "interrupted" => "codebox: the code was interrupted".to_owned(),
        "crashed" => "codebox: the interpreter crashed".to_owned(),
        other => format!("codebox: the execution ended: {other}"),
    };
    if end.get("restarted").and_then(Value::as_bool) == Some(true) {
        line.push_str(" (the interpreter was restarted: its state is gone)");
    }
    if let Some(reason) = end.get("reason").and_then(Value::as_str) {
        line.push_str(&format!(" ({reason})"));
    }
    line.push('\n');
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_follow_the_extension() {
        assert_eq!(language_of(Path::new("a.py")), Some(Language::Python));
        assert_eq!(
            language_of(Path::new("dir/a.ts")),
            Some(Language::Typescript)
        );
        assert_eq!(language_of(Path::new("a.sh")), Some(Language::Bash));
        assert_eq!(language_of(Path::new("-")), None);
        assert_eq!(language_of(Path::new("Makefile")), None);
    }

    #[tokio::test]
    async fn images_become_numbered_files_and_text_is_kept_in_the_report() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut execution = Execution::new(OutputFormat::Json, dir.path().join("out"));
        let png = base64::engine::general_purpose::STANDARD.encode(b"\x89PNG fake");
        for event in [
            json!({"type": "stdout", "text": "hello\n"}),
            json!({"type": "result", "image/png": png, "text/plain": "<Figure>", "is_main_result": false}),
            json!({"type": "result", "text/plain": "42", "is_main_result": true}),
            json!({"type": "error", "name": "ValueError", "value": "x", "traceback": "tb"}),
        ] {
            assert_eq!(execution.handle(event).await.expect("handled"), None);
        }
        let end = json!({"type": "end", "outcome": "error", "execution_count": 1});
        assert_eq!(
            execution.handle(end).await.expect("handled"),
            Some("error".into())
        );
        let written = std::fs::read(dir.path().join("out/out-1.png")).expect("written");
        assert_eq!(written, b"\x89PNG fake");
        let report = execution.report("sbx", false);
        assert_eq!(report["stdout"], "hello\n");
        assert_eq!(report["outcome"], "error");
        assert_eq!(report["error"]["name"], "ValueError");
        assert_eq!(
            report["results"][0].get("image/png"),
            None,
            "no base64 in the report"
        );
        assert_eq!(report["results"][1]["text/plain"], "42");
    }

    #[test]
    fn a_result_that_is_not_base64_is_an_error() {
        assert!(decode_image("image/png", "not base64!").is_err());
        assert_eq!(
            decode_image("image/svg+xml", "<svg/>").expect("svg"),
            b"<svg/>"
        );
    }

    #[test]
    fn errors_print_their_traceback_or_name_and_value() {
        let event =
            json!({"name": "ZeroDivisionError", "value": "division by zero", "traceback": ""});
        assert_eq!(
            render_error(&event),
            "ZeroDivisionError: division by zero\n"
        );
        assert_eq!(end_line(&json!({"outcome": "ok"})), None);
        let line = end_line(&json!({"outcome": "timeout", "restarted": true})).expect("said");
        assert!(
            line.contains("timed out") && line.contains("restarted"),
            "{line}"
        );
    }
}
