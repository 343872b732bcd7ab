//! `kxdp-lab probe serve`: answers each request with "<name> <request>".

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::Duration;

/// The line `serve` (and `sink`) print once every socket is bound: the lab waits for it.
pub const READY_PREFIX: &str = "kxdp-lab probe ready";

/// Longest request line a TCP client may send.
const MAX_REQUEST: usize = 512;
/// A client that connects and says nothing is given up on after this.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub name: String,
    pub tcp: Vec<u16>,
    pub udp: Vec<u16>,
}

/// Binds every port, prints the ready line, then serves until SIGTERM or SIGINT (exit 0) or
/// a serving thread fails. The signals are handled, not left to their default action: as a
/// container's PID 1 (the containerd lab's probe containers) the kernel would drop them,
/// and every stop would wait out its grace period for a SIGKILL.
pub fn run(opts: &ServeOptions) -> io::Result<()> {
    if opts.tcp.is_empty() && opts.udp.is_empty() {
        return Err(io::Error::other(
            "nothing to serve: give --tcp and/or --udp",
        ));
    }
    // Whatever ends serving first: a thread's failure, or a stop signal (Ok).
    let (ended_tx, ended) = std::sync::mpsc::channel::<io::Result<()>>();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])?;
    let on_signal = ended_tx.clone();
    thread::spawn(move || {
        if signals.forever().next().is_some() {
            let _ = on_signal.send(Ok(()));
        }
    });
    let mut bound = Vec::new();
    for &port in &opts.tcp {
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
            .map_err(|e| io::Error::new(e.kind(), format!("tcp port {port}: {e}")))?;
        bound.push(format!("tcp/{port}"));
        let name = opts.name.clone();
        let ended_tx = ended_tx.clone();
        thread::spawn(move || ended_tx.send(serve_tcp(&listener, &name)));
    }
    for &port in &opts.udp {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))
            .map_err(|e| io::Error::new(e.kind(), format!("udp port {port}: {e}")))?;
        enlarge_receive_buffer(&socket);
        bound.push(format!("udp/{port}"));
        let name = opts.name.clone();
        let ended_tx = ended_tx.clone();
        thread::spawn(move || ended_tx.send(serve_udp(&socket, &name)));
    }
    {
        let mut out = io::stdout().lock();
        writeln!(
            out,
            "{READY_PREFIX} name={} ports={}",
            opts.name,
            bound.join(",")
        )?;
        out.flush()?;
    }
    drop(ended_tx);
    // The serving loops never return Ok; a panicking one drops its sender without a word,
    // which ends the wait only once every sender is gone, so it is reported as such.
    ended
        .recv()
        .unwrap_or_else(|_| Err(io::Error::other("every serving thread ended")))
}

fn serve_tcp(listener: &TcpListener, name: &str) -> io::Result<()> {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let name = name.to_string();
                // One thread per connection: a silent client must not stall the others.
                thread::spawn(move || {
                    if let Err(e) = answer_tcp(stream, &name) {
                        tracing::debug!(error = %e, "probe tcp client");
                    }
                });
            }
            // Aborted handshakes and the like: the listener itself is fine.
            Err(e) => tracing::debug!(error = %e, "probe accept"),
        }
    }
    Ok(())
}

/// Answers every line of the connection until the client closes it (or goes quiet for
/// `CLIENT_TIMEOUT`): one request per connection (`kxdp-lab probe tcp`) and long-lived
/// connections carrying many (a test watching one connection across table changes) alike.
fn answer_tcp(stream: TcpStream, name: &str) -> io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        // Each request line is bounded; the connection as a whole is not.
        let n = (&mut reader)
            .take(MAX_REQUEST as u64)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        let request = line.strip_suffix(b"\n").unwrap_or(&line);
        let mut reply = Vec::with_capacity(name.len() + request.len() + 2);
        reply.extend_from_slice(name.as_bytes());
        reply.push(b' ');
        reply.extend_from_slice(request);
        reply.push(b'\n');
        writer.write_all(&reply)?;
        writer.flush()?;
        if !line.ends_with(b"\n") {
            // Over-long or unterminated: answered once, then the connection ends.
            return Ok(());
        }
    }
}

/// What a UDP server asks for as receive buffer: a paced stream of small datagrams (one
/// skb of ~1 KiB each) gets seconds of slack, not the default's ~70 ms at a few thousand
/// per second, so a scheduling hiccup of the serving thread on a busy machine loses
/// nothing.
const UDP_RECEIVE_BUFFER: libc::c_int = 8 << 20;

/// Raises the socket's receive buffer: past `net.core.rmem_max` when allowed
/// (SO_RCVBUFFORCE needs CAP_NET_ADMIN), else up to it. Best effort: the default still
/// serves, only with less slack.
fn enlarge_receive_buffer(socket: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let size = UDP_RECEIVE_BUFFER;
    for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: setsockopt(2) on a socket this function borrows, with a pointer to an
        // int that outlives the call and its exact length.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&raw const size).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
    tracing::debug!(
        error = %io::Error::last_os_error(),
        "probe udp: keeping the default receive buffer"
    );
}

fn serve_udp(socket: &UdpSocket, name: &str) -> io::Result<()> {
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            // ICMP errors about earlier answers surface here on Linux: not fatal.
            Err(e) => {
                tracing::debug!(error = %e, "probe udp recv");
                continue;
            }
        };
        let mut reply = Vec::with_capacity(name.len() + 1 + n);
        reply.extend_from_slice(name.as_bytes());
        reply.push(b' ');
        reply.extend_from_slice(&buf[..n]);
        if let Err(e) = socket.send_to(&reply, from) {
            tracing::debug!(error = %e, %from, "probe udp send");
        }
    }
}
