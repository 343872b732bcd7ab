//! Shared by the attach and program tests: namespaces `kxld-<pid>-<n>-t`.

#![allow(dead_code, reason = "each test binary uses a different part")]

pub use testkit::netns::Netns;
pub use testkit::root::root_or_skip;

/// A namespace `kxld-<pid>-<n>-t`, deleted (with every interface in it, and so every XDP
/// program attached to them) when dropped, even if the test failed.
pub fn netns() -> Netns {
    Netns::with_prefix("kxld", "t")
}
