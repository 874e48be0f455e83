//! The HTTP face of the service: the accept loop and its drain, routing,
//! authentication, request bodies, and the one table every answer is
//! rendered from.

pub mod answer;
pub mod app;
pub mod auth;
pub mod body;
pub mod relay;
pub mod server;
pub mod status_callback;
pub mod verify;
