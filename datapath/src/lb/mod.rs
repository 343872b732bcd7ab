//! Service backend selection.
