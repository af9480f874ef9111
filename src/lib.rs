//! mlbox: one binary that is a whole ML platform. See docs/ARCHITECTURE.md for the map.

pub mod app;
pub mod artifacts;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod data;
pub mod engine;
pub mod error;
pub mod lock;
pub mod logs;
pub mod maintenance;
pub mod metrics;
pub mod ops;
pub mod pipeline;
pub mod registry;
pub mod search;
pub mod server;
pub mod serving;
pub mod store;
pub mod train;
