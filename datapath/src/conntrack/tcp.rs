//! The TCP state machine conntrack keeps per flow: only as fine as the timeouts need.
//!
//! Owns: how one forwarded segment's flags move a flow's [`TcpState`]. Never: sequence or
//! window checks (the end hosts do those; Linux's `nf_conntrack_tcp_be_liberal` mode makes
//! the same trade), dropping packets (the caller decides what an odd flag combination means).
//!
//! | state (before)      | segment (direction, flags)                   | state (after)  |
//! |---------------------|----------------------------------------------|----------------|
//! | any                 | RST, either direction                        | Closed         |
//! | None                | SYN (no ACK)                                 | SynSent        |
//! | None                | SYN+ACK                                      | SynReceived    |
//! | None                | FIN                                          | FinWait        |
//! | None                | anything else: mid-stream pickup, e.g. after an agent restart | Established |
//! | SynSent             | SYN+ACK from reply                           | SynReceived    |
//! | SynReceived         | ACK without SYN from original                | Established    |
//! | SynSent .. Established | FIN from one side                         | FinWait        |
//! | FinWait             | FIN from the other side                      | Closing        |
//! | Closing             | ACK without FIN from the side opposite the second FIN (the last ACK) | Closed |
//! | Closed, Closing     | SYN (no ACK): the client port is being reused | SynSent       |
//! | otherwise           | unchanged (retransmissions, data, window updates) |           |
//!
//! The last-but-one row is a fallback: `Flows::lookup_with_flags` already treats such a SYN
//! as the end of the old flow, so the caller starts a new one (fresh backend choice); a
//! caller that only uses `lookup` still gets a working SynSent flow instead of a stale one.

use super::entry::{TcpState, status};
use super::key::Direction;

/// TCP header flag bits, as in the header's 13th byte.
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

use flags::{ACK, FIN, RST, SYN};

/// Is this a connection-opening SYN (SYN without ACK, without RST)?
pub fn is_opening_syn(tcp_flags: u8) -> bool {
    tcp_flags & (SYN | ACK | RST) == SYN
}

/// Advances `state` for one segment; `st` holds the FIN bookkeeping (`status::FIN_*`).
pub(super) fn step(state: TcpState, st: u8, dir: Direction, tcp_flags: u8) -> (TcpState, u8) {
    use TcpState::*;
    let fin_bit = match dir {
        Direction::Original => status::FIN_ORIGINAL,
        Direction::Reply => status::FIN_REPLY,
    };
    let fin_bits = status::FIN_ORIGINAL | status::FIN_REPLY | status::LAST_FIN_REPLY;
    if tcp_flags & RST != 0 {
        return (Closed, st);
    }
    let syn = tcp_flags & SYN != 0;
    let ack = tcp_flags & ACK != 0;
    let fin = tcp_flags & FIN != 0;
    match state {
        Closed | Closing if syn && !ack => (SynSent, st & !fin_bits),
        Closed => (Closed, st),
        Closing => {
            let last_fin_from_reply = st & status::LAST_FIN_REPLY != 0;
            let from_other_side = (dir == Direction::Reply) != last_fin_from_reply;
            if ack && !fin && !syn && from_other_side {
                (Closed, st)
            } else {
                (Closing, st)
            }
        }
        FinWait if fin && st & fin_bit == 0 => {
            let last = if dir == Direction::Reply {
                status::LAST_FIN_REPLY
            } else {
                0
            };
            (Closing, st | fin_bit | last)
        }
        FinWait => (FinWait, st),
        _ if fin => (FinWait, st | fin_bit),
        None if syn && ack => (SynReceived, st),
        None if syn => (SynSent, st),
        None => (Established, st),
        SynSent if syn && ack && dir == Direction::Reply => (SynReceived, st),
        SynReceived if ack && !syn && dir == Direction::Original => (Established, st),
        other => (other, st),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{Original as O, Reply as R};
    use TcpState::*;

    fn run(segments: &[(Direction, u8)]) -> TcpState {
        let (mut state, mut st) = (None, 0);
        for &(dir, f) in segments {
            (state, st) = step(state, st, dir, f);
        }
        state
    }

    #[test]
    fn handshake_then_close_from_client() {
        let open = [(O, SYN), (R, SYN | ACK), (O, ACK)];
        assert_eq!(run(&open[..1]), SynSent);
        assert_eq!(run(&open[..2]), SynReceived);
        assert_eq!(run(&open), Established);
        let mut s = open.to_vec();
        s.push((O, FIN | ACK));
        assert_eq!(run(&s), FinWait);
        s.push((R, ACK)); // acks the FIN, half-closed
        s.push((R, ACK | flags::PSH)); // data still flows the other way
        assert_eq!(run(&s), FinWait);
        s.push((R, FIN | ACK));
        assert_eq!(run(&s), Closing);
        s.push((R, FIN | ACK)); // retransmitted second FIN does not close
        assert_eq!(run(&s), Closing);
        s.push((O, ACK)); // the last ACK, from the side opposite the second FIN
        assert_eq!(run(&s), Closed);
    }

    #[test]
    fn close_from_server_and_simultaneous_close() {
        let est = [(O, SYN), (R, SYN | ACK), (O, ACK)];
        let mut s = est.to_vec();
        s.extend([(R, FIN | ACK), (O, FIN | ACK)]);
        assert_eq!(run(&s), Closing);
        s.push((O, ACK)); // same side as the second FIN: not the last ACK
        assert_eq!(run(&s), Closing);
        s.push((R, ACK));
        assert_eq!(run(&s), Closed);

        let mut s = est.to_vec();
        s.extend([(O, FIN | ACK), (R, FIN | ACK), (O, ACK)]);
        assert_eq!(run(&s), Closed);
    }

    #[test]
    fn rst_closes_from_any_state_either_way() {
        for prefix in [
            &[][..],
            &[(O, SYN)][..],
            &[(O, SYN), (R, SYN | ACK)][..],
            &[(O, ACK)][..],
            &[(O, ACK), (O, FIN)][..],
            &[(O, ACK), (O, FIN), (R, FIN)][..],
        ] {
            for rst in [(O, RST), (R, RST | ACK)] {
                let mut s = prefix.to_vec();
                s.push(rst);
                assert_eq!(run(&s), Closed, "{s:?}");
            }
        }
    }

    #[test]
    fn mid_stream_pickup_is_established() {
        assert_eq!(run(&[(O, ACK)]), Established);
        assert_eq!(run(&[(R, ACK | flags::PSH)]), Established);
        assert_eq!(run(&[(O, FIN | ACK)]), FinWait);
        assert_eq!(run(&[(R, SYN | ACK)]), SynReceived);
    }

    #[test]
    fn odd_segments_leave_state_alone() {
        // SYN-ACK from the client side, ACK from the server during the handshake,
        // a late SYN on an established flow: no transition.
        assert_eq!(run(&[(O, SYN), (O, SYN | ACK)]), SynSent);
        assert_eq!(run(&[(O, SYN), (R, SYN | ACK), (R, ACK)]), SynReceived);
        assert_eq!(run(&[(O, ACK), (O, SYN)]), Established);
        assert_eq!(run(&[(O, ACK), (O, FIN), (O, FIN)]), FinWait);
    }

    #[test]
    fn syn_after_close_restarts() {
        assert_eq!(run(&[(O, ACK), (R, RST), (O, SYN)]), SynSent);
        assert_eq!(run(&[(O, ACK), (O, FIN), (R, FIN), (O, SYN)]), SynSent);
        // and the FIN bookkeeping starts over.
        assert_eq!(
            run(&[
                (O, ACK),
                (O, FIN),
                (R, FIN),
                (O, SYN),
                (R, SYN | ACK),
                (O, ACK),
                (R, FIN)
            ]),
            FinWait
        );
        assert_eq!(run(&[(O, ACK), (R, RST), (O, ACK)]), Closed);
        assert!(is_opening_syn(SYN));
        assert!(!is_opening_syn(SYN | ACK));
        assert!(!is_opening_syn(SYN | RST));
    }
}
