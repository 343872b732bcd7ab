//! Who holds each UMEM frame. Every frame has exactly one owner at any time: the free
//! list, a socket's fill side (the kernel may receive into it), a socket's tx side (until
//! the kernel completes it), or the worker (between reading it from an rx ring and deciding
//! its fate). Every move checks the frame's current owner, so a frame cannot be lost or
//! handed out twice without the mismatch being counted; at shutdown the free list must hold
//! them all.

/// The owner of one frame. `u16` slots: a worker has far fewer sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Free,
    Worker,
    Fill(u16),
    Tx(u16),
}

/// Frame bookkeeping for one UMEM.
#[derive(Debug)]
pub(crate) struct Ledger {
    owners: Vec<Owner>,
    /// Free frame indices, used as a stack (recently used frames are cache-warm).
    free: Vec<u32>,
    /// Moves whose frame was not where the ledger expected it (a kernel or logic bug).
    errors: u64,
}

/// Where a worker's frames are, at one instant.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FrameLedger {
    /// Frames in the UMEM.
    pub total: u32,
    /// On the free list.
    pub free: u32,
    /// Given to the kernel to receive into and still in a fill ring.
    pub in_fill: u32,
    /// Received by the kernel into an rx ring, not yet read by the worker. Together with
    /// `in_fill` exact; the split between them is a racy read of the rings.
    pub in_rx: u32,
    /// Queued for transmission and not yet completed.
    pub in_tx: u32,
    /// Being processed (zero between batches).
    pub in_worker: u32,
    /// Ownership mismatches seen; any is a bug.
    pub errors: u64,
}

impl FrameLedger {
    /// Every frame is in exactly one place and no mismatch was ever seen.
    pub fn balanced(&self) -> bool {
        self.errors == 0
            && u64::from(self.free)
                + u64::from(self.in_fill)
                + u64::from(self.in_rx)
                + u64::from(self.in_tx)
                + u64::from(self.in_worker)
                == u64::from(self.total)
    }

    /// Every frame is back on the free list (after all sockets closed).
    pub fn all_free(&self) -> bool {
        self.balanced() && self.free == self.total
    }
}

impl Ledger {
    pub(crate) fn new(frames: u32) -> Ledger {
        Ledger {
            owners: vec![Owner::Free; frames as usize],
            // Pop order 0, 1, 2...: low frames first.
            free: (0..frames).rev().collect(),
            errors: 0,
        }
    }

    pub(crate) fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Takes a free frame for `slot`'s fill ring.
    pub(crate) fn take_for_fill(&mut self, slot: u16) -> Option<u32> {
        let idx = self.free.pop()?;
        self.owners[idx as usize] = Owner::Fill(slot);
        Some(idx)
    }

    /// Undoes `take_for_fill` for a frame the ring had no room for after all.
    pub(crate) fn untake_fill(&mut self, idx: u32, slot: u16) {
        self.expect_then(idx, Owner::Fill(slot), Owner::Free);
    }

    /// The kernel returned `idx` on `slot`'s rx ring. False (and counted) when the ledger
    /// did not have it on that socket's fill side: the descriptor must then be ignored.
    pub(crate) fn received(&mut self, idx: u32, slot: u16) -> bool {
        self.expect_then(idx, Owner::Fill(slot), Owner::Worker)
    }

    /// The worker queued `idx` on `slot`'s tx ring.
    pub(crate) fn queued_tx(&mut self, idx: u32, slot: u16) {
        self.expect_then(idx, Owner::Worker, Owner::Tx(slot));
    }

    /// The worker is done with `idx` (dropped, or could not be queued).
    pub(crate) fn release(&mut self, idx: u32) {
        self.expect_then(idx, Owner::Worker, Owner::Free);
    }

    /// The kernel completed `idx` on `slot`'s completion ring.
    pub(crate) fn completed(&mut self, idx: u32, slot: u16) -> bool {
        self.expect_then(idx, Owner::Tx(slot), Owner::Free)
    }

    /// `slot`'s socket is closed: whatever it held (fill ring, rx ring, unfinished tx) is
    /// ours again. Returns (fill side, tx side) frames reclaimed.
    pub(crate) fn reclaim(&mut self, slot: u16) -> (u32, u32) {
        let (mut fill, mut tx) = (0, 0);
        for (idx, owner) in self.owners.iter_mut().enumerate() {
            match *owner {
                Owner::Fill(s) if s == slot => fill += 1,
                Owner::Tx(s) if s == slot => tx += 1,
                _ => continue,
            }
            *owner = Owner::Free;
            self.free.push(idx as u32);
        }
        (fill, tx)
    }

    /// Moves `idx` from `from` to `to` if it is there; otherwise counts an error and
    /// leaves it alone.
    fn expect_then(&mut self, idx: u32, from: Owner, to: Owner) -> bool {
        match self.owners.get_mut(idx as usize) {
            Some(owner) if *owner == from => {
                *owner = to;
                if to == Owner::Free {
                    self.free.push(idx);
                }
                true
            }
            _ => {
                self.errors += 1;
                false
            }
        }
    }

    /// Counts owners. `in_rx` is how many of the fill side the rings say were received.
    pub(crate) fn snapshot(&self, in_rx: u32) -> FrameLedger {
        let mut l = FrameLedger {
            total: self.owners.len() as u32,
            errors: self.errors,
            ..FrameLedger::default()
        };
        let mut fill_side = 0u32;
        for owner in &self.owners {
            match owner {
                Owner::Free => l.free += 1,
                Owner::Worker => l.in_worker += 1,
                Owner::Fill(_) => fill_side += 1,
                Owner::Tx(_) => l.in_tx += 1,
            }
        }
        l.in_rx = in_rx.min(fill_side);
        l.in_fill = fill_side - l.in_rx;
        if l.free as usize != self.free.len() {
            // The stack and the owner table disagree: report it as a mismatch.
            l.errors += 1;
        }
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_move_between_owners_and_come_back() {
        let mut l = Ledger::new(4);
        let a = l.take_for_fill(0).unwrap();
        let b = l.take_for_fill(1).unwrap();
        assert!(l.received(a, 0));
        l.queued_tx(a, 1);
        assert!(l.completed(a, 1));
        assert!(!l.received(b, 0), "b sits on socket 1, not 0");
        assert_eq!(l.snapshot(0).errors, 1);
        assert_eq!(l.reclaim(1), (1, 0));
        let s = l.snapshot(0);
        assert_eq!(s.free, 4);
        assert!(!s.all_free(), "the mismatch stays counted");
    }

    #[test]
    fn snapshot_splits_fill_and_rx() {
        let mut l = Ledger::new(8);
        for _ in 0..5 {
            l.take_for_fill(0).unwrap();
        }
        let s = l.snapshot(2);
        assert_eq!((s.in_fill, s.in_rx, s.free), (3, 2, 3));
        assert!(s.balanced());
    }
}
