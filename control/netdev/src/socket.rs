//! One rtnetlink socket and the three exchanges everything else is made of: a change the
//! kernel acknowledges, a "get" answered by one message, and a dump.
//!
//! Blocking, one request at a time, with a receive timeout so that no caller (kxdp-cni above
//! all, which a runtime expects to answer) can hang on the kernel.

use std::cell::Cell;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::error::{NetdevError, Result};

/// How long one request may wait for the kernel's answer. The kernel answers in
/// microseconds; this only bounds the impossible case, so it is generous.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Big enough for any one datagram the kernel sends a dump in (it caps those at 32 KiB);
/// a longer one is reported, never silently cut.
const RECV_BUFFER: usize = 64 * 1024;

/// How often a dump the kernel marked inconsistent (NLM_F_DUMP_INTR: the table changed
/// while it was being read) is started again before giving up.
const DUMP_RETRIES: usize = 5;

/// `NLMSGERR_ATTR_MSG`: the kernel's explanation in an extended ACK.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// The echoed request header in an error (only the header, as NETLINK_CAP_ACK is set).
const NLMSG_HEADER_LEN: usize = 16;

/// An rtnetlink socket, and with it a network namespace: the one the thread that opened it
/// was in. Requests made through it act there, whichever thread makes them.
#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    /// The last request's sequence number: its answers carry it.
    seq: Cell<u32>,
}

/// What a request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exchange {
    /// A change: the kernel's ACK (NLMSG_ERROR with code 0).
    Ack,
    /// A get: exactly one answer.
    Get,
    /// Everything until NLMSG_DONE.
    Dump,
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> Result<Netlink> {
        let socket = open_socket(0)?;
        // Refusals carry the kernel's explanation; errors echo only our header.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        set_recv_timeout(socket.as_raw_fd(), REQUEST_TIMEOUT)?;
        Ok(Netlink {
            socket,
            seq: Cell::new(0),
        })
    }

    /// A socket in the network namespace at `netns` (a `/run/netns/<name>` or
    /// `/proc/<pid>/ns/net` path), opened by a thread that entered it (see
    /// [`crate::netns::run_in`]); this thread stays where it is.
    pub fn open_in(netns: &Path) -> Result<Netlink> {
        crate::netns::run_in(netns, Netlink::open)
    }

    /// The socket's descriptor: the ethtool ioctls go through it, so they act in its
    /// namespace too.
    pub(crate) fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Sends a change and waits for the kernel's ACK.
    pub(crate) fn ack(
        &self,
        message: RouteNetlinkMessage,
        flags: u16,
        request: &dyn Fn() -> String,
    ) -> Result<()> {
        self.exchange(message, flags, Exchange::Ack, request)
            .map(drop)
    }

    /// Sends a get and returns its one answer.
    pub(crate) fn get(
        &self,
        message: RouteNetlinkMessage,
        request: &dyn Fn() -> String,
    ) -> Result<RouteNetlinkMessage> {
        let mut answers = self.exchange(message, 0, Exchange::Get, request)?;
        answers.pop().ok_or_else(|| NetdevError::Decode {
            request: request(),
            why: "no answer message".to_string(),
        })
    }

    /// Dumps a table, started again when the kernel says it changed meanwhile.
    pub(crate) fn dump(
        &self,
        message: RouteNetlinkMessage,
        request: &dyn Fn() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        for _ in 0..DUMP_RETRIES {
            match self.exchange(message.clone(), NLM_F_DUMP, Exchange::Dump, request) {
                Err(NetdevError::DumpInterrupted) => continue,
                other => return other,
            }
        }
        Err(NetdevError::Decode {
            request: request(),
            why: format!("the table kept changing during {DUMP_RETRIES} dumps"),
        })
    }

    fn exchange(
        &self,
        message: RouteNetlinkMessage,
        flags: u16,
        kind: Exchange,
        request: &dyn Fn() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let seq = self.seq.get().wrapping_add(1);
        self.seq.set(seq);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags | if kind == Exchange::Ack { NLM_F_ACK } else { 0 };
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        self.socket
            .send(&bytes, 0)
            .map_err(|source| NetdevError::Socket {
                step: "send",
                source,
            })?;

        let mut answers = Vec::new();
        let mut interrupted = false;
        let mut buf = Vec::with_capacity(RECV_BUFFER);
        loop {
            let n = self.receive(&mut buf, request)?;
            let mut offset = 0;
            while offset < n {
                let rest = &buf[offset..n];
                let msg =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest).map_err(|e| {
                        NetdevError::Decode {
                            request: request(),
                            why: e.to_string(),
                        }
                    })?;
                let len = msg.header.length as usize;
                if len == 0 {
                    break;
                }
                offset += (len + 3) & !3;
                // Another request's late answer (one that timed out) is not ours.
                if msg.header.sequence_number != seq {
                    continue;
                }
                interrupted |= msg.header.flags & NLM_F_DUMP_INTR != 0;
                match msg.payload {
                    NetlinkPayload::Error(e) => match e.code {
                        None => return Ok(answers),
                        Some(code) => {
                            let detail = (msg.header.flags & NLM_F_ACK_TLVS != 0)
                                .then(|| ext_ack_message(&e.header))
                                .flatten();
                            return Err(NetdevError::Kernel {
                                request: request(),
                                source: std::io::Error::from_raw_os_error(-code.get()),
                                detail,
                            });
                        }
                    },
                    NetlinkPayload::Done(_) if interrupted => {
                        return Err(NetdevError::DumpInterrupted);
                    }
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::InnerMessage(inner) => {
                        answers.push(inner);
                        if kind == Exchange::Get {
                            return Ok(answers);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// One datagram into `buf`; its length.
    fn receive(&self, buf: &mut Vec<u8>, request: &dyn Fn() -> String) -> Result<usize> {
        loop {
            buf.clear();
            match self.socket.recv(buf, libc::MSG_TRUNC) {
                Ok(n) if n > RECV_BUFFER => {
                    return Err(NetdevError::Decode {
                        request: request(),
                        why: format!("a {n}-byte answer, longer than {RECV_BUFFER} bytes"),
                    });
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Err(NetdevError::Timeout {
                        request: request(),
                        timeout_ms: REQUEST_TIMEOUT.as_millis() as u64,
                    });
                }
                Err(source) => {
                    return Err(NetdevError::Socket {
                        step: "receive",
                        source,
                    });
                }
            }
        }
    }
}

/// A bound NETLINK_ROUTE socket subscribed to `groups` (a bit mask of RTMGRP_*; 0 for a
/// request socket), connected to the kernel.
pub(crate) fn open_socket(groups: u32) -> Result<Socket> {
    let sock = |step: &'static str| move |source| NetdevError::Socket { step, source };
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(sock("open"))?;
    socket
        .bind(&SocketAddr::new(0, groups))
        .map_err(sock("bind"))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(sock("connect"))?;
    Ok(socket)
}

pub(crate) fn set_recv_timeout(fd: RawFd, timeout: Duration) -> Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros() as i32),
    };
    // SAFETY: `tv` is a valid timeval that outlives the call; `fd` is an open socket.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(NetdevError::Socket {
            step: "SO_RCVTIMEO",
            source: std::io::Error::last_os_error(),
        })
    }
}

/// The kernel's message in an extended ACK: attributes after the echoed header.
fn ext_ack_message(payload: &[u8]) -> Option<String> {
    let mut rest = payload.get(NLMSG_HEADER_LEN..)?;
    while rest.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        let value = rest.get(4..len)?;
        if kind == NLMSGERR_ATTR_MSG {
            let text = String::from_utf8_lossy(value);
            return Some(text.trim_end_matches('\0').to_string());
        }
        rest = rest.get((len + 3) & !3..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext_ack_messages() {
        let mut payload = vec![0u8; NLMSG_HEADER_LEN];
        // An unrelated attribute first (NLMSGERR_ATTR_OFFS, u32), then the message.
        payload.extend_from_slice(&8u16.to_ne_bytes());
        payload.extend_from_slice(&2u16.to_ne_bytes());
        payload.extend_from_slice(&20u32.to_ne_bytes());
        let text = b"Invalid flags\0";
        payload.extend_from_slice(&((4 + text.len()) as u16).to_ne_bytes());
        payload.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        payload.extend_from_slice(text);
        assert_eq!(ext_ack_message(&payload).as_deref(), Some("Invalid flags"));
        // Short, lying or absent: no message, no panic.
        assert_eq!(ext_ack_message(&payload[..10]), None);
        let mut lying = vec![0u8; NLMSG_HEADER_LEN];
        lying.extend_from_slice(&200u16.to_ne_bytes());
        lying.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        assert_eq!(ext_ack_message(&lying), None);
        assert_eq!(ext_ack_message(&[0u8; NLMSG_HEADER_LEN]), None);
    }
}
