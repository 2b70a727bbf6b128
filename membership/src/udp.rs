//! Batched UDP I/O for the protocol loop: `recvmmsg` and `sendmmsg` (Linux), through tokio's
//! readiness so the loop stays a plain tokio task.
//!
//! Why: in a 32-node cluster a daemon sends 310 heartbeats a second in bursts of 31 and
//! receives as many; one system call per burst instead of one per datagram, and no read
//! that only finds the queue empty, is most of the idle CPU a daemon can still save.
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg, setsockopt,
    sockopt,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams read by one `recvmmsg`.
pub const RECV_MMSG: usize = 16;
/// Receive buffer per datagram: larger than the protocol's MAX_DATAGRAM so oversize
/// datagrams are seen (and counted) as such.
pub const RECV_BUF_LEN: usize = 2048;

/// A larger receive queue (`SO_RCVBUFFORCE` when privileged, else `SO_RCVBUF`, which the
/// kernel caps at net.core.rmem_max) and the kernel's count of what it drops
/// (`SO_RXQ_OVFL`). Best effort: without them the daemon works, only less robust under a
/// flood; the failures are returned for a warning.
pub fn tune(s: &UdpSocket, recv_buffer: usize) -> Vec<(&'static str, nix::Error)> {
    let mut failed = Vec::new();
    if setsockopt(s, sockopt::RcvBufForce, &recv_buffer).is_err()
        && let Err(e) = setsockopt(s, sockopt::RcvBuf, &recv_buffer)
    {
        failed.push(("cannot enlarge the UDP receive buffer", e));
    }
    if let Err(e) = setsockopt(s, sockopt::RxqOvfl, &1) {
        failed.push(("cannot count the kernel's UDP receive drops", e));
    }
    failed
}

/// One received datagram: its length in the batch's buffer and its source.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub len: usize,
    pub src: Option<SocketAddr>,
}

/// Buffers for [`Batch::recv`], allocated once per daemon.
pub struct Batch {
    bufs: Vec<[u8; RECV_BUF_LEN]>,
    got: Vec<Received>,
}

impl Default for Batch {
    fn default() -> Batch {
        Batch {
            bufs: vec![[0; RECV_BUF_LEN]; RECV_MMSG],
            got: Vec::with_capacity(RECV_MMSG),
        }
    }
}

/// What one [`Batch::recv`] found.
pub struct Outcome {
    /// Datagrams now in the batch.
    pub count: usize,
    /// The socket's cumulative drop count, if the kernel reported one.
    pub drops: Option<u32>,
    /// The queue was emptied (fewer than [`RECV_MMSG`] waiting): readiness is cleared and
    /// the next arrival wakes the loop again.
    pub drained: bool,
}

impl Batch {
    /// Reads up to [`RECV_MMSG`] waiting datagrams from `socket` in one system call.
    /// `Err(WouldBlock)` when none was waiting.
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<Outcome> {
        self.got.clear();
        let mut drained = false;
        let mut drops = None;
        let got = &mut self.got;
        let bufs = &mut self.bufs;
        let r = socket.try_io(Interest::READABLE, || {
            // Fresh headers each call: the kernel shrinks each header's control length to
            // what it wrote, which would hide the drop count from the next call.
            let mut headers: MultiHeaders<SockaddrStorage> =
                MultiHeaders::preallocate(RECV_MMSG, Some(nix::cmsg_space!(u32)));
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs
                .iter_mut()
                .map(|b| [IoSliceMut::new(&mut b[..])])
                .collect();
            let results = recvmmsg(
                socket.as_raw_fd(),
                &mut headers,
                iovs.iter_mut(),
                MsgFlags::MSG_DONTWAIT,
                None,
            )
            .map_err(io::Error::from)?;
            for m in results {
                if let Ok(cmsgs) = m.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::RxqOvfl(n) = c {
                            drops = Some(n);
                        }
                    }
                }
                got.push(Received {
                    len: m.bytes.min(RECV_BUF_LEN),
                    src: m.address.as_ref().and_then(socket_addr),
                });
            }
            if got.len() < RECV_MMSG {
                // A short read with MSG_DONTWAIT means the queue is empty now. Telling tokio
                // "would block" clears the readiness it holds; the socket is edge-triggered,
                // so any datagram arriving after this read raises a new edge.
                drained = true;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(())
        });
        match r {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if self.got.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(Outcome {
            count: self.got.len(),
            drops,
            drained,
        })
    }

    /// Datagram `i` of the last [`recv`](Self::recv).
    pub fn get(&self, i: usize) -> (Received, &[u8]) {
        let r = self.got[i];
        (r, &self.bufs[i][..r.len])
    }
}

fn socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddrV4::from(*v4).into());
    }
    a.as_sockaddr_in6().map(|v6| SocketAddrV6::from(*v6).into())
}

/// Sends `datagrams` (bytes, destination) from `socket` with as few `sendmmsg` calls as
/// the kernel takes. Never waits: what the socket refuses is dropped (heartbeats repeat
/// every interval; messages are retransmitted). Returns how many were refused.
pub fn send_all(socket: &UdpSocket, datagrams: &[(&[u8], SocketAddr)]) -> usize {
    let mut rest = datagrams;
    let mut refused = 0;
    while !rest.is_empty() {
        let r = socket.try_io(Interest::WRITABLE, || {
            let iovs: Vec<[IoSlice<'_>; 1]> = rest.iter().map(|(b, _)| [IoSlice::new(b)]).collect();
            let addrs: Vec<Option<SockaddrStorage>> = rest
                .iter()
                .map(|(_, a)| Some(SockaddrStorage::from(*a)))
                .collect();
            let mut headers: MultiHeaders<SockaddrStorage> =
                MultiHeaders::preallocate(rest.len(), None);
            let results = sendmmsg(
                socket.as_raw_fd(),
                &mut headers,
                &iovs,
                &addrs,
                [],
                MsgFlags::MSG_DONTWAIT,
            )
            .map_err(io::Error::from)?;
            Ok(results.count())
        });
        match r {
            // The kernel stopped early: the next datagram is the one it refused.
            Ok(0) | Err(_) => {
                refused += 1;
                tracing::debug!(dest = %rest[0].1, error = ?r.err(), "UDP send failed");
                rest = &rest[1..];
            }
            Ok(n) => rest = &rest[n.min(rest.len())..],
        }
    }
    refused
}
