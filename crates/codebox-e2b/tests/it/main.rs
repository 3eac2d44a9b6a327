//! The E2B gateway in-process, over the fake runtime: the control plane, the
//! code interpreter, routing by headers and by Host, and the hostile cases
//! (no token, another sandbox's token, another tenant's sandbox, unknown
//! sandboxes and ports, failed-auth rate limits).

mod support;

mod control;
mod interpreter;
mod routing;
