//! The HTTP face of the service: the accept loop and its drain, routing,
//! authentication, request bodies, and the one table every answer is
//! rendered from.

pub(crate) mod answer;
pub mod app;
pub(crate) mod auth;
pub(crate) mod body;
pub(crate) mod relay;
pub mod server;
pub(crate) mod status_callback;
pub(crate) mod verify;
