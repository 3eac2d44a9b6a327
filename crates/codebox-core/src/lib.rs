//! Lifecycle core (filled in by the service work).
