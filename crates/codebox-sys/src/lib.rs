//! Syscall wrappers (filled in by the runtime work).
