//! Helpers shared by the integration tests (`mod common;`).
//! Each test crate uses only some of them.
#![allow(dead_code)]

pub mod jsonnet;
