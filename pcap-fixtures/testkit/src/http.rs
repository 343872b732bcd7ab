//! One HTTP/1.1 request from inside a network namespace, for tests of what an agent serves
//! (metrics, health) where only a pod or node would reach it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::netns::in_netns;

#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// One HTTP/1.1 request to `addr` from inside network namespace `ns`.
pub fn http(ns: &str, method: &str, addr: &str, path: &str) -> HttpReply {
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let addr = addr.parse().unwrap();
    in_netns(ns, move || {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).unwrap();
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .expect("a blank line after the head");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("status line: {head}"));
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|n| n.trim().parse().ok())
            .expect("Content-Length");
        assert_eq!(length, body.len(), "Content-Length matches the body");
        HttpReply {
            status,
            head: head.to_string(),
            body: body.to_string(),
        }
    })
}
