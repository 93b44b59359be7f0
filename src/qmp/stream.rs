//! Where a QMP peer is ([`Address`]) and the connected socket to it
//! ([`Stream`]): the transports, and nothing of the protocol on them.

use std::io::Write;
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

/// Where a QMP server is, or where we listen for QEMU to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A unix socket path.
    Unix(PathBuf),
    /// A TCP host and port.
    Tcp(String, u16),
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "{}", p.display()),
            Address::Tcp(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

impl Address {
    /// Parses `host:port` as TCP and anything else as a unix socket path.
    pub fn parse(text: &str) -> Address {
        if let Some((host, port)) = text.rsplit_once(':') {
            if let Ok(port) = port.parse::<u16>() {
                if !host.contains('/') {
                    return Address::Tcp(host.trim_matches(['[', ']']).to_string(), port);
                }
            }
        }
        Address::Unix(PathBuf::from(text))
    }
}

/// A connected stream: the transports QMP runs over.
#[derive(Debug)]
pub enum Stream {
    /// A unix socket or one end of a socketpair.
    Unix(UnixStream),
    /// A TCP connection.
    Tcp(TcpStream),
}

impl Stream {
    pub(super) fn try_clone(&self) -> std::io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }

    pub(super) fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Unix(s) => s.write_all(bytes),
            Stream::Tcp(s) => s.write_all(bytes),
        }
    }

    pub(super) fn shutdown(&self) {
        // Errors mean the peer is already gone, which is what we want.
        let _ = match self {
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Unix(s) => s.as_fd(),
            Stream::Tcp(s) => s.as_fd(),
        }
    }
}
