//! The gRPC headers the layers read and write on every call, as names built once.
//!
//! A header looked up by a `&str` has its name parsed and validated on every lookup: that came
//! to about 2,000 instructions a warm call (counted under callgrind) across the few headers each
//! call's layers read, a tenth of what the service costs over a bare tonic server.

use http::HeaderName;

/// The call's status code, in the trailers (or the headers of a trailers-only response).
pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// How the request's messages are compressed.
pub static GRPC_ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");
/// The encodings a peer accepts for the messages it receives.
pub static GRPC_ACCEPT_ENCODING: HeaderName = HeaderName::from_static("grpc-accept-encoding");
/// The client's deadline.
pub static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
