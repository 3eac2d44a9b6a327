//! Host<->agent protocol (filled in by the runtime work).
