//! Socket options the standard library does not set (receive timeouts on raw sockets,
//! forced buffer sizes, packet-socket rings), without each test writing its own unsafe
//! block.

use std::os::fd::{AsFd, AsRawFd};

/// setsockopt(2) of `name` at `level` to `value`, passed as its bytes (an int, a timeval,
/// a ring request: whatever the option takes).
pub fn setsockopt<T>(
    socket: impl AsFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> std::io::Result<()> {
    let len = libc::socklen_t::try_from(size_of::<T>())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: an open fd, and `value` points to a live `T` of `len` bytes, which the kernel
    // only reads.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sets_an_option_and_reports_a_refused_one() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let size: libc::c_int = 64 << 10;
        super::setsockopt(&socket, libc::SOL_SOCKET, libc::SO_RCVBUF, &size).expect("SO_RCVBUF");
        // An unknown option name is refused, and the error says so.
        let e = super::setsockopt(&socket, libc::SOL_SOCKET, -1, &size).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOPROTOOPT));
    }
}
