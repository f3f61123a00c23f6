//! Bursar: durable payment-and-enrollment workflows on PostgreSQL.

pub mod api;
pub mod bench;
pub mod chaos;
pub mod config;
pub mod db;
pub mod domain;
pub mod engine;
mod lanes;
pub mod lms;
pub mod metrics;
pub mod notify;
pub mod ops;
pub mod providers;
pub mod signature;
pub mod steps;
pub mod tenants;
pub mod workflows;
