//! Configuration (filled in by the service work).
