pub mod agent;
pub mod agent_api;
pub mod cli;
pub mod cni;
pub mod config;
pub mod replay;
pub mod state;
pub mod translate;
