//! The ceiling pipeline ([`Pipeline::MacSwapTo`](super::Pipeline::MacSwapTo)): the same
//! rings, UMEM, ledger, batching and transmit path as the datapath, with the per-frame work
//! cut down to swapping the Ethernet addresses. What it forwards is what the AF_XDP I/O
//! alone allows on this machine; `process` on top of it can only be slower.
//!
//! No table load and no flow-table lock per batch: nothing here reads them. The worker's
//! maintenance tick still takes the (private, empty) flow table every ~100 ms, which costs
//! nothing measurable.

use datapath::{DropReason, Verdict};

use super::{Worker, accept_rx};
use crate::xsk::socket::TxFrame;

/// Destination and source MAC: the first 12 bytes of the frame.
const MAC_PAIR: usize = 12;
/// Both MACs and the EtherType: anything shorter is no Ethernet frame.
const ETHERNET_HEADER: usize = 14;

impl Worker {
    /// Swaps the MACs of every frame of the batch and queues it for the output port's
    /// socket (or drops it with a reason).
    pub(super) fn swap_batch(&mut self) {
        self.c.batches += 1;
        let Worker {
            sockets,
            ledger,
            area,
            rx_batch,
            tx_queues,
            c,
            drops,
            swap_slot,
            ..
        } = self;
        for rx in rx_batch.drain(..) {
            let Some((_, mut ptr)) = accept_rx(sockets, ledger, area, c, &rx) else {
                continue;
            };
            let reason = if *swap_slot == Some(rx.slot) {
                // Sent back out of the port it came in on: no ceiling measures that.
                Some(DropReason::Hairpin)
            } else {
                // SAFETY: `receive` moved this frame to the worker in the ledger; the kernel
                // no longer touches it and nothing else borrows it until it is queued for
                // transmission or released below, after `buf` is gone.
                let buf = unsafe { ptr.as_mut() };
                let start = rx.offset as usize;
                match buf.get_mut(start..start + MAC_PAIR) {
                    Some(macs) if rx.len as usize >= ETHERNET_HEADER => {
                        let (dst, src) = macs.split_at_mut(MAC_PAIR / 2);
                        dst.swap_with_slice(src);
                        None
                    }
                    _ => Some(DropReason::MalformedEthernet),
                }
            };
            if let Some(reason) = reason {
                c.dropped += 1;
                drops.record(Verdict::Drop(reason), None);
                ledger.release(rx.frame);
                continue;
            }
            c.forwarded += 1;
            match *swap_slot {
                Some(slot) => tx_queues[slot as usize].push(TxFrame {
                    frame: rx.frame,
                    offset: rx.offset,
                    len: rx.len,
                }),
                None => {
                    c.io.no_tx_socket += 1;
                    ledger.release(rx.frame);
                }
            }
        }
    }
}
