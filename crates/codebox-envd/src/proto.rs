//! The envd messages (`process.proto`, `filesystem.proto`) as hand-written serde
//! types in proto3-JSON form: lowerCamelCase out (snake_case also accepted in),
//! `int64` as strings, `bytes` as base64, enums by name, timestamps in RFC 3339,
//! oneofs as the one member set; unknown fields ignored, `null` is the default.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize};

use crate::connect::RpcError;

/// `null` or absent → the type's default (proto3-JSON).
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A `uint32` given as a number or a decimal string (both are proto3-JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct U32(pub u32);

impl<'de> Deserialize<'de> for U32 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u32),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(value) => Ok(U32(value)),
            Raw::Text(text) => text
                .parse()
                .map(U32)
                .map_err(|_| serde::de::Error::custom("expected a uint32")),
        }
    }
}

/// `bytes`: base64 text, standard or URL-safe, padded or not (proto3-JSON
/// accepts each). Decoded when used, so a bad one is an `invalid_argument`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(transparent)]
pub struct Base64Bytes(pub String);

impl Base64Bytes {
    pub fn decode(&self, field: &str) -> Result<Vec<u8>, RpcError> {
        let text = self.0.trim_end_matches('=');
        let engines = [
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        for engine in engines {
            if let Ok(bytes) = engine.decode(text) {
                return Ok(bytes);
            }
        }
        Err(RpcError::invalid(format!("{field}: invalid base64")))
    }
}

/// Standard padded base64, as proto3-JSON writes `bytes`.
pub fn encode_bytes(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

// ---- process.proto ----

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct ProcessConfig {
    #[serde(deserialize_with = "nullable")]
    pub cmd: String,
    #[serde(deserialize_with = "nullable")]
    pub args: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub envs: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct PtySize {
    pub cols: U32,
    pub rows: U32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Pty {
    pub size: Option<PtySize>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct StartRequest {
    pub process: Option<ProcessConfig>,
    pub pty: Option<Pty>,
    pub tag: Option<String>,
    pub stdin: Option<bool>,
}

/// `oneof selector { uint32 pid; string tag; }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ProcessSelector {
    pub pid: Option<U32>,
    pub tag: Option<String>,
}

/// The selected process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Pid(u32),
    Tag(String),
}

impl ProcessSelector {
    pub fn selector(&self) -> Result<Selector, RpcError> {
        match (&self.pid, &self.tag) {
            (Some(pid), None) => Ok(Selector::Pid(pid.0)),
            (None, Some(tag)) => Ok(Selector::Tag(tag.clone())),
            (Some(_), Some(_)) => Err(RpcError::invalid(
                "process: set either pid or tag, not both",
            )),
            (None, None) => Err(RpcError::invalid("process: a pid or a tag is required")),
        }
    }
}

/// A request naming a process only (Connect, CloseStdin).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct SelectRequest {
    pub process: Option<ProcessSelector>,
}

/// The selector of a request, required.
pub fn required_selector(process: &Option<ProcessSelector>) -> Result<Selector, RpcError> {
    process
        .as_ref()
        .ok_or_else(|| RpcError::invalid("process: required"))?
        .selector()
}

/// `oneof input { bytes stdin; bytes pty; }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ProcessInput {
    pub stdin: Option<Base64Bytes>,
    pub pty: Option<Base64Bytes>,
}

/// Where input goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Stdin(Vec<u8>),
    Pty(Vec<u8>),
}

impl ProcessInput {
    pub fn input(&self) -> Result<Input, RpcError> {
        match (&self.stdin, &self.pty) {
            (Some(stdin), None) => Ok(Input::Stdin(stdin.decode("input.stdin")?)),
            (None, Some(pty)) => Ok(Input::Pty(pty.decode("input.pty")?)),
            (Some(_), Some(_)) => Err(RpcError::invalid(
                "input: set either stdin or pty, not both",
            )),
            (None, None) => Err(RpcError::invalid("input: stdin or pty is required")),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct SendInputRequest {
    pub process: Option<ProcessSelector>,
    pub input: Option<ProcessInput>,
}

/// One message of `StreamInput`: `oneof event { start; data; keepalive }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct StreamInputRequest {
    pub start: Option<SelectRequest>,
    pub data: Option<StreamInputData>,
    pub keepalive: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct StreamInputData {
    pub input: Option<ProcessInput>,
}

/// `enum Signal`: by name or number.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum SignalValue {
    #[default]
    Unset,
    Number(i64),
    Name(String),
}

impl SignalValue {
    /// The signal as the runtime names it (`SIGKILL`, `SIGTERM`).
    pub fn runtime_name(&self) -> Result<&'static str, RpcError> {
        match self {
            SignalValue::Number(9) => Ok("SIGKILL"),
            SignalValue::Number(15) => Ok("SIGTERM"),
            SignalValue::Name(name) if name == "SIGNAL_SIGKILL" => Ok("SIGKILL"),
            SignalValue::Name(name) if name == "SIGNAL_SIGTERM" => Ok("SIGTERM"),
            _ => Err(RpcError::invalid(
                "signal: must be SIGNAL_SIGTERM (15) or SIGNAL_SIGKILL (9)",
            )),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct SendSignalRequest {
    pub process: Option<ProcessSelector>,
    #[serde(deserialize_with = "nullable")]
    pub signal: SignalValue,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct UpdateRequest {
    pub process: Option<ProcessSelector>,
    pub pty: Option<Pty>,
}

/// `{}` requests (List, Remove responses...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Empty {}

/// `ProcessEvent`'s oneof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Event {
    Start { pid: u32 },
    Data(Data),
    End(End),
    Keepalive {},
}

/// `DataEvent`'s oneof: base64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Data {
    Stdout(String),
    Stderr(String),
    Pty(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct End {
    pub exit_code: i32,
    pub exited: bool,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `StartResponse` / `ConnectResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventResponse {
    pub event: Event,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessInfo {
    pub config: ProcessConfig,
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListResponse {
    pub processes: Vec<ProcessInfo>,
}

/// How a process ended, as Go's `ProcessState.String()` says it (what envd
/// reports): `exit status 1`, `signal: killed`.
pub fn end_event(exit_code: Option<i32>, signal: Option<i32>, timed_out: bool) -> End {
    match (exit_code, signal) {
        (Some(code), _) => End {
            exit_code: code,
            exited: true,
            status: format!("exit status {code}"),
            error: None,
        },
        (None, Some(signal)) => End {
            exit_code: -1,
            exited: false,
            status: format!("signal: {}", signal_description(signal)),
            error: timed_out.then(|| "the process timed out".to_owned()),
        },
        (None, None) => End {
            exit_code: -1,
            exited: false,
            status: "unknown".to_owned(),
            error: Some("the process ended without an exit status".to_owned()),
        },
    }
}

/// Go's description of a Linux signal.
fn signal_description(signal: i32) -> String {
    let text = match signal {
        1 => "hangup",
        2 => "interrupt",
        3 => "quit",
        4 => "illegal instruction",
        5 => "trace/breakpoint trap",
        6 => "aborted",
        7 => "bus error",
        8 => "floating point exception",
        9 => "killed",
        10 => "user defined signal 1",
        11 => "segmentation fault",
        12 => "user defined signal 2",
        13 => "broken pipe",
        14 => "alarm clock",
        15 => "terminated",
        24 => "CPU time limit exceeded",
        25 => "file size limit exceeded",
        31 => "bad system call",
        other => return format!("signal {other}"),
    };
    text.to_owned()
}

// ---- filesystem.proto ----

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct PathRequest {
    #[serde(deserialize_with = "nullable")]
    pub path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct MoveRequest {
    #[serde(deserialize_with = "nullable")]
    pub source: String,
    #[serde(deserialize_with = "nullable")]
    pub destination: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ListDirRequest {
    #[serde(deserialize_with = "nullable")]
    pub path: String,
    pub depth: Option<U32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct WatchDirRequest {
    #[serde(deserialize_with = "nullable")]
    pub path: String,
    #[serde(deserialize_with = "nullable")]
    pub recursive: bool,
    #[serde(
        deserialize_with = "nullable",
        alias = "include_entry",
        rename = "includeEntry"
    )]
    pub include_entry: bool,
    #[serde(
        deserialize_with = "nullable",
        alias = "allow_network_mounts",
        rename = "allowNetworkMounts"
    )]
    pub allow_network_mounts: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct WatcherRequest {
    #[serde(
        deserialize_with = "nullable",
        alias = "watcher_id",
        rename = "watcherId"
    )]
    pub watcher_id: String,
}

/// `enum FileType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FileType {
    #[serde(rename = "FILE_TYPE_UNSPECIFIED")]
    Unspecified,
    #[serde(rename = "FILE_TYPE_FILE")]
    File,
    #[serde(rename = "FILE_TYPE_DIRECTORY")]
    Directory,
    #[serde(rename = "FILE_TYPE_SYMLINK")]
    Symlink,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: FileType,
    pub path: String,
    /// `int64`: a string.
    pub size: String,
    pub mode: u32,
    pub permissions: String,
    pub owner: String,
    pub group: String,
    pub modified_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryResponse {
    pub entry: EntryInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListDirResponse {
    pub entries: Vec<EntryInfo>,
}

/// `enum EventType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventType {
    #[serde(rename = "EVENT_TYPE_CREATE")]
    Create,
    #[serde(rename = "EVENT_TYPE_WRITE")]
    Write,
    #[serde(rename = "EVENT_TYPE_REMOVE")]
    Remove,
    #[serde(rename = "EVENT_TYPE_RENAME")]
    Rename,
    #[serde(rename = "EVENT_TYPE_CHMOD")]
    Chmod,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilesystemEvent {
    /// The path relative to the watched directory.
    pub name: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<EntryInfo>,
}

/// `WatchDirResponse`'s oneof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum WatchDirResponse {
    Start {},
    Filesystem(Box<FilesystemEvent>),
    Keepalive {},
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateWatcherResponse {
    pub watcher_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatcherEventsResponse {
    pub events: Vec<FilesystemEvent>,
}

/// A proto3-JSON `Timestamp`: UTC, `Z`, and 0, 3, 6 or 9 fractional digits
/// (JavaScript's parser takes no other count).
pub fn timestamp(time: std::time::SystemTime) -> String {
    let time = time::OffsetDateTime::from(time).to_offset(time::UtcOffset::UTC);
    let nanos = time.nanosecond();
    let fraction = if nanos == 0 {
        String::new()
    } else if nanos % 1_000_000 == 0 {
        format!(".{:03}", nanos / 1_000_000)
    } else if nanos % 1_000 == 0 {
        format!(".{:06}", nanos / 1_000)
    } else {
        format!(".{nanos:09}")
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{fraction}Z",
        time.year(),
        u8::from(time.month()),
        time.day(),
        time.hour(),
        time.minute(),
        time.second()
    )
}

/// `ls -l`-style permissions as Go's `FileMode.String()` writes them (what envd
/// reports): `-rw-r--r--`, `drwxr-xr-x`, `Lrwxrwxrwx`.
pub fn permissions(kind: FileType, other: bool, mode: u32) -> String {
    let mut text = String::with_capacity(10);
    text.push(match kind {
        FileType::Directory => 'd',
        FileType::Symlink => 'L',
        _ if other => '?',
        _ => '-',
    });
    let letters = ['r', 'w', 'x'];
    for bit in (0..9).rev() {
        if mode & (1 << bit) != 0 {
            text.push(letters[(8 - bit) % 3]);
        } else {
            text.push('-');
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::parse_message;
    use std::time::{Duration, SystemTime};

    #[test]
    fn start_requests_parse_like_the_sdks_send_them() {
        let body = br#"{"process":{"cmd":"/bin/bash","args":["-l","-c","echo hi"],"envs":{"A":"1"},"cwd":null},"stdin":false,"pty":null,"unknownField":1}"#;
        let request: StartRequest = parse_message(body).expect("valid");
        let process = request.process.expect("process");
        assert_eq!(process.cmd, "/bin/bash");
        assert_eq!(process.args, ["-l", "-c", "echo hi"]);
        assert_eq!(process.envs["A"], "1");
        assert_eq!(request.stdin, Some(false));
        let pty: StartRequest =
            parse_message(br#"{"process":{"cmd":"bash"},"pty":{"size":{"cols":"80","rows":24}}}"#)
                .expect("valid");
        let size = pty.pty.and_then(|pty| pty.size).expect("size");
        assert_eq!((size.cols.0, size.rows.0), (80, 24));
        assert!(parse_message::<StartRequest>(br#"{"process":{"args":"x"}}"#).is_err());
    }

    #[test]
    fn selectors_and_inputs_are_oneofs() {
        let both: SelectRequest =
            parse_message(br#"{"process":{"pid":1,"tag":"a"}}"#).expect("valid json");
        assert!(required_selector(&both.process).is_err());
        let none: SelectRequest = parse_message(b"{}").expect("valid json");
        assert!(required_selector(&none.process).is_err());
        let tag: SelectRequest = parse_message(br#"{"process":{"tag":"web"}}"#).expect("valid");
        assert_eq!(
            required_selector(&tag.process),
            Ok(Selector::Tag("web".into()))
        );
        let input: SendInputRequest =
            parse_message(br#"{"process":{"pid":"7"},"input":{"stdin":"aGkK"}}"#).expect("valid");
        assert_eq!(required_selector(&input.process), Ok(Selector::Pid(7)));
        let decoded = input.input.expect("input").input().expect("valid base64");
        assert_eq!(decoded, Input::Stdin(b"hi\n".to_vec()));
        let url_safe = ProcessInput {
            pty: Some(Base64Bytes("-_8".into())),
            stdin: None,
        };
        assert_eq!(url_safe.input(), Ok(Input::Pty(vec![0xfb, 0xff])));
        let bad = ProcessInput {
            stdin: Some(Base64Bytes("not base64!".into())),
            pty: None,
        };
        assert_eq!(
            bad.input().expect_err("bad").code,
            crate::connect::Code::InvalidArgument
        );
    }

    #[test]
    fn signals_by_name_or_number() {
        let named: SendSignalRequest =
            parse_message(br#"{"process":{"pid":3},"signal":"SIGNAL_SIGKILL"}"#).expect("valid");
        assert_eq!(named.signal.runtime_name(), Ok("SIGKILL"));
        let number: SendSignalRequest =
            parse_message(br#"{"process":{"pid":3},"signal":15}"#).expect("valid");
        assert_eq!(number.signal.runtime_name(), Ok("SIGTERM"));
        let other: SendSignalRequest =
            parse_message(br#"{"process":{"pid":3},"signal":"SIGNAL_UNSPECIFIED"}"#)
                .expect("valid");
        assert!(other.signal.runtime_name().is_err());
    }

    #[test]
    fn events_serialise_as_proto3_json() {
        let start = EventResponse {
            event: Event::Start { pid: 14707 },
        };
        assert_eq!(
            serde_json::to_string(&start).expect("serialises"),
            r#"{"event":{"start":{"pid":14707}}}"#
        );
        let data = EventResponse {
            event: Event::Data(Data::Stdout(encode_bytes(b"hi\n"))),
        };
        assert_eq!(
            serde_json::to_string(&data).expect("serialises"),
            r#"{"event":{"data":{"stdout":"aGkK"}}}"#
        );
        let end = EventResponse {
            event: Event::End(end_event(Some(0), None, false)),
        };
        assert_eq!(
            serde_json::to_string(&end).expect("serialises"),
            r#"{"event":{"end":{"exitCode":0,"exited":true,"status":"exit status 0"}}}"#
        );
        let killed = end_event(None, Some(9), false);
        assert_eq!(killed.status, "signal: killed");
        assert_eq!(killed.exit_code, -1);
        assert!(!killed.exited);
        let keepalive = EventResponse {
            event: Event::Keepalive {},
        };
        assert_eq!(
            serde_json::to_string(&keepalive).expect("serialises"),
            r#"{"event":{"keepalive":{}}}"#
        );
    }

    #[test]
    fn entries_use_camel_case_enum_names_and_string_int64() {
        let entry = EntryInfo {
            name: "a.txt".into(),
            kind: FileType::File,
            path: "/home/user/a.txt".into(),
            size: 5u64.to_string(),
            mode: 0o644,
            permissions: permissions(FileType::File, false, 0o644),
            owner: "user".into(),
            group: "user".into(),
            modified_time: timestamp(SystemTime::UNIX_EPOCH + Duration::from_millis(1500)),
            symlink_target: None,
        };
        let json = serde_json::to_value(&entry).expect("serialises");
        assert_eq!(json["type"], "FILE_TYPE_FILE");
        assert_eq!(json["size"], "5");
        assert_eq!(json["permissions"], "-rw-r--r--");
        assert_eq!(json["modifiedTime"], "1970-01-01T00:00:01.500Z");
        assert!(json.get("symlinkTarget").is_none());
        assert_eq!(permissions(FileType::Directory, false, 0o755), "drwxr-xr-x");
        assert_eq!(permissions(FileType::Symlink, false, 0o777), "Lrwxrwxrwx");
        let event = WatchDirResponse::Filesystem(Box::new(FilesystemEvent {
            name: "a.txt".into(),
            kind: EventType::Create,
            entry: None,
        }));
        assert_eq!(
            serde_json::to_string(&event).expect("serialises"),
            r#"{"filesystem":{"name":"a.txt","type":"EVENT_TYPE_CREATE"}}"#
        );
        let id = CreateWatcherResponse {
            watcher_id: "w1".into(),
        };
        assert_eq!(
            serde_json::to_string(&id).expect("serialises"),
            r#"{"watcherId":"w1"}"#
        );
    }

    #[test]
    fn snake_case_is_accepted_in() {
        let snake: WatchDirRequest =
            parse_message(br#"{"path":"/tmp","include_entry":true}"#).expect("valid");
        assert!(snake.include_entry);
        let camel: WatcherRequest = parse_message(br#"{"watcherId":"x"}"#).expect("valid");
        assert_eq!(camel.watcher_id, "x");
        let snake: WatcherRequest = parse_message(br#"{"watcher_id":"y"}"#).expect("valid");
        assert_eq!(snake.watcher_id, "y");
    }

    #[test]
    fn timestamps_have_zero_three_six_or_nine_digits() {
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(timestamp(base), "2023-11-14T22:13:20Z");
        assert_eq!(
            timestamp(base + Duration::from_micros(5)),
            "2023-11-14T22:13:20.000005Z"
        );
        assert_eq!(
            timestamp(base + Duration::from_nanos(7)),
            "2023-11-14T22:13:20.000000007Z"
        );
    }
}
