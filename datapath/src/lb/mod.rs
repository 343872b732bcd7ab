//! Service backend selection: Maglev tables per Service port (built by translate, read
//! by the pipeline), so every node picks the same backend for the same flow and a
//! backend change moves as few flows as possible.

pub mod maglev;
/// A naive second implementation that the tests check `maglev` against.
#[cfg(test)]
mod maglev_reference;
pub mod murmur3;
