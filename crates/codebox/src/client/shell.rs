//! `codebox shell ID`: an interactive terminal in a sandbox over the PTY
//! WebSocket (`GET /api/v1/sandboxes/{id}/pty`).
//!
//! Binary frames carry terminal bytes both ways; a text frame
//! `{"type":"resize","cols","rows"}` follows every SIGWINCH. The local
//! terminal is put in raw mode (Ctrl-C, Ctrl-Z, ... travel to the remote
//! shell as bytes) and restored on every exit path: normal return, error,
//! and panic (a hook restores it before the panic message is printed). The
//! client exits with the shell's exit status when the server's close frame
//! carries one.

use std::io::IsTerminal as _;
use std::os::fd::AsFd as _;

use codebox_sys::terminal::{RawMode, SavedTerminal, WindowSize};
use futures_util::{SinkExt as _, StreamExt as _};
use hyper::header::HeaderValue;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::signal::unix::{signal, SignalKind};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::client::http::{query, sandbox_path, ApiClient, ApiError};
use crate::client::{exit, ClientError, ShellArgs};

/// The size sent when the local side is not a terminal.
const DEFAULT_SIZE: WindowSize = WindowSize { cols: 80, rows: 24 };
/// Bytes of local input per frame.
const INPUT_CHUNK: usize = 16 * 1024;
/// Ctrl-D: sent once when local input ends, so the remote shell sees EOF.
const END_OF_TRANSMISSION: u8 = 0x04;

pub async fn run(api: &ApiClient, args: ShellArgs) -> Result<u8, ClientError> {
    let size = local_size();
    let path = format!(
        "{}{}",
        sandbox_path(&args.id, "/pty"),
        query(&[
            ("cols", &size.cols.to_string()),
            ("rows", &size.rows.to_string())
        ])
    );
    let mut request = api
        .url()
        .join("ws", &path)
        .into_client_request()
        .map_err(|error| {
            ClientError::Usage(format!("cannot build the WebSocket request: {error}"))
        })?;
    let key = HeaderValue::from_str(api.key())
        .map_err(|_| ClientError::Usage("the API key is not a valid header value".into()))?;
    request.headers_mut().insert("x-api-key", key);
    let (socket, _response) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|error| handshake_error(api, error))?;

    // Raw mode only when stdin is a terminal; the guard restores on drop.
    let raw = if std::io::stdin().is_terminal() {
        let raw = RawMode::enable(std::io::stdin().as_fd()).map_err(|errno| {
            ClientError::local("cannot put the terminal in raw mode", errno.into_io())
        })?;
        restore_on_panic(raw.saved());
        Some(raw)
    } else {
        None
    };
    let result = session(socket, size).await;
    drop(raw);
    result
}

/// The local terminal's size (stdin's, else stdout's), or 80x24.
fn local_size() -> WindowSize {
    let from_stdin = codebox_sys::terminal::window_size(std::io::stdin().as_fd());
    let size =
        from_stdin.or_else(|_| codebox_sys::terminal::window_size(std::io::stdout().as_fd()));
    match size {
        Ok(size) if size.cols > 0 && size.rows > 0 => size,
        _ => DEFAULT_SIZE,
    }
}

/// Restores the terminal before any panic message is printed.
fn restore_on_panic(saved: SavedTerminal) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let _ = saved.restore();
        previous(info);
    }));
}

/// A refused upgrade carries the API's error envelope: show it as such.
fn handshake_error(api: &ApiClient, error: WsError) -> ClientError {
    match error {
        WsError::Http(response) => {
            let request_id = response
                .headers()
                .get("x-request-id")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            let body = response.body().clone().unwrap_or_default();
            ClientError::Api(Box::new(ApiError::from_body(
                response.status(),
                &body,
                request_id,
            )))
        }
        WsError::Io(source) => ClientError::Unreachable {
            url: api.url().to_string(),
            source: Box::new(source),
        },
        other => ClientError::Protocol(format!("the terminal connection failed: {other}")),
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Pumps bytes both ways until the remote side closes; the exit code.
async fn session(socket: Socket, size: WindowSize) -> Result<u8, ClientError> {
    let (mut sender, mut receiver) = socket.split();
    let mut resized = signal(SignalKind::window_change())
        .map_err(|error| ClientError::local("cannot watch the terminal size", error))?;
    // Also send the size as a frame: a server that ignores the query still
    // gets the right size.
    send(&mut sender, resize_message(size)).await?;
    let mut stdin = tokio::io::stdin();
    let mut stdout = tokio::io::stdout();
    let mut buffer = vec![0u8; INPUT_CHUNK];
    let mut input_open = true;
    loop {
        tokio::select! {
            read = stdin.read(&mut buffer), if input_open => match read {
                Ok(0) | Err(_) => {
                    input_open = false;
                    send(&mut sender, Message::Binary(vec![END_OF_TRANSMISSION].into())).await?;
                }
                Ok(read) => {
                    let bytes = buffer[..read].to_vec();
                    send(&mut sender, Message::Binary(bytes.into())).await?;
                }
            },
            _ = resized.recv() => {
                send(&mut sender, resize_message(local_size())).await?;
            }
            message = receiver.next() => match message {
                Some(Ok(Message::Binary(bytes))) => {
                    stdout.write_all(&bytes).await
                        .and(stdout.flush().await)
                        .map_err(|error| ClientError::local("cannot write to stdout", error))?;
                }
                Some(Ok(Message::Close(frame))) => return Ok(exit_status(frame.as_ref())),
                // Text frames are control messages; pings are answered by the library.
                Some(Ok(_)) => {}
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) | None => {
                    return Ok(0);
                }
                Some(Err(error)) => {
                    return Err(ClientError::Protocol(format!("the terminal connection broke: {error}")));
                }
            },
        }
    }
}

async fn send<S>(sender: &mut S, message: Message) -> Result<(), ClientError>
where
    S: futures_util::Sink<Message, Error = WsError> + Unpin,
{
    sender
        .send(message)
        .await
        .map_err(|error| ClientError::Protocol(format!("the terminal connection broke: {error}")))
}

fn resize_message(size: WindowSize) -> Message {
    let text = json!({"type": "resize", "cols": size.cols, "rows": size.rows}).to_string();
    Message::Text(text.into())
}

/// The shell's exit status from the close frame's reason: a JSON object
/// with `exit_code` (or `signal`), or a reason that is a bare number.
/// Without one: 0 for a normal close, [`exit::FAILED`] otherwise.
fn exit_status(frame: Option<&CloseFrame>) -> u8 {
    let Some(frame) = frame else {
        return 0;
    };
    let reason = frame.reason.as_str().trim();
    if let Ok(value) = serde_json::from_str::<Value>(reason) {
        if let Some(code) = value.get("exit_code").and_then(Value::as_i64) {
            return (code & 0xff) as u8;
        }
        if let Some(signal) = value.get("signal").and_then(Value::as_i64) {
            return (128 + (signal & 0x7f)) as u8;
        }
        if let Some(code) = value.as_i64() {
            return (code & 0xff) as u8;
        }
    }
    let digits: String = reason
        .rsplit(|c: char| !c.is_ascii_digit())
        .find(|word| !word.is_empty())
        .unwrap_or_default()
        .to_owned();
    if let Ok(code) = digits.parse::<i64>() {
        return (code & 0xff) as u8;
    }
    match u16::from(frame.code) {
        1000 => 0,
        _ => exit::FAILED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    fn frame(code: u16, reason: &str) -> CloseFrame {
        CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        }
    }

    #[test]
    fn the_exit_status_comes_from_the_close_frame() {
        assert_eq!(exit_status(None), 0);
        assert_eq!(exit_status(Some(&frame(1000, ""))), 0);
        assert_eq!(exit_status(Some(&frame(1000, r#"{"exit_code":3}"#))), 3);
        assert_eq!(
            exit_status(Some(&frame(1000, r#"{"exit_code":null,"signal":9}"#))),
            137
        );
        assert_eq!(exit_status(Some(&frame(1000, "exit status 42"))), 42);
        assert_eq!(
            exit_status(Some(&frame(1011, "internal error"))),
            exit::FAILED
        );
    }

    #[test]
    fn resizes_are_json_text_frames() {
        let message = resize_message(WindowSize {
            cols: 100,
            rows: 30,
        });
        let Message::Text(text) = message else {
            panic!("a text frame");
        };
        let value: Value = serde_json::from_str(text.as_str()).expect("JSON");
        assert_eq!(value, json!({"type": "resize", "cols": 100, "rows": 30}));
    }
}
