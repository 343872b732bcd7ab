
pub mod cli;
pub mod replay;
pub mod config;
pub mod state;
pub mod translate;
