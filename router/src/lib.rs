//! The weighted HTTP router: route table, weighted revision pick, sticky
//! sessions, proxying.
//!
//! Status: reserved. Nothing lives here yet; the single-node runtime (issue
//! #4) fills it. Boundary: the router only reads route tables built from
//! committed state; it never changes state.
