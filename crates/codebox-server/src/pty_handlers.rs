//! `GET /api/v1/sandboxes/{id}/pty`: a terminal over a WebSocket (issue 5).
//!
//! The request is authenticated like every route (the middleware ran before
//! this handler) and the terminal is opened *before* the upgrade, so an
//! unknown, foreign or ended sandbox, or a bad query, is an ordinary error
//! envelope (404, 410, 400...) and no WebSocket ever exists for it.
//!
//! On the socket:
//! - client → server: binary frames are keystrokes (any bytes); a text frame
//!   `{"type": "resize", "cols": C, "rows": R}` resizes; any other text frame
//!   closes the socket with 1008 (policy violation). Messages over 1 MiB close
//!   it with 1009 (too big). Input is forwarded one message at a time, so a
//!   flooding client is slowed down to the terminal's pace (memory stays bounded).
//! - server → client: binary frames with the terminal's output.
//! - the program exits: a close frame with code 1000 whose reason is the JSON
//!   `{"exit_code": N|null, "signal": N|null, "timed_out": bool}`.
//! - the sandbox ends: close 1011 `the sandbox ended`; server shutdown: 1001.
//! - the client closes (or goes away): the program's whole tree is killed.

use std::collections::BTreeMap;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::response::Response;
use codebox_core::{Pty, PtyEvent, PtyExit, PtyInput, PtyRequest};
use codebox_types::ErrorCode;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

use crate::auth::AuthenticatedUser;
use crate::error::ApiError;
use crate::handlers::SandboxPath;
use crate::state::AppState;

/// Largest WebSocket message (and frame) a client may send.
pub const MAX_PTY_MESSAGE: usize = 1 << 20;

/// Close codes (RFC 6455).
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_PROTOCOL: u16 = 1002;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_INTERNAL: u16 = 1011;

fn invalid(field: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::ValidationError, format!("{field}: {message}")).with_field(field)
}

/// A text frame from the client.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Control {
    Resize { cols: u16, rows: u16 },
}

/// The query string: `cols`, `rows`, `cmd`, `cwd`, `timeout` and `env.NAME=VALUE`.
fn parse_query(query: Option<&str>) -> Result<PtyRequest, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|_| invalid("query", "is not a valid query string"))?;
    let mut request = PtyRequest::default();
    let mut env = BTreeMap::new();
    let number = |key: &str, value: &str| -> Result<u64, ApiError> {
        value
            .parse()
            .map_err(|_| invalid(key, "must be a non-negative integer"))
    };
    for (key, value) in pairs {
        let duplicate = || invalid(key.as_str(), "is given twice");
        match key.as_str() {
            "cols" | "rows" => {
                let size = u16::try_from(number(&key, &value)?)
                    .map_err(|_| invalid(key.as_str(), "must be 1 to 1000"))?;
                let slot = if key == "cols" {
                    &mut request.cols
                } else {
                    &mut request.rows
                };
                if slot.replace(size).is_some() {
                    return Err(duplicate());
                }
            }
            "timeout" => {
                if request.timeout.replace(number(&key, &value)?).is_some() {
                    return Err(duplicate());
                }
            }
            "cmd" => {
                if request.cmd.replace(value).is_some() {
                    return Err(duplicate());
                }
            }
            "cwd" => {
                if request.cwd.replace(value).is_some() {
                    return Err(duplicate());
                }
            }
            _ => match key.strip_prefix("env.") {
                Some(name) => {
                    if env.insert(name.to_owned(), value).is_some() {
                        return Err(duplicate());
                    }
                }
                None => {
                    return Err(invalid(
                        key.as_str(),
                        "unknown query parameter (cols, rows, cmd, cwd, timeout, env.NAME)",
                    ))
                }
            },
        }
    }
    if !env.is_empty() {
        request.env = Some(env);
    }
    Ok(request)
}

/// `GET .../pty`.
pub async fn open(
    State(state): State<AppState>,
    AuthenticatedUser(user): AuthenticatedUser,
    SandboxPath(id): SandboxPath,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let request = parse_query(query.as_deref())?;
    // Ownership first: another user's sandbox is a 404 however it is asked for.
    state.core.check_running_sandbox(&user, &id).await?;
    let upgrade = upgrade.map_err(|rejection| {
        invalid("upgrade", format!("this route is a WebSocket: {rejection}"))
    })?;
    let pty = state.core.open_pty(&user, &id, request).await?;
    let closing = state.stream_closing();
    let sandbox = id.clone();
    Ok(upgrade
        .max_message_size(MAX_PTY_MESSAGE)
        .max_frame_size(MAX_PTY_MESSAGE)
        .on_failed_upgrade(move |error| {
            tracing::debug!(error = %error, "terminal upgrade failed");
        })
        .on_upgrade(move |socket| async move {
            let pid = pty.pid;
            let ended = session(socket, pty, closing).await;
            tracing::info!(sandbox_id = %sandbox, pid, ended, "terminal closed");
        }))
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// The close reason of an exit: fits the 123 bytes a close reason may carry.
fn exit_reason(exit: &PtyExit) -> String {
    json!({
        "exit_code": exit.exit_code,
        "signal": exit.signal,
        "timed_out": exit.timed_out,
    })
    .to_string()
}

/// What a text frame asks for.
fn parse_control(text: &str) -> Result<Control, String> {
    serde_json::from_str(text).map_err(|error| {
        let mut message = format!("invalid control message: {error}");
        // A close reason carries at most 123 bytes.
        while message.len() > 120 {
            message.pop();
        }
        message
    })
}

/// Runs the terminal until it or the socket ends; returns how it ended.
async fn session(socket: WebSocket, pty: Pty, mut closing: watch::Receiver<bool>) -> &'static str {
    let Pty {
        input, mut output, ..
    } = pty;
    let (mut sink, mut stream) = socket.split();
    loop {
        tokio::select! {
            event = output.next() => match event {
                Some(PtyEvent::Data(bytes)) => {
                    if sink.send(Message::Binary(bytes.into())).await.is_err() {
                        return "client gone";
                    }
                }
                Some(PtyEvent::Exit(exit)) => {
                    let _ = sink.send(close(CLOSE_NORMAL, &exit_reason(&exit))).await;
                    return "exited";
                }
                None => {
                    let _ = sink.send(close(CLOSE_INTERNAL, "the sandbox ended")).await;
                    return "sandbox ended";
                }
            },
            message = stream.next() => match message {
                Some(Ok(message)) => {
                    if let Err((code, reason)) = forward(&input, message).await {
                        let _ = sink.send(close(code, &reason)).await;
                        return "closed by the server";
                    }
                }
                Some(Err(error)) => {
                    let text = error.to_string();
                    let code = if text.contains("too long") || text.contains("Space limit") {
                        CLOSE_TOO_BIG
                    } else {
                        CLOSE_PROTOCOL
                    };
                    tracing::debug!(error = %text, "terminal socket read failed");
                    let _ = sink.send(close(code, "the message could not be read")).await;
                    return "unreadable message";
                }
                None => return "client closed",
            },
            changed = closing.changed() => {
                if changed.is_err() || *closing.borrow() {
                    let _ = sink.send(close(CLOSE_GOING_AWAY, "the server is shutting down")).await;
                    return "server shutdown";
                }
            }
        }
    }
}

/// Hands one client message to the terminal; `Err` closes the socket.
async fn forward(input: &PtyInput, message: Message) -> Result<(), (u16, String)> {
    match message {
        Message::Binary(bytes) => input
            .write(&bytes)
            .await
            .map_err(|_| (CLOSE_INTERNAL, "the terminal is gone".to_owned())),
        Message::Text(text) => match parse_control(text.as_str()) {
            Ok(Control::Resize { cols, rows }) => input.resize(cols, rows).await.map_err(|error| {
                let mut reason = error.to_string();
                reason.truncate(120);
                (CLOSE_POLICY, reason)
            }),
            Err(reason) => Err((CLOSE_POLICY, reason)),
        },
        // Pings are answered by the socket itself; a close ends the session
        // (the next read returns `None`).
        Message::Ping(_) | Message::Pong(_) | Message::Close(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_parsed_strictly() {
        let request = parse_query(Some(
            "cols=100&rows=30&cmd=top&cwd=%2Ftmp&timeout=60&env.A=b",
        ))
        .expect("valid");
        assert_eq!(request.cols, Some(100));
        assert_eq!(request.rows, Some(30));
        assert_eq!(request.cmd.as_deref(), Some("top"));
        assert_eq!(request.cwd.as_deref(), Some("/tmp"));
        assert_eq!(request.timeout, Some(60));
        assert_eq!(
            request.env,
            Some(BTreeMap::from([("A".to_owned(), "b".to_owned())]))
        );
        assert_eq!(parse_query(None).expect("valid"), PtyRequest::default());
        for bad in [
            "cols=x",
            "cols=70000",
            "cols=1&cols=2",
            "token=abc",
            "rows=-1",
        ] {
            assert!(parse_query(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn control_messages_are_strict() {
        assert_eq!(
            parse_control(r#"{"type":"resize","cols":80,"rows":24}"#),
            Ok(Control::Resize { cols: 80, rows: 24 })
        );
        for bad in [
            r#"{"type":"resize","cols":80}"#,
            r#"{"type":"exec","cmd":"x"}"#,
            r#"{"type":"resize","cols":80,"rows":24,"x":1}"#,
            "not json",
        ] {
            let reason = parse_control(bad).expect_err("refused");
            assert!(reason.len() <= 123, "{reason}");
        }
    }

    #[test]
    fn an_exit_reason_fits_a_close_frame() {
        let exit = PtyExit {
            exit_code: Some(i32::MIN),
            signal: Some(i32::MIN),
            timed_out: true,
        };
        assert!(exit_reason(&exit).len() <= 123);
    }
}
