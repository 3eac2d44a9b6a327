//! The route table of files inside a sandbox (issue 5), split from `routes.rs`
//! for size; same shape as the rest of the table.

use codebox_types::ErrorCode;

use crate::file_handlers;
use crate::openapi::{ParamDoc, ParamLocation, RouteDoc, SuccessBody};
use crate::routes::{authenticated, route, ApiRoute, ID_PARAM};

const FILES: &str = "/api/v1/sandboxes/{id}/files";

const PATH_PARAM: ParamDoc = ParamDoc {
    name: "path",
    location: ParamLocation::Query,
    description: "A path inside the sandbox (relative ones start at /home/user; `..` never \
        leaves the sandbox). 1 to 4096 bytes.",
    schema_type: "string",
};
const DEPTH_PARAM: ParamDoc = ParamDoc {
    name: "depth",
    location: ParamLocation::Query,
    description: "Levels listed, 1 (the children, default) to 16",
    schema_type: "integer",
};
const RECURSIVE_PARAM: ParamDoc = ParamDoc {
    name: "recursive",
    location: ParamLocation::Query,
    description: "Delete a directory with its content (default false)",
    schema_type: "boolean",
};
const RECURSIVE_WATCH_PARAM: ParamDoc = ParamDoc {
    name: "recursive",
    location: ParamLocation::Query,
    description: "Watch the directories below too (default false)",
    schema_type: "boolean",
};
const PATH_PARAMS: &[ParamDoc] = &[ID_PARAM, PATH_PARAM];

const FILE_ERRORS: &[ErrorCode] = &[
    ErrorCode::NotFound,
    ErrorCode::SandboxGone,
    ErrorCode::Conflict,
    ErrorCode::ValidationError,
];
const JSON_FILE_ERRORS: &[ErrorCode] = &[
    ErrorCode::NotFound,
    ErrorCode::SandboxGone,
    ErrorCode::Conflict,
    ErrorCode::ValidationError,
    ErrorCode::InvalidJson,
    ErrorCode::UnsupportedMediaType,
];
const UPLOAD_ERRORS: &[ErrorCode] = &[
    ErrorCode::NotFound,
    ErrorCode::SandboxGone,
    ErrorCode::Conflict,
    ErrorCode::ValidationError,
    ErrorCode::PayloadTooLarge,
    ErrorCode::ResourceLimitError,
    ErrorCode::Timeout,
];

const MULTIPART_ERRORS: &[ErrorCode] = &[
    ErrorCode::NotFound,
    ErrorCode::SandboxGone,
    ErrorCode::Conflict,
    ErrorCode::ValidationError,
    ErrorCode::PayloadTooLarge,
    ErrorCode::UnsupportedMediaType,
    ErrorCode::ResourceLimitError,
    ErrorCode::Timeout,
];

const DOWNLOAD_DESCRIPTION: &str = "Streams a regular file (binary-safe) with Content-Length. \
    A single `Range: bytes=a-b`, `bytes=a-` or `bytes=-n` answers 206 with Content-Range; a \
    range past the end answers 416 (code VALIDATION_ERROR) with `Content-Range: bytes */size`; \
    several ranges are ignored (200, whole file). FIFOs, sockets and devices are refused (400).";
const UPLOAD_DESCRIPTION: &str = "The raw request body becomes the file (parents created, an \
    existing file replaced atomically). Streamed, never buffered whole; at most \
    `limits.max_upload_bytes` (100 MiB by default; 413 beyond) and counted against the \
    sandbox's disk limit (429 RESOURCE_LIMIT_ERROR when full). A failed upload leaves no \
    partial file.";
const MULTIPART_DESCRIPTION: &str = "Uploads several files at once from a \
    `multipart/form-data` body: each part is a file whose destination path is its `filename` \
    (or its field `name` when it has no filename; relative paths start at /home/user, absolute \
    ones stay inside the sandbox). Parts are streamed one after the other like PUT, never \
    buffered whole, each capped at `limits.max_upload_bytes` (413) and counted against the \
    sandbox's disk limit (429 RESOURCE_LIMIT_ERROR). At most 1000 parts; a part's headers may \
    not exceed 1 MiB. The first failing part ends the request: its partial file is removed, \
    the files written before it stay and are listed in `data.files` beside `error`. Another \
    Content-Type is 415.";
const LIST_DESCRIPTION: &str = "Entries under a directory (default /home/user), directory by \
    directory, each sorted by name; symlinks are listed, never followed. At most 10 000 \
    entries (`truncated`).";
const STAT_DESCRIPTION: &str = "The entry at `path` (a symlink itself, not its target).";
const MKDIR_DESCRIPTION: &str = "Creates a directory, with its parents unless `parents` is false.";
const MOVE_DESCRIPTION: &str = "Renames `from` to `to` inside the sandbox; an existing `to` is \
    replaced only with `overwrite` (409 otherwise).";
const DELETE_DESCRIPTION: &str = "Removes a file, a symlink or an empty directory (a \
    non-empty one with `recursive=true`; 409 otherwise).";

const WATCH_DESCRIPTION: &str = "Server-sent events for changes under a directory (default \
    /home/user; below it too with `recursive=true`): `create`, `write`, `remove`, `rename`, \
    `chmod`, and `overflow` when changes were lost; each `data` is {type, path, is_dir}. The \
    watch is set before the response starts; it ends when the directory is gone.";

const fn file_route(
    method: &'static str,
    path: &'static str,
    operation_id: &'static str,
    summary: &'static str,
    description: &'static str,
) -> RouteDoc {
    RouteDoc {
        tag: "files",
        params: PATH_PARAMS,
        errors: FILE_ERRORS,
        ..authenticated(method, path, operation_id, summary, description)
    }
}

pub(crate) fn file_routes() -> Vec<ApiRoute> {
    let download = file_route(
        "get",
        FILES,
        "download_file",
        "Download a file",
        DOWNLOAD_DESCRIPTION,
    );
    let upload = file_route(
        "put",
        FILES,
        "upload_file",
        "Upload a file",
        UPLOAD_DESCRIPTION,
    );
    let multipart = file_route(
        "post",
        FILES,
        "upload_files",
        "Upload several files (multipart)",
        MULTIPART_DESCRIPTION,
    );
    let delete = file_route(
        "delete",
        FILES,
        "delete_file",
        "Delete a path",
        DELETE_DESCRIPTION,
    );
    let list = file_route(
        "get",
        "/api/v1/sandboxes/{id}/files/list",
        "list_files",
        "List a directory",
        LIST_DESCRIPTION,
    );
    let stat = file_route(
        "get",
        "/api/v1/sandboxes/{id}/files/stat",
        "stat_file",
        "Stat a path",
        STAT_DESCRIPTION,
    );
    let mkdir = file_route(
        "post",
        "/api/v1/sandboxes/{id}/files/mkdir",
        "make_directory",
        "Create a directory",
        MKDIR_DESCRIPTION,
    );
    let moved = file_route(
        "post",
        "/api/v1/sandboxes/{id}/files/move",
        "move_path",
        "Move or rename a path",
        MOVE_DESCRIPTION,
    );
    let watch = file_route(
        "get",
        "/api/v1/sandboxes/{id}/files/watch",
        "watch_files",
        "Watch a directory",
        WATCH_DESCRIPTION,
    );
    vec![
        route(
            RouteDoc {
                params: &[ID_PARAM, PATH_PARAM, RECURSIVE_WATCH_PARAM],
                success: SuccessBody::Text("text/event-stream"),
                ..watch
            },
            file_handlers::watch,
        ),
        route(
            RouteDoc {
                success: SuccessBody::Text("application/octet-stream"),
                ..download
            },
            file_handlers::download,
        ),
        route(
            RouteDoc {
                request: Some("application/octet-stream"),
                success_status: 201,
                success: SuccessBody::Envelope("FileUpload"),
                errors: UPLOAD_ERRORS,
                ..upload
            },
            file_handlers::upload,
        ),
        route(
            RouteDoc {
                params: &[ID_PARAM],
                request: Some("multipart/form-data"),
                success_status: 201,
                success: SuccessBody::Envelope("FileUploads"),
                errors: MULTIPART_ERRORS,
                ..multipart
            },
            file_handlers::upload_multipart,
        ),
        route(
            RouteDoc {
                params: &[ID_PARAM, PATH_PARAM, RECURSIVE_PARAM],
                success: SuccessBody::Envelope("FileDeleted"),
                ..delete
            },
            file_handlers::remove,
        ),
        route(
            RouteDoc {
                params: &[ID_PARAM, PATH_PARAM, DEPTH_PARAM],
                success: SuccessBody::Envelope("FileListing"),
                ..list
            },
            file_handlers::list,
        ),
        route(
            RouteDoc {
                success: SuccessBody::Envelope("FileEntry"),
                ..stat
            },
            file_handlers::stat,
        ),
        route(
            RouteDoc {
                params: &[ID_PARAM],
                request: Some("MakeDirRequest"),
                success_status: 201,
                success: SuccessBody::Envelope("FileEntry"),
                errors: JSON_FILE_ERRORS,
                ..mkdir
            },
            file_handlers::make_dir,
        ),
        route(
            RouteDoc {
                params: &[ID_PARAM],
                request: Some("MoveRequest"),
                success: SuccessBody::Envelope("FileEntry"),
                errors: JSON_FILE_ERRORS,
                ..moved
            },
            file_handlers::move_path,
        ),
    ]
}
