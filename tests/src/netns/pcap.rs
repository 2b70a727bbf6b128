//! Just enough of the classic pcap file format (as written by `tcpdump -w`) to get the UDP
//! payloads of IPv4-over-Ethernet captures back: the 24-byte file header, then per packet a
//! 16-byte record header and the captured bytes.
use std::net::{Ipv4Addr, SocketAddrV4};

/// Link type of Ethernet frames (veth interfaces).
const LINKTYPE_ETHERNET: u32 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PcapError {
    #[error("not a pcap file (magic {0:#010x})")]
    Magic(u32),
    #[error("pcap file shorter than its header")]
    Short,
    #[error("link type {0} is not Ethernet")]
    LinkType(u32),
}

/// One captured UDP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub payload: Vec<u8>,
}

/// The UDP/IPv4 datagrams in a capture. Frames that are not UDP over IPv4, are truncated or
/// are fragments are skipped; a truncated last record ends the list (tcpdump killed mid-write).
pub fn udp_datagrams(file: &[u8]) -> Result<Vec<Datagram>, PcapError> {
    let header = file.get(..24).ok_or(PcapError::Short)?;
    let magic = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    // Microsecond and nanosecond magics, in either byte order.
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        other => return Err(PcapError::Magic(other)),
    };
    let u32_at = |b: &[u8], at: usize| {
        let w = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    let link = u32_at(header, 20) & 0x0fff_ffff;
    if link != LINKTYPE_ETHERNET {
        return Err(PcapError::LinkType(link));
    }
    let mut out = Vec::new();
    let mut at = 24;
    while let Some(rec) = file.get(at..at + 16) {
        let len = u32_at(rec, 8) as usize;
        let Some(frame) = file.get(at + 16..at + 16 + len) else {
            break;
        };
        at += 16 + len;
        if let Some(d) = parse_frame(frame) {
            out.push(d);
        }
    }
    Ok(out)
}

fn parse_frame(f: &[u8]) -> Option<Datagram> {
    if f.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = f.get(14..)?;
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    let frag = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]);
    // Protocol 17 = UDP; a fragment (offset or more-fragments set) has no whole payload.
    if ip.get(9)? != &17 || frag & 0x3fff != 0 || ihl < 20 {
        return None;
    }
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let udp = ip.get(ihl..total)?;
    let sport = u16::from_be_bytes([*udp.first()?, *udp.get(1)?]);
    let dport = u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]);
    let ulen = usize::from(u16::from_be_bytes([*udp.get(4)?, *udp.get(5)?]));
    let payload = udp.get(8..ulen)?.to_vec();
    Some(Datagram {
        src: SocketAddrV4::new(src, sport),
        dst: SocketAddrV4::new(dst, dport),
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8], proto: u8) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend([0x08, 0x00]);
        let total = (20 + 8 + payload.len()) as u16;
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend([10, 77, 0, 1, 10, 77, 0, 2]);
        f.extend(ip);
        f.extend(694u16.to_be_bytes());
        f.extend(695u16.to_be_bytes());
        f.extend(((8 + payload.len()) as u16).to_be_bytes());
        f.extend([0, 0]);
        f.extend(payload);
        f
    }

    fn file(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(0xa1b2_c3d4u32.to_le_bytes());
        b.extend(2u16.to_le_bytes());
        b.extend(4u16.to_le_bytes());
        b.extend([0u8; 8]);
        b.extend(65535u32.to_le_bytes());
        b.extend(LINKTYPE_ETHERNET.to_le_bytes());
        for f in frames {
            b.extend([0u8; 8]);
            b.extend((f.len() as u32).to_le_bytes());
            b.extend((f.len() as u32).to_le_bytes());
            b.extend(f);
        }
        b
    }

    #[test]
    fn reads_udp_payloads_and_skips_other_protocols_and_a_truncated_tail() {
        let mut bytes = file(&[frame(b"hello", 17), frame(b"tcp!", 6), frame(b"second", 17)]);
        bytes.extend([1, 2, 3]);
        let d = udp_datagrams(&bytes).expect("parse");
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].payload, b"hello");
        assert_eq!(d[0].src, "10.77.0.1:694".parse().unwrap());
        assert_eq!(d[0].dst, "10.77.0.2:695".parse().unwrap());
        assert_eq!(d[1].payload, b"second");
    }

    #[test]
    fn rejects_what_is_not_an_ethernet_pcap() {
        assert_eq!(udp_datagrams(&[0; 10]), Err(PcapError::Short));
        assert_eq!(udp_datagrams(&[7; 24]), Err(PcapError::Magic(0x0707_0707)));
        let mut b = file(&[]);
        b[20] = 113;
        assert_eq!(udp_datagrams(&b), Err(PcapError::LinkType(113)));
    }

    #[test]
    fn garbage_records_never_panic() {
        let mut b = file(&[frame(b"x", 17)]);
        for i in 24..b.len() {
            let saved = b[i];
            b[i] = 0xff;
            let _ = udp_datagrams(&b);
            b[i] = saved;
        }
    }
}
