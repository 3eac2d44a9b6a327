//! `codebox files put|get|ls`: uploads and downloads streamed chunk by chunk
//! (never a whole file in memory), and directory listings.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use hyper::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};

use crate::cli::OutputFormat;
use crate::client::http::{next_chunk, query, sandbox_path, ApiClient, RequestBody};
use crate::client::output::{self, field, printable, table};
use crate::client::{ClientError, FilesCommand};

/// Bytes read from a local file per chunk of an upload.
const CHUNK: usize = 64 * 1024;

pub async fn run(
    api: &ApiClient,
    command: FilesCommand,
    format: OutputFormat,
) -> Result<(), ClientError> {
    match command {
        FilesCommand::Put { id, local, remote } => {
            let view = put(api, &id, &local, remote).await?;
            match format {
                OutputFormat::Json => output::json(&view),
                OutputFormat::Text => output::stdout(
                    format!(
                        "uploaded {} to {} ({})\n",
                        local.display(),
                        printable(field(&view, "path")),
                        view.get("size")
                            .and_then(Value::as_u64)
                            .map_or_else(|| "-".to_owned(), output::size)
                    )
                    .as_bytes(),
                ),
            }
        }
        FilesCommand::Get { id, remote, local } => {
            let (target, size) = get(api, &id, &remote, local).await?;
            let to_stdout = target == Path::new("-");
            match format {
                OutputFormat::Json if !to_stdout => output::json(&json!({
                    "path": remote, "local": target.display().to_string(), "size": size
                })),
                OutputFormat::Text if !to_stdout => output::stdout(
                    format!(
                        "downloaded {remote} to {} ({})\n",
                        target.display(),
                        output::size(size)
                    )
                    .as_bytes(),
                ),
                // The file itself went to stdout: nothing else may.
                _ => Ok(()),
            }
        }
        FilesCommand::Ls { id, path, depth } => {
            let depth = depth.to_string();
            let mut params = vec![("depth", depth.as_str())];
            if let Some(path) = &path {
                params.push(("path", path.as_str()));
            }
            let listing: Value = api
                .json(
                    Method::GET,
                    &sandbox_path(&id, &format!("/files/list{}", query(&params))),
                    None,
                )
                .await?;
            match format {
                OutputFormat::Json => output::json(&listing),
                OutputFormat::Text => output::stdout(render_listing(&listing).as_bytes()),
            }
        }
    }
}

/// Streams `local` (or stdin) to `remote`; the server's `{"path", "size"}`.
async fn put(
    api: &ApiClient,
    id: &str,
    local: &Path,
    remote: Option<String>,
) -> Result<Value, ClientError> {
    let from_stdin = local == Path::new("-");
    let remote = match remote {
        Some(remote) => remote,
        None if from_stdin => {
            return Err(ClientError::Usage(
                "`files put ID -` needs the path in the sandbox: `files put ID - REMOTE`".into(),
            ))
        }
        None => file_name(local)?,
    };
    let mut headers = vec![("content-type", "application/octet-stream".to_owned())];
    let body = if from_stdin {
        stream_body(tokio::io::stdin())
    } else {
        let file = tokio::fs::File::open(local).await.map_err(|error| {
            ClientError::local(format!("cannot open {}", local.display()), error)
        })?;
        let metadata = file.metadata().await.map_err(|error| {
            ClientError::local(format!("cannot stat {}", local.display()), error)
        })?;
        if !metadata.is_file() {
            return Err(ClientError::Usage(format!(
                "{} is not a regular file",
                local.display()
            )));
        }
        // The server refuses an upload over its cap at once when it knows the size.
        headers.push(("content-length", metadata.len().to_string()));
        stream_body(file)
    };
    let path = sandbox_path(id, &format!("/files{}", query(&[("path", &remote)])));
    let response = api.send_ok(Method::PUT, &path, body, &headers).await?;
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(crate::client::http::read_error)?
        .to_bytes();
    let envelope: Value = serde_json::from_slice(&bytes)
        .map_err(|_| ClientError::Protocol("the upload answer is not JSON".into()))?;
    Ok(envelope.get("data").cloned().unwrap_or(Value::Null))
}

/// A request body read from `reader` chunk by chunk as hyper asks for it.
fn stream_body<R: AsyncRead + Unpin + Send + 'static>(reader: R) -> RequestBody {
    let chunks = futures_util::stream::unfold(Some(reader), |reader| async move {
        let mut reader = reader?;
        let mut buffer = vec![0u8; CHUNK];
        match reader.read(&mut buffer).await {
            Ok(0) => None,
            Ok(read) => {
                buffer.truncate(read);
                Some((Ok(Frame::data(Bytes::from(buffer))), Some(reader)))
            }
            // The error ends the body; the server then discards the partial file.
            Err(error) => Some((Err(error), None)),
        }
    });
    StreamBody::new(chunks).boxed_unsync()
}

/// Streams `remote` to `local` (default: its name in the current directory;
/// `-`: stdout); (where it went, bytes written). A file is written under a
/// temporary name and renamed when complete: an interrupted download leaves
/// no partial file under the final name.
async fn get(
    api: &ApiClient,
    id: &str,
    remote: &str,
    local: Option<PathBuf>,
) -> Result<(PathBuf, u64), ClientError> {
    let local = match local {
        Some(local) => local,
        None => PathBuf::from(file_name(Path::new(remote))?),
    };
    let path = sandbox_path(id, &format!("/files{}", query(&[("path", remote)])));
    let response = api
        .send_ok(Method::GET, &path, crate::client::http::empty(), &[])
        .await?;
    let mut body = response.into_body();
    if local == Path::new("-") {
        let mut stdout = tokio::io::stdout();
        let mut written = 0u64;
        while let Some(chunk) = next_chunk(&mut body).await? {
            stdout
                .write_all(&chunk)
                .await
                .map_err(|error| ClientError::local("cannot write to stdout", error))?;
            written += chunk.len() as u64;
        }
        stdout
            .flush()
            .await
            .map_err(|error| ClientError::local("cannot write to stdout", error))?;
        return Ok((local, written));
    }
    let partial = partial_name(&local);
    let result = async {
        let mut file = tokio::fs::File::create(&partial).await.map_err(|error| {
            ClientError::local(format!("cannot create {}", partial.display()), error)
        })?;
        let mut written = 0u64;
        while let Some(chunk) = next_chunk(&mut body).await? {
            file.write_all(&chunk).await.map_err(|error| {
                ClientError::local(format!("cannot write {}", partial.display()), error)
            })?;
            written += chunk.len() as u64;
        }
        file.sync_all().await.map_err(|error| {
            ClientError::local(format!("cannot write {}", partial.display()), error)
        })?;
        tokio::fs::rename(&partial, &local).await.map_err(|error| {
            ClientError::local(format!("cannot write {}", local.display()), error)
        })?;
        Ok(written)
    }
    .await;
    match result {
        Ok(written) => Ok((local, written)),
        Err(error) => {
            let _ = tokio::fs::remove_file(&partial).await;
            Err(error)
        }
    }
}

/// `.NAME.codebox-partial` next to `path`.
fn partial_name(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.codebox-partial"))
}

/// The last component of a path, refusing `..`, `/` and the empty name.
fn file_name(path: &Path) -> Result<String, ClientError> {
    match path.file_name().and_then(|name| name.to_str()) {
        Some(name) if !name.is_empty() && name != ".." && name != "." => Ok(name.to_owned()),
        _ => Err(ClientError::Usage(format!(
            "{} has no file name: give the destination explicitly",
            path.display()
        ))),
    }
}

fn render_listing(listing: &Value) -> String {
    let entries = listing
        .get("entries")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|entry| {
            let size = entry
                .get("size")
                .and_then(Value::as_u64)
                .map_or_else(|| "-".to_owned(), |size| size.to_string());
            let mut path = printable(field(entry, "path"));
            if let Some(target) = entry.get("symlink_target").and_then(Value::as_str) {
                path.push_str(" -> ");
                path.push_str(&printable(target));
            }
            vec![
                field(entry, "type").to_owned(),
                size,
                field(entry, "modified_at").to_owned(),
                path,
            ]
        })
        .collect();
    let mut text = table(&["TYPE", "SIZE", "MODIFIED", "PATH"], &rows);
    if listing.get("truncated").and_then(Value::as_bool) == Some(true) {
        text.push_str("(truncated: more entries than the server lists at once)\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_never_escape_the_current_directory() {
        assert_eq!(
            file_name(Path::new("/home/user/data.csv")).expect("name"),
            "data.csv"
        );
        assert!(file_name(Path::new("..")).is_err());
        assert!(file_name(Path::new("/")).is_err());
        assert!(file_name(Path::new("a/..")).is_err());
        assert_eq!(
            partial_name(Path::new("out/x.bin")),
            Path::new("out/.x.bin.codebox-partial")
        );
    }

    #[test]
    fn listings_show_symlink_targets_and_strip_escapes() {
        let listing = json!({"entries": [
            {"name": "l", "path": "/home/user/l\u{1b}[2J", "type": "symlink", "size": 4,
             "modified_at": "t", "symlink_target": "/etc"}], "truncated": true});
        let text = render_listing(&listing);
        assert!(
            text.contains("symlink  4     t         /home/user/l?[2J -> /etc"),
            "{text}"
        );
        assert!(text.contains("truncated"), "{text}");
    }

    #[tokio::test]
    async fn upload_bodies_stream_in_bounded_chunks() {
        let data = vec![7u8; CHUNK * 2 + 5];
        let mut body = stream_body(std::io::Cursor::new(data.clone()));
        let mut sizes = Vec::new();
        let mut total = Vec::new();
        while let Some(frame) = body.frame().await {
            let chunk = frame.expect("read").into_data().expect("data");
            sizes.push(chunk.len());
            total.extend_from_slice(&chunk);
        }
        assert!(sizes.iter().all(|&size| size <= CHUNK), "{sizes:?}");
        assert_eq!(total, data);
    }
}
