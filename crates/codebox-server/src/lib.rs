//! HTTP API (filled in by the service work).
