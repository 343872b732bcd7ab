//! A packet buffer with headroom: the one shape every driver hands to `process`.
//!
//! A UMEM frame, a replay buffer and a bench buffer all look like this: a fixed byte
//! region, with the packet occupying `start..end`. Encapsulation grows the packet into
//! the headroom in front of it, decapsulation shrinks it from the front; nothing is
//! copied except the headers being written.

/// Headroom every driver should leave in front of a packet: room for an outer
/// Ethernet + IPv4 + UDP + VXLAN header (50 bytes) or for turning a packet into an
/// ICMP error about itself (Ethernet + IPv6 + ICMPv6 = 62), with margin.
pub const DEFAULT_HEADROOM: usize = 256;

/// A mutable view of one packet inside a larger buffer.
#[derive(Debug)]
pub struct Frame<'a> {
    buf: &'a mut [u8],
    start: usize,
    end: usize,
}

impl<'a> Frame<'a> {
    /// A frame whose packet is `buf[start..start + len]`. Out-of-range values are clamped,
    /// so a bad driver can only get a shorter packet, never a panic.
    pub fn new(buf: &'a mut [u8], start: usize, len: usize) -> Frame<'a> {
        let start = start.min(buf.len());
        let end = start.saturating_add(len).min(buf.len());
        Frame { buf, start, end }
    }

    /// Copies `packet` into `buf` after `headroom` bytes and returns the frame over it.
    /// Returns `None` when the buffer is too small.
    pub fn load(buf: &'a mut [u8], headroom: usize, packet: &[u8]) -> Option<Frame<'a>> {
        let end = headroom.checked_add(packet.len())?;
        buf.get_mut(headroom..end)?.copy_from_slice(packet);
        Some(Frame {
            buf,
            start: headroom,
            end,
        })
    }

    /// The packet bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Free bytes in front of the packet.
    pub fn headroom(&self) -> usize {
        self.start
    }

    /// Free bytes after the packet.
    pub fn tailroom(&self) -> usize {
        self.buf.len() - self.end
    }

    /// Offset of the packet within the underlying buffer (for drivers that transmit it).
    pub fn offset(&self) -> usize {
        self.start
    }

    /// Grows the packet by `n` bytes at the front. The new bytes keep whatever the buffer
    /// held; the caller writes them. Returns false (and changes nothing) without headroom.
    #[must_use]
    pub fn push_front(&mut self, n: usize) -> bool {
        if n > self.start {
            return false;
        }
        self.start -= n;
        true
    }

    /// Removes `n` bytes from the front. Returns false (and changes nothing) if shorter.
    #[must_use]
    pub fn pull_front(&mut self, n: usize) -> bool {
        if n > self.len() {
            return false;
        }
        self.start += n;
        true
    }

    /// Cuts the packet to at most `len` bytes.
    pub fn truncate(&mut self, len: usize) {
        if len < self.len() {
            self.end = self.start + len;
        }
    }

    /// Sets the packet length, growing into the tailroom if needed. Returns false if it does not fit.
    #[must_use]
    pub fn set_len(&mut self, len: usize) -> bool {
        match self.start.checked_add(len) {
            Some(end) if end <= self.buf.len() => {
                self.end = end;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_and_pull_stay_in_bounds() {
        let mut buf = [0u8; 64];
        let mut f = Frame::load(&mut buf, 10, &[1, 2, 3]).unwrap();
        assert!(!f.push_front(11));
        assert!(f.push_front(10));
        assert_eq!(f.len(), 13);
        assert!(f.pull_front(12));
        assert_eq!(f.data(), &[3]);
        assert!(!f.pull_front(2));
        assert!(f.set_len(52));
        assert!(!f.set_len(53));
        f.truncate(1);
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn new_clamps_bad_driver_values() {
        let mut buf = [0u8; 8];
        let f = Frame::new(&mut buf, 100, 100);
        assert!(f.is_empty());
    }
}
