pub mod cli;
pub mod config;
pub mod lab;
pub mod probe;
pub mod replay;
pub mod state;
pub mod translate;
