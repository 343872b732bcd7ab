pub mod agent;
pub mod cli;
pub mod config;
pub mod replay;
pub mod state;
pub mod translate;
