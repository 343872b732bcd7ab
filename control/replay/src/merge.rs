//! The processing order of several inputs: a k-way merge by timestamp.
//!
//! Each file keeps its own order (§4: "processed in file order"), even if its timestamps
//! go backwards; between files the earliest head goes first, ties going to the input named
//! first on the command line. So one input is replayed exactly in file order, and the order
//! never depends on anything but the inputs.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A packet's place: (input number in `--in` order, index within that input).
pub type Slot = (usize, usize);

/// The processing order of the packets of several inputs, given each input's timestamps.
pub fn merge_order(timestamps: &[Vec<u64>]) -> Vec<Slot> {
    let total = timestamps.iter().map(Vec::len).sum();
    let mut order = Vec::with_capacity(total);
    // Heap of each input's next packet, smallest (timestamp, input) first.
    let mut heads: BinaryHeap<Reverse<(u64, usize)>> = timestamps
        .iter()
        .enumerate()
        .filter_map(|(input, ts)| ts.first().map(|&t| Reverse((t, input))))
        .collect();
    let mut next = vec![0usize; timestamps.len()];
    while let Some(Reverse((_, input))) = heads.pop() {
        let index = next[input];
        order.push((input, index));
        next[input] = index + 1;
        if let Some(&t) = timestamps[input].get(index + 1) {
            heads.push(Reverse((t, input)));
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_by_time_ties_to_first_input() {
        let order = merge_order(&[vec![10, 20, 30], vec![5, 20, 40]]);
        assert_eq!(order, vec![(1, 0), (0, 0), (0, 1), (1, 1), (0, 2), (1, 2)]);
    }

    #[test]
    fn keeps_file_order_when_time_goes_backwards() {
        assert_eq!(
            merge_order(&[vec![30, 10, 20]]),
            vec![(0, 0), (0, 1), (0, 2)]
        );
        let order = merge_order(&[vec![30, 10], vec![20]]);
        assert_eq!(order, vec![(1, 0), (0, 0), (0, 1)]);
    }

    #[test]
    fn empty_inputs() {
        assert!(merge_order(&[]).is_empty());
        assert_eq!(merge_order(&[vec![], vec![1]]), vec![(1, 0)]);
    }
}
