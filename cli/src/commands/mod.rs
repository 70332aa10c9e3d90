//! One module per group of commands. These are the only functions that print.

pub mod account;
pub mod bench;
pub mod completions;
pub mod config;
pub mod dashboard;
pub mod export;
pub mod keys;
pub mod stack;
pub mod stats;
