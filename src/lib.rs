//! sidetrace: a small, fast tracing agent. Spans flow receivers → pipeline → exporters;
//! `admin` serves health, metrics and the local UI; `config` and `telemetry` support them all.

#![forbid(unsafe_code)]

pub mod admin;
pub mod agent;
pub mod config;
pub mod exporters;
pub mod loadgen;
pub mod model;
pub mod pipeline;
pub mod proto;
pub mod proxy;
pub mod receivers;
pub mod telemetry;
pub mod workload;
