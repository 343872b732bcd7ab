//! Which XSKMAP slots are free: the ports' ranges differ in width (a pod or the host port has
//! one rx queue per worker, a NIC uplink one per channel), so slots are handed out as
//! contiguous ranges, first fit, and merged with their neighbours when they come back.

/// The free slots of a map with `size` slots, as sorted, non-adjacent `(start, len)` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRanges {
    free: Vec<(u32, u32)>,
}

impl SlotRanges {
    /// Every slot of `0..size` free.
    pub fn new(size: u32) -> SlotRanges {
        SlotRanges {
            free: if size > 0 { vec![(0, size)] } else { vec![] },
        }
    }

    /// The lowest free run of `len` slots (taken), or None when no run is that long.
    /// Lowest first keeps the map readable in bpftool.
    pub fn take(&mut self, len: u32) -> Option<u32> {
        if len == 0 {
            return None;
        }
        let i = self.free.iter().position(|&(_, n)| n >= len)?;
        let (start, n) = self.free[i];
        if n == len {
            self.free.remove(i);
        } else {
            self.free[i] = (start + len, n - len);
        }
        Some(start)
    }

    /// Gives `start..start + len` back, merging it with free neighbours. Slots that are
    /// free already are ignored (a double give-back must not create slots twice).
    pub fn give_back(&mut self, start: u32, len: u32) {
        let end = start.saturating_add(len);
        let mut merged = (start, end);
        let mut kept = Vec::with_capacity(self.free.len() + 1);
        for &(s, n) in &self.free {
            let e = s + n;
            if e < merged.0 || s > merged.1 {
                kept.push((s, e));
            } else {
                merged = (merged.0.min(s), merged.1.max(e));
            }
        }
        kept.push(merged);
        kept.sort_unstable();
        self.free = kept.into_iter().map(|(s, e)| (s, e - s)).collect();
    }

    /// Free slots in all.
    #[cfg(test)]
    pub fn free_slots(&self) -> u32 {
        self.free.iter().map(|&(_, n)| n).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_of_any_width_are_taken_lowest_first() {
        let mut slots = SlotRanges::new(16);
        assert_eq!(slots.take(8), Some(0));
        assert_eq!(slots.take(2), Some(8));
        assert_eq!(slots.take(2), Some(10));
        assert_eq!(slots.take(5), None);
        assert_eq!(slots.take(4), Some(12));
        assert_eq!(slots.take(1), None);
        assert_eq!(slots.take(0), None);
        assert_eq!(slots.free_slots(), 0);
    }

    #[test]
    fn given_back_ranges_merge_so_a_wider_one_fits_again() {
        let mut slots = SlotRanges::new(12);
        let a = slots.take(4).unwrap();
        let b = slots.take(4).unwrap();
        let c = slots.take(4).unwrap();
        slots.give_back(a, 4);
        slots.give_back(c, 4);
        assert_eq!(slots.take(8), None, "the free runs are not adjacent");
        slots.give_back(b, 4);
        assert_eq!(slots, SlotRanges::new(12));
        assert_eq!(slots.take(12), Some(0));
    }

    #[test]
    fn a_double_give_back_does_not_make_slots() {
        let mut slots = SlotRanges::new(8);
        let a = slots.take(4).unwrap();
        slots.give_back(a, 4);
        slots.give_back(a, 4);
        slots.give_back(2, 4);
        assert_eq!(slots, SlotRanges::new(8));
        assert_eq!(slots.free_slots(), 8);
    }

    #[test]
    fn a_growing_port_moves_to_a_wider_range() {
        // The uplink at 0..2, a pod after it; the uplink grows to 4 queues: the new range
        // is taken before the old one is given back (both live during the switch).
        let mut slots = SlotRanges::new(16);
        let uplink = slots.take(2).unwrap();
        let pod = slots.take(2).unwrap();
        let grown = slots.take(4).unwrap();
        assert_eq!((uplink, pod, grown), (0, 2, 4));
        slots.give_back(uplink, 2);
        assert_eq!(slots.take(2), Some(0));
    }
}
