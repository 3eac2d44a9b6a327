//! Framing: a 4-byte big-endian length, a kind byte, then a JSON message or raw data.

use std::io::{self, Read};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::message::Stream;
use crate::RequestId;

/// Bytes of the length prefix.
pub const FRAME_HEADER_LEN: usize = 4;
/// Largest frame body (kind byte + payload) either side accepts.
pub const MAX_FRAME_LEN: usize = 1 << 20;
/// Largest data payload of one data frame; bigger writes are split.
pub const MAX_DATA_CHUNK: usize = 64 * 1024;
/// Kind byte of a JSON control frame.
pub const FRAME_CONTROL: u8 = 1;
/// Kind byte of a raw data frame.
pub const FRAME_DATA: u8 = 2;

/// Bytes before the data in a data frame body: kind, request id, stream.
const DATA_PREFIX_LEN: usize = 1 + 8 + 1;

/// A decoded frame: a control message `M`, or data of one stream of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<M> {
    Control(M),
    Data {
        id: RequestId,
        stream: Stream,
        data: Vec<u8>,
    },
}

/// The byte stream is not made of valid frames: the connection must be dropped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame length {len} is over the limit of {max} bytes")]
    TooLong { len: usize, max: usize },
    #[error("empty frame (no kind byte)")]
    Empty,
}

/// A frame body that is well delimited but whose content is not understood.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown frame kind {kind}")]
    UnknownKind { kind: u8 },
    #[error("data frame of {len} bytes is shorter than its header")]
    DataTooShort { len: usize },
    #[error("data frame carries {len} bytes, over the limit of {max}")]
    DataTooLong { len: usize, max: usize },
    #[error("unknown stream number {stream}")]
    UnknownStream { stream: u8 },
    /// The JSON did not parse as a known message. `message_type` and `id` are what could
    /// be read of the envelope, so the receiver can answer with an error for that id.
    #[error("control message (type {message_type:?}) is not understood")]
    Message {
        message_type: Option<String>,
        id: Option<RequestId>,
        known_type: bool,
        #[source]
        source: serde_json::Error,
    },
}

/// A message could not be framed.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("message of {len} bytes is over the frame limit of {max}")]
    TooLong { len: usize, max: usize },
    #[error("message does not serialize")]
    Json {
        #[source]
        source: serde_json::Error,
    },
}

/// Validates a length prefix. Call it before reserving any buffer for the body.
pub fn parse_header(header: [u8; FRAME_HEADER_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLong {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    Ok(len)
}

/// Appends one control frame holding `message` to `out`.
pub fn encode_control<M: Serialize>(message: &M, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    out.push(FRAME_CONTROL);
    if let Err(source) = serde_json::to_writer(&mut *out, message) {
        out.truncate(start);
        return Err(EncodeError::Json { source });
    }
    let len = out.len() - start - FRAME_HEADER_LEN;
    if len > MAX_FRAME_LEN {
        out.truncate(start);
        return Err(EncodeError::TooLong {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    write_len(&mut out[start..], len);
    Ok(())
}

/// Appends data frames carrying `data` (split into chunks of at most
/// [`MAX_DATA_CHUNK`]) to `out`. Empty `data` appends nothing.
pub fn encode_data(id: RequestId, stream: Stream, data: &[u8], out: &mut Vec<u8>) {
    for chunk in data.chunks(MAX_DATA_CHUNK) {
        let len = DATA_PREFIX_LEN + chunk.len();
        let mut header = [0; FRAME_HEADER_LEN];
        write_len(&mut header, len);
        out.extend_from_slice(&header);
        out.push(FRAME_DATA);
        out.extend_from_slice(&id.to_be_bytes());
        out.push(stream as u8);
        out.extend_from_slice(chunk);
    }
}

fn write_len(buf: &mut [u8], len: usize) {
    let len = u32::try_from(len).expect("frame length is bounded by MAX_FRAME_LEN");
    buf[..FRAME_HEADER_LEN].copy_from_slice(&len.to_be_bytes());
}

/// Decodes one frame body (what follows the length prefix).
pub fn decode_frame<M: DeserializeOwned>(body: &[u8]) -> Result<Frame<M>, DecodeError> {
    match body.first() {
        Some(&FRAME_CONTROL) => decode_control(&body[1..]).map(Frame::Control),
        Some(&FRAME_DATA) => decode_data(body),
        Some(&kind) => Err(DecodeError::UnknownKind { kind }),
        None => Err(DecodeError::DataTooShort { len: 0 }),
    }
}

fn decode_data<M>(body: &[u8]) -> Result<Frame<M>, DecodeError> {
    if body.len() < DATA_PREFIX_LEN {
        return Err(DecodeError::DataTooShort { len: body.len() });
    }
    let data = &body[DATA_PREFIX_LEN..];
    if data.len() > MAX_DATA_CHUNK {
        return Err(DecodeError::DataTooLong {
            len: data.len(),
            max: MAX_DATA_CHUNK,
        });
    }
    let id = u64::from_be_bytes(body[1..9].try_into().expect("slice of 8 bytes"));
    let stream =
        Stream::from_byte(body[9]).ok_or(DecodeError::UnknownStream { stream: body[9] })?;
    Ok(Frame::Data {
        id,
        stream,
        data: data.to_vec(),
    })
}

/// What can be read of a control message that does not parse in full.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    message_type: Option<String>,
    id: Option<RequestId>,
}

fn decode_control<M: DeserializeOwned>(json: &[u8]) -> Result<M, DecodeError> {
    serde_json::from_slice(json).map_err(|source| {
        let envelope: Option<Envelope> = serde_json::from_slice(json).ok();
        let (message_type, id) = envelope.map_or((None, None), |e| (e.message_type, e.id));
        // serde reports an unknown tag as "unknown variant"; anything else is a known
        // type with bad fields (or not JSON at all).
        let known_type = !source.to_string().starts_with("unknown variant");
        DecodeError::Message {
            message_type,
            id,
            known_type,
            source,
        }
    })
}

/// Incremental decoder for a non-blocking reader: push bytes as they arrive, take frame
/// bodies out. It never holds more than one maximal frame plus the last pushed chunk, and
/// it rejects an oversized frame as soon as its 4-byte header is in.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    /// Bytes of `buffer` already returned; compacted lazily so that many small frames
    /// in one read do not cost a memmove each.
    consumed: usize,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.consumed > 0 {
            self.buffer.drain(..self.consumed);
            self.consumed = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete frame body, `Ok(None)` if more bytes are needed.
    pub fn next_body(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let pending = &self.buffer[self.consumed..];
        let Some(header) = pending.get(..FRAME_HEADER_LEN) else {
            return Ok(None);
        };
        let len = parse_header(header.try_into().expect("slice of 4 bytes"))?;
        let Some(body) = pending.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
            return Ok(None);
        };
        let body = body.to_vec();
        self.consumed += FRAME_HEADER_LEN + len;
        Ok(Some(body))
    }

    /// Bytes buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        self.buffer.len() - self.consumed
    }
}

/// Reads one frame body from a blocking reader; `Ok(None)` on a clean end of stream
/// between frames. The length is validated before the body buffer is allocated.
pub fn read_frame<R: Read>(reader: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0; FRAME_HEADER_LEN];
    match reader.read_exact(&mut header) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let len =
        parse_header(header).map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok(Some(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AgentMessage, HostMessage};

    fn body_of(frame: &[u8]) -> &[u8] {
        let len = parse_header(frame[..4].try_into().expect("header")).expect("valid");
        assert_eq!(frame.len(), FRAME_HEADER_LEN + len);
        &frame[FRAME_HEADER_LEN..]
    }

    #[test]
    fn control_frames_round_trip() {
        let message = AgentMessage::Started { id: 7, pid: 42 };
        let mut frame = Vec::new();
        encode_control(&message, &mut frame).expect("encodes");
        let decoded: Frame<AgentMessage> = decode_frame(body_of(&frame)).expect("decodes");
        assert_eq!(decoded, Frame::Control(message));
    }

    #[test]
    fn data_frames_round_trip_and_split_at_the_chunk_limit() {
        let data = vec![7u8; MAX_DATA_CHUNK + 10];
        let mut frames = Vec::new();
        encode_data(3, Stream::Stderr, &data, &mut frames);
        let mut decoder = FrameDecoder::new();
        decoder.push(&frames);
        let mut chunks = Vec::new();
        while let Some(body) = decoder.next_body().expect("well framed") {
            let Frame::<AgentMessage>::Data { id, stream, data } =
                decode_frame(&body).expect("decodes")
            else {
                panic!("expected data")
            };
            assert_eq!((id, stream), (3, Stream::Stderr));
            chunks.push(data.len());
        }
        assert_eq!(chunks, vec![MAX_DATA_CHUNK, 10]);
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn oversized_frame_is_refused_from_its_header() {
        let header = u32::try_from(MAX_FRAME_LEN + 1)
            .expect("fits")
            .to_be_bytes();
        assert_eq!(
            parse_header(header),
            Err(FrameError::TooLong {
                len: MAX_FRAME_LEN + 1,
                max: MAX_FRAME_LEN
            })
        );
        // The decoder refuses as soon as the 4 header bytes are in, with no body sent.
        let mut decoder = FrameDecoder::new();
        decoder.push(&[0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            decoder.next_body(),
            Err(FrameError::TooLong { .. })
        ));
        // The blocking reader refuses without reading (or allocating) the body.
        let mut reader: &[u8] = &[0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        let error = read_frame(&mut reader).expect_err("too long");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert_eq!(reader.len(), 3, "the body was not consumed");
        assert_eq!(parse_header([0; 4]), Err(FrameError::Empty));
    }

    #[test]
    fn data_chunk_over_the_limit_is_refused() {
        let mut body = vec![FRAME_DATA];
        body.extend_from_slice(&1u64.to_be_bytes());
        body.push(Stream::Stdout as u8);
        body.extend(std::iter::repeat_n(0, MAX_DATA_CHUNK + 1));
        let result = decode_frame::<AgentMessage>(&body);
        assert!(matches!(result, Err(DecodeError::DataTooLong { .. })));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let cases: [&[u8]; 6] = [
            &[],
            &[0],
            &[9, 1, 2],
            &[FRAME_DATA, 1, 2],
            &[FRAME_DATA, 0, 0, 0, 0, 0, 0, 0, 1, 77],
            &[FRAME_CONTROL, b'{', 0xff],
        ];
        for body in cases {
            assert!(decode_frame::<HostMessage>(body).is_err(), "{body:?}");
        }
        let mut decoder = FrameDecoder::new();
        decoder.push(&[0, 0, 0, 2, FRAME_CONTROL]);
        assert_eq!(decoder.next_body(), Ok(None), "incomplete frame waits");
        decoder.push(b"{");
        assert_eq!(decoder.next_body(), Ok(Some(vec![FRAME_CONTROL, b'{'])));
    }

    #[test]
    fn unknown_message_type_keeps_its_id_for_the_error_reply() {
        let body = [&[FRAME_CONTROL][..], br#"{"type":"teleport","id":12}"#].concat();
        match decode_frame::<HostMessage>(&body) {
            Err(DecodeError::Message {
                message_type,
                id,
                known_type,
                ..
            }) => {
                assert_eq!(message_type.as_deref(), Some("teleport"));
                assert_eq!(id, Some(12));
                assert!(!known_type);
            }
            other => panic!("expected a message error, got {other:?}"),
        }
        let bad_fields = [&[FRAME_CONTROL][..], br#"{"type":"kill","id":"x"}"#].concat();
        assert!(matches!(
            decode_frame::<HostMessage>(&bad_fields),
            Err(DecodeError::Message {
                known_type: true,
                ..
            })
        ));
    }

    #[test]
    fn control_message_over_the_frame_limit_is_not_encoded() {
        let message = AgentMessage::Error {
            id: None,
            code: crate::ErrorCode::Other,
            message: "x".repeat(MAX_FRAME_LEN),
        };
        let mut out = vec![1, 2, 3];
        assert!(matches!(
            encode_control(&message, &mut out),
            Err(EncodeError::TooLong { .. })
        ));
        assert_eq!(out, vec![1, 2, 3], "nothing half-written");
    }
}
