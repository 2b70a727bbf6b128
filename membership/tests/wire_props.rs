//! Property tests of the datagram decoder: it never panics on any input, and what the
//! encoder produces decodes to the same header and payload.
use proptest::prelude::*;
use prost::Message as _;
use tandem_membership::core::wire::{self, Header, KeyRing, msg};

fn keys() -> KeyRing {
    KeyRing::new((7, b"property-test-key-property-test!"), &[])
}

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9-]{1,40}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1400)) {
        if let Ok((h, payload)) = wire::parse(&bytes) {
            let _ = wire::verify(&keys(), &bytes, h.key_id);
            let _ = msg::Packet::decode(payload);
        }
    }

    #[test]
    fn decoder_never_panics_on_mutated_valid_datagrams(
        seq in 1u64..,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let k = keys();
        let h = Header { version: wire::VERSION, key_id: 7, generation: 3, seq, cluster: "c", sender: "a", receiver: "b" };
        let original = wire::seal(&k, &h, &msg::Packet { leaving: true, ..Default::default() }.encode_to_vec()).unwrap();
        let mut d = original.clone();
        for (i, x) in flips {
            let i = i.index(d.len());
            d[i] ^= x | 1;
        }
        let d = &d[..cut.index(d.len() + 1)];
        if let Ok((h, p)) = wire::parse(d) {
            // A changed datagram never verifies (two flips of one byte may cancel out).
            if d != original.as_slice() {
                prop_assert!(wire::verify(&k, d, h.key_id).is_err());
            }
            let _ = msg::Packet::decode(p);
        }
    }

    #[test]
    fn encode_decode_round_trip(
        cluster in name(), sender in name(), receiver in name(),
        generation in any::<u64>(), seq in any::<u64>(),
        topic in "[a-z/]{1,64}", payload in proptest::collection::vec(any::<u8>(), 0..600),
        data_seq in 1u64.., hb_seq in any::<u64>(), sent_at in any::<u64>(),
    ) {
        let k = keys();
        let packet = msg::Packet {
            receiver_generation: generation ^ 1,
            heartbeat: Some(msg::Heartbeat { hb_seq, sent_at, echoes: vec![msg::Echo { link: 1, sent_at, held: 5 }] }),
            data_base: data_seq,
            data: vec![msg::Data { seq: data_seq, topic, payload, broadcast: true }],
            ack: Some(msg::Ack { generation, seq }),
            leaving: false,
            from_link: 1,
        };
        let h = Header { version: wire::VERSION, key_id: 7, generation, seq, cluster: &cluster, sender: &sender, receiver: &receiver };
        let bytes = wire::seal(&k, &h, &packet.encode_to_vec()).unwrap();
        prop_assert!(bytes.len() <= wire::MAX_DATAGRAM);
        let (back, p) = wire::parse(&bytes).unwrap();
        prop_assert_eq!(&back, &h);
        wire::verify(&k, &bytes, back.key_id).unwrap();
        prop_assert_eq!(msg::Packet::decode(p).unwrap(), packet);
    }
}
