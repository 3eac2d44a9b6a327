//! `codebox exec ID -- CMD...`: a foreground process in the sandbox, its
//! output streamed as it arrives; the client exits with the process's exit
//! code (128 + the signal when one killed it, 124 when it timed out).

use serde_json::{json, Value};

use crate::cli::OutputFormat;
use crate::client::http::{sandbox_path, ApiClient};
use crate::client::output::{self, field};
use crate::client::sandbox::pairs;
use crate::client::{ctrl_c, exit, ClientError, ExecArgs};

pub async fn run(api: &ApiClient, args: ExecArgs, format: OutputFormat) -> Result<u8, ClientError> {
    let body = request_body(&args)?;
    let path = sandbox_path(&args.id, "/processes");
    let mut collected = Collected::default();
    let end = tokio::select! {
        end = stream(api, &path, &body, format, &mut collected) => end?,
        // Dropping the stream only unsubscribes: say the process still runs.
        () = ctrl_c() => {
            output::stderr(b"codebox: interrupted; the process keeps running in the sandbox \
                (see GET /processes)\n");
            return Err(ClientError::Interrupted);
        }
    };
    let code = exit_code(&end);
    if format == OutputFormat::Json {
        output::json(&json!({
            "pid": collected.pid,
            "exit_code": end.get("exit_code").cloned().unwrap_or(Value::Null),
            "signal": end.get("signal").cloned().unwrap_or(Value::Null),
            "timed_out": end.get("timed_out").cloned().unwrap_or(json!(false)),
            "stdout": collected.stdout,
            "stderr": collected.stderr,
        }))?;
    }
    Ok(code)
}

/// The body of `POST .../processes` (foreground): one word runs through
/// `bash -c`, several as an argv.
fn request_body(args: &ExecArgs) -> Result<Value, ClientError> {
    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| ClientError::Usage("no command given".to_owned()))?;
    let mut body = json!({ "cmd": program, "background": false });
    if !rest.is_empty() {
        body["args"] = json!(rest);
    }
    if let Some(timeout) = args.timeout {
        body["timeout"] = json!(timeout);
    }
    if let Some(cwd) = &args.cwd {
        body["cwd"] = json!(cwd);
    }
    if !args.env.is_empty() {
        body["env"] = pairs(&args.env);
    }
    Ok(body)
}

#[derive(Debug, Default)]
struct Collected {
    pid: Option<u64>,
    stdout: String,
    stderr: String,
}

/// Streams the process's events until its `end`.
async fn stream(
    api: &ApiClient,
    path: &str,
    body: &Value,
    format: OutputFormat,
    collected: &mut Collected,
) -> Result<Value, ClientError> {
    let mut events = api.ndjson(path, body).await?;
    let text = format == OutputFormat::Text;
    while let Some(event) = events.next().await? {
        match field(&event, "type") {
            "start" => collected.pid = event.get("pid").and_then(Value::as_u64),
            "stdout" if text => output::stdout(field(&event, "data").as_bytes())?,
            "stderr" if text => output::stderr(field(&event, "data").as_bytes()),
            "stdout" => collected.stdout.push_str(field(&event, "data")),
            "stderr" => collected.stderr.push_str(field(&event, "data")),
            "end" => return Ok(event),
            _ => {}
        }
    }
    Err(ClientError::Protocol(
        "the process stream ended without its end event".to_owned(),
    ))
}

/// The exit code the client passes on.
fn exit_code(end: &Value) -> u8 {
    if end.get("timed_out").and_then(Value::as_bool) == Some(true) {
        return exit::TIMED_OUT;
    }
    if let Some(code) = end.get("exit_code").and_then(Value::as_i64) {
        // Like a shell: the low 8 bits.
        return (code & 0xff) as u8;
    }
    match end.get("signal").and_then(Value::as_i64) {
        Some(signal) => (128 + (signal & 0x7f)) as u8,
        None => exit::FAILED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(command: &[&str]) -> ExecArgs {
        ExecArgs {
            id: "sbx".into(),
            timeout: None,
            cwd: None,
            env: Vec::new(),
            command: command.iter().map(|word| (*word).to_owned()).collect(),
        }
    }

    #[test]
    fn one_word_is_a_shell_command_and_several_an_argv() {
        let body = request_body(&args(&["ls | wc -l"])).expect("body");
        assert_eq!(body, json!({"cmd": "ls | wc -l", "background": false}));
        let body = request_body(&args(&["python3", "-c", "print(1)"])).expect("body");
        assert_eq!(body["cmd"], "python3");
        assert_eq!(body["args"], json!(["-c", "print(1)"]));
        assert!(request_body(&args(&[])).is_err());
    }

    #[test]
    fn exit_codes_follow_the_shell_conventions() {
        assert_eq!(exit_code(&json!({"exit_code": 3, "timed_out": false})), 3);
        assert_eq!(exit_code(&json!({"exit_code": 256 + 7})), 7);
        assert_eq!(exit_code(&json!({"exit_code": null, "signal": 9})), 137);
        assert_eq!(
            exit_code(&json!({"exit_code": null, "signal": 9, "timed_out": true})),
            124
        );
        assert_eq!(exit_code(&json!({})), exit::FAILED);
    }
}
