//! The message streams: cluster messages to a peer (sequence numbers, cumulative acks,
//! retransmission) and from it (in-order delivery, once, with a bounded reorder buffer).
//!
//! A stream belongs to one pair of incarnations: it starts at seq 1 when either side
//! restarts, and what the old receiver had not acked is dropped (and counted), never
//! delivered to the new one. A sender that gave up on messages (it declared us dead) says
//! so with `data_base`, and the receiver skips the gap.
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use prost::Message as _;

use super::Time;
use super::wire::{self, msg};

/// Unacknowledged messages allowed per peer; `Send` fails with QueueFull beyond.
pub const MAX_UNACKED: usize = 256;
/// Messages retransmitted per peer per retransmission round, so a long queue to a lossy
/// peer cannot flood the network.
const RETRANSMIT_BATCH: usize = 16;
/// Lower bound of the retransmission timeout: loopback RTTs are microseconds, but a
/// retransmission storm on a busy host helps nobody.
const MIN_RTO: Duration = Duration::from_millis(5);
/// Room in a datagram for a data packet's own fields (receiver_generation, data_base).
const PACKET_FIELDS: usize = 32;

/// The retransmission timeout for a peer whose best smoothed round trip is `best_rtt`:
/// twice that plus [`MIN_RTO`], at most one heartbeat interval; half an interval before
/// any round trip was measured.
pub(super) fn rto(best_rtt: Option<Duration>, interval: Duration) -> Duration {
    match best_rtt {
        Some(r) => (r * 2 + MIN_RTO).min(interval),
        None => interval / 2,
    }
    .max(MIN_RTO)
}

#[derive(Debug, Clone)]
struct Pending {
    seq: u64,
    topic: String,
    payload: Vec<u8>,
    broadcast: bool,
    last_sent: Time,
}

impl Pending {
    fn to_data(&self) -> msg::Data {
        msg::Data {
            seq: self.seq,
            topic: self.topic.clone(),
            payload: self.payload.clone(),
            broadcast: self.broadcast,
        }
    }
}

/// Messages to one peer.
#[derive(Debug, Clone)]
pub(super) struct Outgoing {
    /// The peer's generation this stream is addressed to (0: never confirmed, nothing can
    /// be sent yet).
    receiver_gen: u64,
    next: u64,
    unacked: VecDeque<Pending>,
}

impl Outgoing {
    pub(super) fn new() -> Outgoing {
        Outgoing {
            receiver_gen: 0,
            next: 1,
            unacked: VecDeque::new(),
        }
    }

    pub(super) fn receiver_generation(&self) -> u64 {
        self.receiver_gen
    }

    pub(super) fn unacked(&self) -> usize {
        self.unacked.len()
    }

    pub(super) fn is_full(&self) -> bool {
        self.unacked.len() >= MAX_UNACKED
    }

    /// Drops every unacknowledged message; returns how many.
    pub(super) fn clear(&mut self) -> u64 {
        let dropped = self.unacked.len() as u64;
        self.unacked.clear();
        dropped
    }

    /// The receiver restarted as `generation`: what it had not acked is lost for good and
    /// a new stream starts. Returns how many messages were dropped.
    pub(super) fn restart(&mut self, generation: u64) -> u64 {
        let dropped = self.clear();
        self.receiver_gen = generation;
        self.next = 1;
        dropped
    }

    /// Queues a message sent at `now`; returns it as it goes on the wire.
    pub(super) fn queue(
        &mut self,
        now: Time,
        topic: &str,
        payload: &[u8],
        broadcast: bool,
    ) -> msg::Data {
        let pending = Pending {
            seq: self.next,
            topic: topic.to_owned(),
            payload: payload.to_vec(),
            broadcast,
            last_sent: now,
        };
        self.next += 1;
        let data = pending.to_data();
        self.unacked.push_back(pending);
        data
    }

    /// A cumulative ack up to `seq` from the receiver's incarnation `generation`.
    pub(super) fn ack(&mut self, generation: u64, seq: u64) {
        if generation != self.receiver_gen {
            return;
        }
        while self.unacked.front().is_some_and(|m| m.seq <= seq) {
            self.unacked.pop_front();
        }
    }

    /// The packet carrying `data`, with the lowest seq still wanted as its base.
    pub(super) fn packet(&self, data: Vec<msg::Data>) -> msg::Packet {
        msg::Packet {
            receiver_generation: self.receiver_gen,
            data_base: self.unacked.front().map_or(self.next, |m| m.seq),
            data,
            ..Default::default()
        }
    }

    /// The messages due for retransmission at `now` (unacked for `rto`, at most
    /// [`RETRANSMIT_BATCH`]), packed into datagrams of at most [`wire::MAX_DATAGRAM`]
    /// bytes with `overhead` bytes of envelope each; marks them sent.
    pub(super) fn due(&mut self, now: Time, rto: Duration, overhead: usize) -> Vec<Vec<msg::Data>> {
        let mut batch: Vec<msg::Data> = Vec::new();
        let mut packets = Vec::new();
        let mut size = PACKET_FIELDS;
        for m in self.unacked.iter_mut().take(RETRANSMIT_BATCH) {
            if m.last_sent + rto > now {
                continue;
            }
            m.last_sent = now;
            let d = m.to_data();
            let len = d.encoded_len() + 4;
            if !batch.is_empty() && overhead + size + len > wire::MAX_DATAGRAM {
                packets.push(std::mem::take(&mut batch));
                size = PACKET_FIELDS;
            }
            size += len;
            batch.push(d);
        }
        if !batch.is_empty() {
            packets.push(batch);
        }
        packets
    }

    /// When [`due`](Self::due) next has something to send.
    pub(super) fn next_due(&self, rto: Duration) -> Option<Time> {
        self.unacked
            .iter()
            .take(RETRANSMIT_BATCH)
            .map(|m| m.last_sent + rto)
            .min()
    }
}

/// Messages from one peer's incarnation.
#[derive(Debug, Clone)]
pub(super) struct Incoming {
    expected: u64,
    /// Arrived ahead of `expected`, at most [`MAX_UNACKED`].
    buffer: BTreeMap<u64, msg::Data>,
}

impl Incoming {
    pub(super) fn new() -> Incoming {
        Incoming {
            expected: 1,
            buffer: BTreeMap::new(),
        }
    }

    /// The sender restarted: a new stream starts at seq 1.
    pub(super) fn reset(&mut self) {
        self.expected = 1;
        self.buffer.clear();
    }

    /// Takes the messages of a packet whose lowest wanted seq is `base`; hands each message
    /// now in order to `deliver`, exactly once. Returns the cumulative ack to send back.
    pub(super) fn receive(
        &mut self,
        base: u64,
        data: Vec<msg::Data>,
        mut deliver: impl FnMut(msg::Data),
    ) -> u64 {
        if base > self.expected {
            // The sender discarded the messages in between (we were declared dead).
            self.expected = base;
            self.buffer = self.buffer.split_off(&base);
        }
        for d in data {
            if d.seq < self.expected || self.buffer.contains_key(&d.seq) {
                continue; // duplicate
            }
            if d.seq == self.expected {
                let mut next = Some(d);
                while let Some(d) = next {
                    deliver(d);
                    self.expected += 1;
                    next = self.buffer.remove(&self.expected);
                }
            } else if self.buffer.len() < MAX_UNACKED {
                self.buffer.insert(d.seq, d);
            }
        }
        self.expected - 1
    }
}

/// The packet acknowledging everything up to `seq` of the stream from incarnation
/// `generation`.
pub(super) fn ack_packet(generation: u64, seq: u64) -> msg::Packet {
    msg::Packet {
        receiver_generation: generation,
        ack: Some(msg::Ack { generation, seq }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(seq: u64) -> msg::Data {
        msg::Data {
            seq,
            topic: "t".into(),
            payload: vec![seq as u8],
            broadcast: false,
        }
    }

    fn seqs(inc: &mut Incoming, base: u64, batch: &[u64]) -> (Vec<u64>, u64) {
        let mut got = Vec::new();
        let ack = inc.receive(base, batch.iter().map(|&s| data(s)).collect(), |d| {
            got.push(d.seq)
        });
        (got, ack)
    }

    #[test]
    fn incoming_delivers_in_order_once_across_reordering_and_duplicates() {
        let mut inc = Incoming::new();
        assert_eq!(
            seqs(&mut inc, 1, &[2, 3]),
            (vec![], 0),
            "held until 1 comes"
        );
        assert_eq!(seqs(&mut inc, 1, &[1, 2]), (vec![1, 2, 3], 3));
        assert_eq!(seqs(&mut inc, 1, &[3]), (vec![], 3), "duplicate");
    }

    #[test]
    fn incoming_skips_what_the_sender_gave_up() {
        let mut inc = Incoming::new();
        assert_eq!(seqs(&mut inc, 1, &[3]), (vec![], 0));
        assert_eq!(seqs(&mut inc, 5, &[5]), (vec![5], 5), "3 was dropped too");
    }

    #[test]
    fn outgoing_retransmits_after_the_rto_until_acked_by_its_receiver() {
        let ms = Duration::from_millis;
        let mut out = Outgoing::new();
        out.restart(7);
        for _ in 0..3 {
            out.queue(ms(0), "t", b"x", false);
        }
        assert!(out.due(ms(9), ms(10), 100).is_empty());
        assert_eq!(out.next_due(ms(10)), Some(ms(10)));
        let again: Vec<u64> = out.due(ms(10), ms(10), 100)[0]
            .iter()
            .map(|d| d.seq)
            .collect();
        assert_eq!(again, vec![1, 2, 3]);
        out.ack(6, 3);
        assert_eq!(
            out.unacked(),
            3,
            "an ack from another incarnation counts for nothing"
        );
        out.ack(7, 2);
        assert_eq!(out.unacked(), 1);
        assert_eq!(out.packet(vec![]).data_base, 3);
        assert_eq!(out.restart(8), 1, "the receiver restarted: dropped");
        assert_eq!(out.packet(vec![]).data_base, 1);
    }

    #[test]
    fn the_rto_follows_the_round_trip_within_bounds() {
        let ms = Duration::from_millis;
        assert_eq!(rto(None, ms(100)), ms(50));
        assert_eq!(rto(Some(ms(1)), ms(100)), ms(7));
        assert_eq!(rto(Some(ms(80)), ms(100)), ms(100));
        assert_eq!(rto(Some(Duration::ZERO), ms(4)), MIN_RTO);
    }
}
