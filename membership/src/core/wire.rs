//! The datagram envelope: a fixed binary header, a prost payload and an HMAC-SHA256 tag.
//!
//! Layout (big-endian; see docs/PROTOCOL.md for the rationale):
//!
//! ```text
//! version u8 | key_id u32 | generation u64 | seq u64 |
//! cluster_len u8 | cluster | sender_len u8 | sender | receiver_len u8 | receiver |
//! payload_len u16 | payload (prost `Packet`) | tag [32] = HMAC-SHA256(key, everything before)
//! ```
//!
//! Everything before the tag is authenticated. The receiver name is in the header so a
//! datagram captured on its way to one node cannot be replayed to another.
use ring::hmac;

/// Wire version carried in the first byte.
pub const VERSION: u8 = 1;
/// Largest datagram Tandem sends or accepts: below the 1280-byte IPv6 minimum MTU minus
/// IP/UDP headers, so nothing is ever fragmented on any cloud network.
pub const MAX_DATAGRAM: usize = 1199;
/// HMAC-SHA256 tag length.
pub const TAG_LEN: usize = 32;
/// Fixed part of the header: version, key id, generation, seq, three name lengths and the
/// payload length.
pub const FIXED_HEADER: usize = 1 + 4 + 8 + 8 + 3 + 2;
/// Largest message payload a cluster message may carry.
pub const MAX_PAYLOAD: usize = 900;
/// Largest topic, in bytes.
pub const MAX_TOPIC: usize = 64;

/// The prost messages inside the envelope. Field numbers are the wire contract.
pub mod msg {
    /// One datagram's content. Heartbeats, data, acks and "leaving" can share a datagram.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Packet {
        /// The sender's idea of the receiver's generation (0: never heard). Data is only
        /// accepted when it equals the receiver's own generation, so a restarted receiver
        /// never gets the tail of a stream meant for its previous incarnation.
        #[prost(uint64, tag = "1")]
        pub receiver_generation: u64,
        #[prost(message, optional, tag = "2")]
        pub heartbeat: Option<Heartbeat>,
        /// Lowest message seq the sender may still (re)send to this receiver: anything
        /// below was delivered or discarded, so the receiver may skip to it.
        #[prost(uint64, tag = "3")]
        pub data_base: u64,
        #[prost(message, repeated, tag = "4")]
        pub data: Vec<Data>,
        #[prost(message, optional, tag = "5")]
        pub ack: Option<Ack>,
        /// The sender is shutting down cleanly: declare it dead now (reason LEFT).
        #[prost(bool, tag = "6")]
        pub leaving: bool,
        /// Index of the sender's own address (socket) the datagram was sent from: the
        /// link of the sender it proves alive.
        #[prost(uint32, tag = "7")]
        pub from_link: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Heartbeat {
        /// Per (receiver, from_link) counter, for loss estimation.
        #[prost(uint64, tag = "1")]
        pub hb_seq: u64,
        /// The sender's monotonic clock in nanoseconds (only ever compared with itself).
        #[prost(uint64, tag = "2")]
        pub sent_at: u64,
        #[prost(message, repeated, tag = "3")]
        pub echoes: Vec<Echo>,
    }

    /// Echo of a heartbeat received from the datagram's receiver, for its RTT estimate.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Echo {
        /// Index of the echoing node's address the heartbeat arrived on.
        #[prost(uint32, tag = "1")]
        pub link: u32,
        /// `sent_at` of the echoed heartbeat, unchanged.
        #[prost(uint64, tag = "2")]
        pub sent_at: u64,
        /// Nanoseconds the echoing node held it before this reply.
        #[prost(uint64, tag = "3")]
        pub held: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Data {
        #[prost(uint64, tag = "1")]
        pub seq: u64,
        #[prost(string, tag = "2")]
        pub topic: String,
        #[prost(bytes = "vec", tag = "3")]
        pub payload: Vec<u8>,
        #[prost(bool, tag = "4")]
        pub broadcast: bool,
    }

    /// Cumulative acknowledgement of a message stream.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Ack {
        /// Generation of the stream's sender (the receiver of this ack).
        #[prost(uint64, tag = "1")]
        pub generation: u64,
        /// Every message with seq <= this was delivered (or skipped as discarded).
        #[prost(uint64, tag = "2")]
        pub seq: u64,
    }
}

/// Why a datagram was rejected. Each has a counter and a rate-limited log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reject {
    BadTag,
    UnknownSender,
    UnknownCluster,
    OldGeneration,
    Replay,
    Oversize,
    Malformed,
    BadVersion,
    UnknownKey,
    /// Authentic, but addressed to another node (a cross-node replay or a config mismatch).
    WrongReceiver,
}

impl Reject {
    pub const ALL: [Reject; 10] = [
        Reject::BadTag,
        Reject::UnknownSender,
        Reject::UnknownCluster,
        Reject::OldGeneration,
        Reject::Replay,
        Reject::Oversize,
        Reject::Malformed,
        Reject::BadVersion,
        Reject::UnknownKey,
        Reject::WrongReceiver,
    ];

    /// The counter name used in Status and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::BadTag => "bad_tag",
            Reject::UnknownSender => "unknown_sender",
            Reject::UnknownCluster => "unknown_cluster",
            Reject::OldGeneration => "old_generation",
            Reject::Replay => "replay",
            Reject::Oversize => "oversize",
            Reject::Malformed => "malformed",
            Reject::BadVersion => "bad_version",
            Reject::UnknownKey => "unknown_key",
            Reject::WrongReceiver => "wrong_receiver",
        }
    }

    pub fn index(self) -> usize {
        Reject::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// The HMAC keys: one signs, all (the signing one included) verify.
pub struct KeyRing {
    signing: (u32, hmac::Key),
    accepted: Vec<(u32, hmac::Key)>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Ids only: key material never reaches a log line.
        let ids: Vec<u32> = self.accepted.iter().map(|(id, _)| *id).collect();
        f.debug_struct("KeyRing")
            .field("signing", &self.signing.0)
            .field("accepted", &ids)
            .finish()
    }
}

impl KeyRing {
    /// `signing` signs and verifies; `accepted` keys only verify (rotation).
    pub fn new(signing: (u32, &[u8]), accepted: &[(u32, &[u8])]) -> KeyRing {
        let mk = |k: &[u8]| hmac::Key::new(hmac::HMAC_SHA256, k);
        let mut all = vec![(signing.0, mk(signing.1))];
        for (id, k) in accepted {
            if *id != signing.0 && !all.iter().any(|(i, _)| i == id) {
                all.push((*id, mk(k)));
            }
        }
        KeyRing {
            signing: (signing.0, mk(signing.1)),
            accepted: all,
        }
    }

    pub fn signing_id(&self) -> u32 {
        self.signing.0
    }

    pub fn accepted_ids(&self) -> Vec<u32> {
        self.accepted.iter().map(|(id, _)| *id).collect()
    }

    fn verifier(&self, id: u32) -> Option<&hmac::Key> {
        self.accepted.iter().find(|(i, _)| *i == id).map(|(_, k)| k)
    }
}

/// The authenticated header of a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<'a> {
    pub version: u8,
    pub key_id: u32,
    pub generation: u64,
    pub seq: u64,
    pub cluster: &'a str,
    pub sender: &'a str,
    pub receiver: &'a str,
}

/// Bytes the header and tag take for these names.
pub fn overhead(cluster: &str, sender: &str, receiver: &str) -> usize {
    FIXED_HEADER + cluster.len() + sender.len() + receiver.len() + TAG_LEN
}

/// Builds and signs a datagram. Fails only when it would exceed [`MAX_DATAGRAM`] or a
/// name is longer than 255 bytes (both prevented by the core's settings check).
pub fn seal(keys: &KeyRing, h: &Header<'_>, payload: &[u8]) -> Option<Vec<u8>> {
    let total = overhead(h.cluster, h.sender, h.receiver) + payload.len();
    if total > MAX_DATAGRAM
        || h.cluster.len() > 255
        || h.sender.len() > 255
        || h.receiver.len() > 255
    {
        return None;
    }
    let mut out = Vec::with_capacity(total);
    out.push(h.version);
    out.extend_from_slice(&keys.signing.0.to_be_bytes());
    out.extend_from_slice(&h.generation.to_be_bytes());
    out.extend_from_slice(&h.seq.to_be_bytes());
    for name in [h.cluster, h.sender, h.receiver] {
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
    }
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    let tag = hmac::sign(&keys.signing.1, &out);
    out.extend_from_slice(tag.as_ref());
    Some(out)
}

/// Parses the header without checking anything but its shape. Never panics.
pub fn parse(bytes: &[u8]) -> Result<(Header<'_>, &[u8]), Reject> {
    if bytes.len() > MAX_DATAGRAM {
        return Err(Reject::Oversize);
    }
    if bytes.is_empty() {
        return Err(Reject::Malformed);
    }
    if bytes[0] != VERSION {
        return Err(Reject::BadVersion);
    }
    if bytes.len() < FIXED_HEADER + TAG_LEN {
        return Err(Reject::Malformed);
    }
    let body = &bytes[..bytes.len() - TAG_LEN];
    let mut r = Reader { buf: body, pos: 1 };
    let key_id = u32::from_be_bytes(r.array()?);
    let generation = u64::from_be_bytes(r.array()?);
    let seq = u64::from_be_bytes(r.array()?);
    let cluster = r.name()?;
    let sender = r.name()?;
    let receiver = r.name()?;
    let len = u16::from_be_bytes(r.array()?) as usize;
    let payload = r.take(len)?;
    if r.pos != body.len() {
        return Err(Reject::Malformed);
    }
    Ok((
        Header {
            version: VERSION,
            key_id,
            generation,
            seq,
            cluster,
            sender,
            receiver,
        },
        payload,
    ))
}

/// Verifies the tag (constant time, ring) with the key the header names.
pub fn verify(keys: &KeyRing, bytes: &[u8], key_id: u32) -> Result<(), Reject> {
    let key = keys.verifier(key_id).ok_or(Reject::UnknownKey)?;
    if bytes.len() < TAG_LEN {
        return Err(Reject::Malformed);
    }
    let (body, tag) = bytes.split_at(bytes.len() - TAG_LEN);
    hmac::verify(key, body, tag).map_err(|_| Reject::BadTag)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Reject> {
        let end = self.pos.checked_add(n).ok_or(Reject::Malformed)?;
        let s = self.buf.get(self.pos..end).ok_or(Reject::Malformed)?;
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Reject> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn name(&mut self) -> Result<&'a str, Reject> {
        let len = self.take(1)?[0] as usize;
        std::str::from_utf8(self.take(len)?).map_err(|_| Reject::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> KeyRing {
        KeyRing::new((7, b"0123456789abcdef0123456789abcdef"), &[])
    }

    fn header() -> Header<'static> {
        Header {
            version: VERSION,
            key_id: 7,
            generation: 42,
            seq: 9,
            cluster: "web",
            sender: "a",
            receiver: "b",
        }
    }

    #[test]
    fn sealed_datagram_parses_and_verifies() {
        let k = keys();
        let d = seal(&k, &header(), b"payload").unwrap();
        let (h, p) = parse(&d).unwrap();
        assert_eq!(h, header());
        assert_eq!(p, b"payload");
        verify(&k, &d, h.key_id).unwrap();
    }

    #[test]
    fn any_flipped_bit_fails_the_tag() {
        let k = keys();
        let d = seal(&k, &header(), b"payload").unwrap();
        for i in 0..d.len() {
            let mut x = d.clone();
            x[i] ^= 0x10;
            let ok = match parse(&x) {
                Ok((h, _)) => verify(&k, &x, h.key_id).is_ok() && h.key_id == 7,
                Err(_) => false,
            };
            assert!(!ok, "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn rotation_key_verifies_unknown_key_is_named() {
        let old = KeyRing::new((1, b"old-old-old-old-old-old"), &[]);
        let new = KeyRing::new(
            (2, b"new-new-new-new-new-new"),
            &[(1, b"old-old-old-old-old-old")],
        );
        let d = seal(&old, &header(), b"x").unwrap();
        let (h, _) = parse(&d).unwrap();
        assert_eq!(h.key_id, 1);
        verify(&new, &d, 1).unwrap();
        let only_new = KeyRing::new((2, b"new-new-new-new-new-new"), &[]);
        assert_eq!(verify(&only_new, &d, 1), Err(Reject::UnknownKey));
    }

    #[test]
    fn oversize_and_truncated_are_classified() {
        assert_eq!(parse(&[1u8; 1300]).err(), Some(Reject::Oversize));
        assert_eq!(parse(&[]).err(), Some(Reject::Malformed));
        assert_eq!(parse(&[2u8; 100]).err(), Some(Reject::BadVersion));
        let d = seal(&keys(), &header(), b"payload").unwrap();
        assert_eq!(parse(&d[..d.len() - 1]).err(), Some(Reject::Malformed));
    }

    #[test]
    fn debug_of_keyring_shows_ids_only() {
        let s = format!("{:?}", keys());
        assert!(!s.contains("0123456789"), "{s}");
        assert!(s.contains('7'));
    }
}
