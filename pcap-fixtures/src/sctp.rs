//! SCTP packets for the cases, with a CRC32c of the tests' own.
//!
//! etherparse has no SCTP, and the datapath's checksum code is what a case checks, so the
//! checksum comes from the tests' reference implementation ([`testkit::oracle::crc32c`]:
//! Castagnoli, reflected polynomial 0x82F63B78, initial value and final XOR all ones;
//! RFC 4960 Appendix B) over the whole SCTP packet with the checksum field zeroed. The
//! value goes on the wire least significant byte first, as Linux (`cpu_to_le32` in
//! `sctp_compute_cksum`) and Wireshark have it: RFC 4960's bit-reflected CRC is defined
//! that way.

use testkit::oracle::crc32c;

/// Chunk types (RFC 4960 §3.2).
const CHUNK_INIT: u8 = 1;
const CHUNK_INIT_ACK: u8 = 2;
/// INIT ACK's State Cookie parameter (RFC 4960 §3.3.3.1).
const PARAM_STATE_COOKIE: u16 = 7;

/// An SCTP packet: common header with `vtag`, then `chunks`, checksum filled in.
pub fn packet(sport: u16, dport: u16, vtag: u32, chunks: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + chunks.len());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&vtag.to_be_bytes());
    p.extend_from_slice(&[0; 4]); // the checksum, computed over the packet with it zeroed
    p.extend_from_slice(chunks);
    let sum = crc32c(&p);
    p[8..12].copy_from_slice(&sum.to_le_bytes());
    p
}

/// INIT and INIT ACK share their fixed part: initiate tag, a_rwnd, outbound and inbound
/// streams, initial TSN; `params` follow.
fn init_chunk(chunk_type: u8, initiate_tag: u32, params: &[u8]) -> Vec<u8> {
    let len = u16::try_from(20 + params.len()).expect("chunk fits");
    let mut c = vec![chunk_type, 0];
    c.extend_from_slice(&len.to_be_bytes());
    c.extend_from_slice(&initiate_tag.to_be_bytes());
    c.extend_from_slice(&106_496u32.to_be_bytes());
    c.extend_from_slice(&10u16.to_be_bytes());
    c.extend_from_slice(&65_535u16.to_be_bytes());
    c.extend_from_slice(&initiate_tag.wrapping_add(1).to_be_bytes());
    c.extend_from_slice(params);
    c
}

/// The INIT a client's association setup sends: verification tag 0 (it has none yet).
pub fn init_packet(sport: u16, dport: u16, initiate_tag: u32) -> Vec<u8> {
    packet(sport, dport, 0, &init_chunk(CHUNK_INIT, initiate_tag, &[]))
}

/// The server's INIT ACK: tagged with the client's initiate tag, carrying its own tag
/// and an (opaque, 8-byte) State Cookie.
pub fn init_ack_packet(sport: u16, dport: u16, peer_tag: u32, initiate_tag: u32) -> Vec<u8> {
    let mut cookie = PARAM_STATE_COOKIE.to_be_bytes().to_vec();
    cookie.extend_from_slice(&12u16.to_be_bytes());
    cookie.extend_from_slice(b"cookie!!");
    packet(
        sport,
        dport,
        peer_tag,
        &init_chunk(CHUNK_INIT_ACK, initiate_tag, &cookie),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_packet_checksum_verifies() {
        let p = init_packet(5000, 9000, 0x1234_5678);
        let mut zeroed = p.clone();
        zeroed[8..12].fill(0);
        assert_eq!(
            u32::from_le_bytes([p[8], p[9], p[10], p[11]]),
            crc32c(&zeroed)
        );
        assert_eq!(p.len(), 32);
        let ack = init_ack_packet(9000, 5000, 0x1234_5678, 1);
        assert_eq!(&ack[4..8], &0x1234_5678u32.to_be_bytes());
        assert_eq!(ack.len(), 12 + 20 + 12);
    }
}
