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

mod authentic {
    //! Past the HMAC: arbitrary payloads and arbitrary (but authentic) packets from a
    //! configured peer must never panic the core nor make it send an oversize datagram.
    use super::*;
    use std::net::SocketAddr;
    use std::time::Duration;
    use tandem_membership::core::{Core, NodeSpec, QuorumPolicy, Role, Settings, Timing};

    const KEY: &[u8] = b"property-test-key-property-test!";

    fn core() -> Core {
        let node = |name: &str, last: u8| NodeSpec {
            name: name.into(),
            addresses: vec![SocketAddr::from(([127, 0, 0, last], 694))],
            role: Role::Member,
        };
        Core::new(
            Settings {
                cluster: "c".into(),
                nodes: vec![node("a", 1), node("b", 2)],
                local: "a".into(),
                timing: Timing::default(),
                quorum: QuorumPolicy::TwoNode,
                generation: 5,
                keys: KeyRing::new((1, KEY), &[]),
            },
            Duration::ZERO,
        )
        .unwrap()
    }

    fn feed(c: &mut Core, generation: u64, seq: u64, payload: &[u8], at: Duration) {
        let h = Header {
            version: wire::VERSION,
            key_id: 1,
            generation,
            seq,
            cluster: "c",
            sender: "b",
            receiver: "a",
        };
        if let Some(d) = wire::seal(&KeyRing::new((1, KEY), &[]), &h, payload) {
            c.handle_datagram(at, 0, SocketAddr::from(([127, 0, 0, 2], 694)), &d);
        }
        c.handle_timeout(at + Duration::from_millis(1));
        while let Some(t) = c.poll_transmit() {
            assert!(t.bytes.len() <= wire::MAX_DATAGRAM);
        }
        while c.poll_event().is_some() {}
        while c.poll_delivery().is_some() {}
    }

    fn data() -> impl Strategy<Value = msg::Data> {
        (
            0u64..40,
            "[a-z]{0,70}",
            proptest::collection::vec(any::<u8>(), 0..950),
            any::<bool>(),
        )
            .prop_map(|(seq, topic, payload, broadcast)| msg::Data {
                seq,
                topic,
                payload,
                broadcast,
            })
    }

    fn packet() -> impl Strategy<Value = msg::Packet> {
        (
            prop_oneof![Just(0u64), Just(5u64), any::<u64>()],
            proptest::option::of((
                any::<u64>(),
                any::<u64>(),
                proptest::collection::vec((0u32..3, any::<u64>(), any::<u64>()), 0..3),
            )),
            0u64..50,
            proptest::collection::vec(data(), 0..3),
            proptest::option::of((any::<u64>(), any::<u64>())),
            any::<bool>(),
            0u32..3,
        )
            .prop_map(
                |(receiver_generation, hb, data_base, data, ack, leaving, from_link)| msg::Packet {
                    receiver_generation,
                    heartbeat: hb.map(|(hb_seq, sent_at, echoes)| msg::Heartbeat {
                        hb_seq,
                        sent_at,
                        echoes: echoes
                            .into_iter()
                            .map(|(link, sent_at, held)| msg::Echo {
                                link,
                                sent_at,
                                held,
                            })
                            .collect(),
                    }),
                    data_base,
                    data,
                    ack: ack.map(|(generation, seq)| msg::Ack { generation, seq }),
                    leaving,
                    from_link,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn arbitrary_authentic_bytes_never_panic(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..6),
        ) {
            let mut c = core();
            for (i, p) in payloads.iter().enumerate() {
                feed(&mut c, 7, i as u64 + 1, p, Duration::from_millis(10 * i as u64));
            }
        }

        #[test]
        fn arbitrary_authentic_packets_never_panic(
            packets in proptest::collection::vec((1u64..10, packet()), 1..8),
        ) {
            let mut c = core();
            for (i, (generation, p)) in packets.iter().enumerate() {
                feed(&mut c, *generation, i as u64 + 1, &p.encode_to_vec(), Duration::from_millis(50 * i as u64));
            }
            // Sending still works or fails cleanly afterwards.
            let _ = c.send(Duration::from_secs(1), Some("b"), "t", b"x");
        }
    }
}
