//! Batched UDP I/O for the protocol loop: `recvmmsg` and `sendmmsg` (Linux), through tokio's
//! readiness so the loop stays a plain tokio task.
//!
//! Why: in a 32-node cluster a daemon sends 310 heartbeats a second in bursts of 31 and
//! receives as many; one system call per burst instead of one per datagram, and no read
//! that only finds the queue empty, is most of the idle CPU a daemon can still save.
//!
//! The sockets are plain non-blocking std sockets, not registered with tokio: tokio's
//! edge-triggered epoll wakes the thread for every datagram whether or not a task waits.
//! Their readiness goes through a [`Poller`] instead (a private epoll set, itself registered
//! with tokio, whose sockets can be disarmed), so the loop can stop listening for a few milliseconds and read
//! what arrived meanwhile in one batch, without a wakeup per datagram. The kernel stamps
//! each datagram on arrival (`SO_TIMESTAMPNS`) so that delay does not skew last-heard or RTT.
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, SystemTime};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg, setsockopt,
    sockopt,
};
use nix::sys::time::TimeSpec;
use tokio::io::unix::AsyncFd;

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
    if let Err(e) = setsockopt(s, sockopt::ReceiveTimestampns, &true) {
        failed.push(("cannot have the kernel stamp arrival times", e));
    }
    failed
}

/// One received datagram: its length in the batch's buffer, its source and the kernel's
/// wall-clock arrival stamp (when `SO_TIMESTAMPNS` is on).
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub len: usize,
    pub src: Option<SocketAddr>,
    pub arrived: Option<SystemTime>,
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
#[derive(Debug)]
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
        let mut drops = None;
        // Fresh headers each call: the kernel shrinks each header's control length to
        // what it wrote, which would hide the drop count from the next call.
        let mut headers: MultiHeaders<SockaddrStorage> =
            MultiHeaders::preallocate(RECV_MMSG, Some(nix::cmsg_space!(u32, TimeSpec)));
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = self
            .bufs
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
            let mut arrived = None;
            if let Ok(cmsgs) = m.cmsgs() {
                for c in cmsgs {
                    match c {
                        ControlMessageOwned::RxqOvfl(n) => drops = Some(n),
                        ControlMessageOwned::ScmTimestampns(t) => {
                            arrived = u64::try_from(t.tv_sec()).ok().map(|s| {
                                SystemTime::UNIX_EPOCH
                                    + Duration::new(s, t.tv_nsec().clamp(0, 999_999_999) as u32)
                            });
                        }
                        _ => {}
                    }
                }
            }
            self.got.push(Received {
                len: m.bytes.min(RECV_BUF_LEN),
                src: m.address.as_ref().and_then(socket_addr),
                arrived,
            });
        }
        if self.got.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(Outcome {
            count: self.got.len(),
            drops,
            // A short read with MSG_DONTWAIT means the queue is empty now.
            drained: self.got.len() < RECV_MMSG,
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
        let iovs: Vec<[IoSlice<'_>; 1]> = rest.iter().map(|(b, _)| [IoSlice::new(b)]).collect();
        let addrs: Vec<Option<SockaddrStorage>> = rest
            .iter()
            .map(|(_, a)| Some(SockaddrStorage::from(*a)))
            .collect();
        let mut headers: MultiHeaders<SockaddrStorage> =
            MultiHeaders::preallocate(rest.len(), None);
        let r = sendmmsg(
            socket.as_raw_fd(),
            &mut headers,
            &iovs,
            &addrs,
            [],
            MsgFlags::MSG_DONTWAIT,
        )
        .map(|results| results.count());
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

/// The readiness of the UDP sockets: a private epoll set, registered with tokio. Every
/// arrival on an armed socket is reported (as tokio's own registration would); a
/// [`disarm`](Self::disarm)ed socket stays silent (no wakeups) until [`rearm`](Self::rearm),
/// whatever arrives meanwhile. Only the changes cost a system call.
pub struct Poller {
    fd: AsyncFd<EpollFd>,
    /// Per socket: whether it reports arrivals.
    armed: Vec<bool>,
}

struct EpollFd(Epoll);

impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.0.as_raw_fd()
    }
}

fn interest(link: usize, armed: bool) -> EpollEvent {
    let flags = if armed {
        EpollFlags::EPOLLIN
    } else {
        // Errors (EPOLLERR) are still reported: the kernel always adds them.
        EpollFlags::empty()
    };
    EpollEvent::new(flags, link as u64)
}

impl Poller {
    /// Watches `sockets` (socket `i` is link `i`), all armed. Needs a tokio runtime.
    pub fn new(sockets: &[UdpSocket]) -> io::Result<Poller> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(io::Error::from)?;
        for (link, s) in sockets.iter().enumerate() {
            epoll
                .add(s.as_fd(), interest(link, true))
                .map_err(io::Error::from)?;
        }
        // Deprecated as unsound for borrowed fds that may be closed while registered; this
        // one is owned by the AsyncFd (which deregisters before dropping it), and the
        // replacement is `unsafe`, which this workspace denies.
        #[allow(deprecated)]
        let fd = AsyncFd::with_interest(EpollFd(epoll), tokio::io::Interest::READABLE)?;
        Ok(Poller {
            fd,
            armed: vec![true; sockets.len()],
        })
    }

    /// Resolves at the next arrival on an armed socket (or an error) since the last call.
    /// The caller then reads the sockets until they are empty. Cancel-safe.
    pub async fn wait(&self) -> io::Result<()> {
        let mut guard = self.fd.readable().await?;
        // The private set is edge-triggered from tokio's side: every arrival raises a new
        // edge, so clearing here loses nothing.
        guard.clear_ready();
        Ok(())
    }

    /// Whether any socket is disarmed.
    pub fn disarmed(&self) -> bool {
        self.armed.iter().any(|a| !a)
    }

    /// Stops reporting arrivals on every socket.
    pub fn disarm(&mut self, sockets: &[UdpSocket]) -> io::Result<()> {
        self.set(sockets, false)
    }

    /// Reports arrivals again. What came while disarmed is not necessarily reported: the
    /// caller reads the sockets right after re-arming (in that order, so nothing is missed).
    pub fn rearm(&mut self, sockets: &[UdpSocket]) -> io::Result<()> {
        self.set(sockets, true)
    }

    fn set(&mut self, sockets: &[UdpSocket], armed: bool) -> io::Result<()> {
        for (link, s) in sockets.iter().enumerate() {
            if self.armed[link] != armed {
                self.fd
                    .get_ref()
                    .0
                    .modify(s.as_fd(), &mut interest(link, armed))
                    .map_err(io::Error::from)?;
                self.armed[link] = armed;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.set_nonblocking(true).unwrap();
        assert!(tune(&a, 1 << 20).iter().all(|(w, _)| !w.contains("stamp")));
        (a, b)
    }

    async fn reports(p: &Poller) -> bool {
        tokio::time::timeout(Duration::from_millis(100), p.wait())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_disarmed_socket_stays_silent_until_rearmed() {
        let (a, b) = pair();
        let to = a.local_addr().unwrap();
        let socks = std::slice::from_ref(&a);
        let mut p = Poller::new(socks).unwrap();
        assert!(!reports(&p).await, "nothing sent yet");
        b.send_to(b"one", to).unwrap();
        assert!(reports(&p).await);
        // Armed: each arrival is reported, even unread.
        b.send_to(b"two", to).unwrap();
        assert!(reports(&p).await);
        // Disarmed: more datagrams arrive, no report.
        p.disarm(socks).unwrap();
        assert!(p.disarmed());
        b.send_to(b"three", to).unwrap();
        assert!(!reports(&p).await);
        // Re-armed, then read: none lost; the next arrival is reported again.
        p.rearm(socks).unwrap();
        assert!(!p.disarmed());
        let mut batch = Batch::default();
        let o = batch.recv(&a).unwrap();
        assert_eq!(o.count, 3);
        assert!(o.drained);
        assert_eq!(batch.get(2).1, b"three");
        assert_eq!(batch.get(0).0.src, Some(b.local_addr().unwrap()));
        assert_eq!(
            batch.recv(&a).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        b.send_to(b"four", to).unwrap();
        assert!(reports(&p).await);
    }

    #[tokio::test]
    async fn the_kernel_stamps_arrival_before_the_read() {
        // On loopback the stamp is taken when the backlog is processed, which a loaded box can
        // defer to ksoftirqd until just before the read; so one of a few tries must show the
        // 30 ms wait, and every stamp must lie between the send and the read.
        let (a, b) = pair();
        let mut ages = Vec::new();
        for _ in 0..5 {
            let sent = SystemTime::now();
            b.send_to(b"x", a.local_addr().unwrap()).unwrap();
            std::thread::sleep(Duration::from_millis(30));
            let mut batch = Batch::default();
            batch.recv(&a).unwrap();
            let read = SystemTime::now();
            let arrived = batch.get(0).0.arrived.expect("SO_TIMESTAMPNS stamp");
            assert!(
                arrived >= sent && arrived <= read,
                "{arrived:?} not in {sent:?}..{read:?}"
            );
            let age = read.duration_since(arrived).unwrap();
            if age >= Duration::from_millis(29) {
                return;
            }
            ages.push(age);
        }
        panic!("every stamp was taken at the read, not at arrival: {ages:?}");
    }
}
