//! The core's fencing decisions with a controlled clock: who fences whom, when, how often,
//! and that a group is taken from a dead peer only once the peer is off. A small cluster of
//! cores with messages delivered at once; membership's verdicts are fed by each test.
use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use tandem_config::{Failback, Role};
use tandem_resource_agent::core::restart::RestartPolicy;
use tandem_resource_agent::core::{
    AgentOutcome, Config, Core, DeathReason, Event, FenceChange, FenceConfig, FencePhase,
    GroupChange, GroupSpec, Input, LocalState, MemberNode, MemberState, Membership, Output, Quorum,
    Time, Timers,
};

use tandem_resource_agent::core::notice::FenceNotice;

const GROUP: &str = "floatip";
const DELAY: Duration = Duration::from_secs(5);
const STEP: Duration = Duration::from_millis(10);

struct Net {
    names: Vec<String>,
    cores: Vec<Core>,
    now: Time,
    /// Pairs whose messages are lost (both ways).
    cut: BTreeSet<(usize, usize)>,
    /// Fences asked for: (by, node, death, at).
    fences: Vec<(usize, String, u64, Time)>,
    /// Starts ordered: (node, at).
    starts: Vec<(usize, Time)>,
    /// Every event, in order: (node, event).
    events: Vec<(usize, Event)>,
    /// Notices sent to every node: (by, payload).
    notices: Vec<(usize, Vec<u8>)>,
}

fn fencing() -> Option<FenceConfig> {
    Some(FenceConfig::new(DELAY))
}

impl Net {
    fn new(members: &[&str], witness: Option<&str>, fence: Option<FenceConfig>) -> Net {
        let mut nodes: Vec<(String, Role)> = members
            .iter()
            .map(|n| (n.to_string(), Role::Member))
            .collect();
        if let Some(w) = witness {
            nodes.push((w.to_owned(), Role::Witness));
        }
        let names: Vec<String> = members.iter().map(|n| n.to_string()).collect();
        let cores = names
            .iter()
            .map(|local| {
                let cfg = Config {
                    local: local.clone(),
                    nodes: nodes.clone(),
                    groups: vec![GroupSpec {
                        name: GROUP.into(),
                        prefer: Some(members[0].into()),
                        failback: Failback::Auto,
                    }],
                    timers: Timers::default(),
                    dead_after: Duration::from_secs(1),
                    restart: RestartPolicy::default(),
                    longest_monitor: Duration::from_secs(10),
                };
                Core::new(cfg, 1, &[], false, Time::ZERO)
                    .unwrap()
                    .with_fencing(fence)
            })
            .collect();
        let mut net = Net {
            names,
            cores,
            now: Time::ZERO,
            cut: BTreeSet::new(),
            fences: Vec::new(),
            starts: Vec::new(),
            events: Vec::new(),
            notices: Vec::new(),
        };
        let voters = nodes.len() as u32;
        for i in 0..net.cores.len() {
            let snapshot = Membership::Snapshot {
                quorum: Quorum {
                    quorate: true,
                    // `two_node` with two voters: always quorate.
                    needed: if voters == 2 { 1 } else { voters / 2 + 1 },
                },
                nodes: nodes
                    .iter()
                    .map(|(n, _)| MemberNode {
                        name: n.clone(),
                        state: MemberState::Up,
                        generation: 1,
                    })
                    .collect(),
            };
            net.feed(i, Input::Membership(snapshot));
        }
        net.run(Duration::from_secs(3));
        assert_eq!(
            net.state(0),
            LocalState::Running,
            "the preferred node holds"
        );
        net.starts.clear();
        net
    }

    fn feed(&mut self, i: usize, input: Input) {
        let mut queue = VecDeque::from([(i, input)]);
        while let Some((i, input)) = queue.pop_front() {
            self.cores[i].handle(self.now, input);
            for out in self.cores[i].drain_outputs() {
                match out {
                    Output::Send { to, payload } => {
                        for j in 0..self.cores.len() {
                            let addressed = to.as_ref().is_none_or(|t| *t == self.names[j]);
                            if j != i && addressed && !self.cut.contains(&(i.min(j), i.max(j))) {
                                let msg = Input::Message {
                                    from: self.names[i].clone(),
                                    generation: 1,
                                    payload: payload.clone(),
                                };
                                queue.push_back((j, msg));
                            }
                        }
                    }
                    Output::Start { group, .. } => {
                        self.starts.push((i, self.now));
                        queue.push_back((i, agent(&group, AgentOutcome::Started)));
                    }
                    Output::Stop(group) => {
                        queue.push_back((i, agent(&group, AgentOutcome::Stopped)))
                    }
                    Output::Fence { node, death, .. } => {
                        assert_ne!(node, self.names[i], "a node never fences itself");
                        self.fences.push((i, node, death, self.now));
                    }
                    Output::Event(e) => self.events.push((i, e)),
                    Output::Notice(p) => self.notices.push((i, p)),
                    _ => {}
                }
            }
        }
    }

    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += STEP;
            for i in 0..self.cores.len() {
                self.feed(i, Input::Tick);
            }
        }
    }

    fn dead(&mut self, at: usize, node: &str, reason: DeathReason) {
        let m = Membership::NodeDead {
            node: node.into(),
            generation: 1,
            reason,
        };
        self.feed(at, Input::Membership(m));
    }

    fn fenced(&mut self, at: usize, node: &str, result: Result<&str, &str>) {
        let death = self
            .fences
            .iter()
            .rev()
            .find(|f| f.0 == at && f.1 == node)
            .expect("a fence was asked for")
            .2;
        let result = result.map(str::to_owned).map_err(str::to_owned);
        self.feed(
            at,
            Input::Fenced {
                node: node.into(),
                death,
                result,
            },
        );
    }

    fn state(&self, i: usize) -> LocalState {
        self.cores[i].state_of(GROUP).unwrap()
    }

    fn fences_by(&self, i: usize) -> usize {
        self.fences.iter().filter(|f| f.0 == i).count()
    }
}

fn agent(group: &str, outcome: AgentOutcome) -> Input {
    Input::Agent {
        group: group.into(),
        outcome,
        actions: Vec::new(),
    }
}

#[test]
fn a_dead_holder_is_fenced_after_the_delay_and_only_then_taken_over() {
    let mut net = Net::new(&["primary", "secondary"], None, fencing());
    net.cut.insert((0, 1));
    let died = net.now;
    net.dead(1, "primary", DeathReason::Silent);
    net.run(DELAY - Duration::from_millis(50));
    assert_eq!(
        net.fences_by(1),
        0,
        "the non-preferred side waits the delay"
    );
    assert!(net.starts.is_empty(), "nothing is taken before the fence");
    let st = net.cores[1].status(net.now);
    let why = st.groups[0]
        .waiting_for
        .clone()
        .expect("status says why it waits");
    assert!(why.contains("fencing primary in"), "{why}");
    assert_eq!(st.fences[0].phase, FencePhase::Delayed);

    net.run(Duration::from_millis(100));
    assert_eq!(net.fences_by(1), 1);
    let (_, node, _, at) = net.fences[0].clone();
    assert_eq!(node, "primary");
    assert!(
        at >= died + DELAY && at < died + DELAY + Duration::from_millis(20),
        "{at:?}"
    );
    net.run(Duration::from_secs(1));
    assert!(
        net.starts.is_empty(),
        "the IP waits for the power-off to complete"
    );
    assert_eq!(net.state(1), LocalState::Waiting);

    net.fenced(1, "primary", Ok("droplet 1 powered off"));
    assert_eq!(
        net.starts,
        vec![(1, net.now)],
        "taken over at once once fenced"
    );
    assert_eq!(net.state(1), LocalState::Running);
    let st = net.cores[1].status(net.now);
    assert_eq!(st.fences[0].phase, FencePhase::Done);
    assert_eq!(
        st.fences[0].detail.as_deref(),
        Some("droplet 1 powered off")
    );
    assert!(st.fences[0].took >= DELAY, "{:?}", st.fences[0].took);

    net.run(Duration::from_secs(60));
    assert_eq!(net.fences_by(1), 1, "one death, one fence");
    net.dead(1, "primary", DeathReason::Silent);
    net.run(Duration::from_secs(10));
    assert_eq!(
        net.fences_by(1),
        1,
        "the same death reported again is not fenced again"
    );
}

#[test]
fn the_preferred_holder_fences_a_lost_peer_at_once_and_keeps_the_group() {
    let mut net = Net::new(&["primary", "secondary"], None, fencing());
    net.cut.insert((0, 1));
    net.dead(0, "secondary", DeathReason::Silent);
    net.dead(1, "primary", DeathReason::Silent);
    assert_eq!(net.fences_by(0), 1, "no delay on the preferred side");
    assert_eq!(net.fences[0].1, "secondary");
    net.fenced(0, "secondary", Ok("droplet 2 powered off"));
    // The secondary is off now: it never gets to fence (its delay has not passed).
    assert_eq!(net.fences_by(1), 0);
    assert_eq!(net.state(0), LocalState::Running);
    assert!(net.starts.is_empty());
}

#[test]
fn a_peer_that_left_cleanly_is_not_fenced() {
    let mut net = Net::new(&["primary", "secondary"], None, fencing());
    net.cut.insert((0, 1));
    net.dead(1, "primary", DeathReason::Left);
    net.run(Duration::from_secs(10));
    assert!(net.fences.is_empty());
    assert_eq!(
        net.starts.len(),
        1,
        "taken after the leave's grace, unfenced"
    );
    assert_eq!(net.state(1), LocalState::Running);
}

#[test]
fn a_failed_fence_takes_nothing_and_is_retried_with_backoff() {
    let mut net = Net::new(&["primary", "secondary"], None, fencing());
    net.cut.insert((0, 1));
    net.dead(1, "primary", DeathReason::Silent);
    net.run(DELAY + Duration::from_millis(20));
    let first = net.now;
    net.fenced(
        1,
        "primary",
        Err("digitalocean: the API token was rejected (401 unauthorized)"),
    );
    let st = net.cores[1].status(net.now);
    let why = st.groups[0].waiting_for.clone().unwrap();
    assert!(
        why.contains("fencing primary failed: digitalocean: the API token was rejected"),
        "{why}"
    );
    assert_eq!(st.fences[0].phase, FencePhase::Failed);
    assert_eq!(st.fences[0].attempts, 1);
    net.run(Duration::from_millis(990));
    assert_eq!(net.fences_by(1), 1, "retried after 1s, not before");
    net.run(Duration::from_millis(20));
    assert_eq!(net.fences_by(1), 2);
    net.fenced(1, "primary", Err("500 from the API"));
    net.run(Duration::from_millis(1990));
    assert_eq!(net.fences_by(1), 2, "the wait doubles");
    net.run(Duration::from_millis(20));
    assert_eq!(net.fences_by(1), 3);
    assert!(
        net.fences.iter().all(|f| f.2 == net.fences[0].2),
        "one death, one key"
    );
    assert!(net.starts.is_empty(), "no IP while every fence failed");
    net.fenced(1, "primary", Ok("droplet 1 powered off"));
    assert_eq!(net.starts.len(), 1);
    let st = net.cores[1].status(net.now);
    assert_eq!(st.fences[0].attempts, 3);
    assert_eq!(st.fences[0].error, None);
    assert!(net.now > first);
}

/// Each attempt is an event (started, then failed or done) with the provider call, its
/// duration and the time since the death, and the fence is told before the group's start.
#[test]
fn a_fence_is_told_as_events_with_its_call_and_durations() {
    let fence = FenceConfig::new(DELAY).with_call("digitalocean power_off");
    let mut net = Net::new(&["primary", "secondary"], None, Some(fence));
    net.events.clear();
    net.cut.insert((0, 1));
    net.dead(1, "primary", DeathReason::Silent);
    net.run(DELAY);
    net.run(Duration::from_millis(300));
    net.fenced(1, "primary", Err("digitalocean: 401 unauthorized"));
    net.run(Duration::from_millis(1000));
    net.run(Duration::from_millis(200));
    net.fenced(1, "primary", Ok("droplet 1 powered off"));
    let fences: Vec<_> = net
        .events
        .iter()
        .filter_map(|(i, e)| match e {
            Event::Fence(f) if *i == 1 => Some(f.clone()),
            _ => None,
        })
        .collect();
    let changes: Vec<_> = fences.iter().map(|f| (f.change, f.attempt)).collect();
    assert_eq!(
        changes,
        [
            (FenceChange::Started, 1),
            (FenceChange::Failed, 1),
            (FenceChange::Started, 2),
            (FenceChange::Done, 2)
        ]
    );
    for f in &fences {
        assert_eq!(f.node, "primary");
        assert_eq!(f.call, Some("digitalocean power_off"));
        assert_eq!(f.reason, "declared dead: silent on every link");
    }
    let ms = |d: Option<Duration>| d.map(|d| d.as_millis());
    // Started once the non-preferred side's delay is over.
    assert_eq!(fences[0].since_death, DELAY);
    assert_eq!((fences[0].took, fences[0].error.as_deref()), (None, None));
    assert_eq!(ms(fences[1].took), Some(300));
    assert_eq!(ms(fences[1].retry_in), Some(1000));
    assert_eq!(
        fences[1].error.as_deref(),
        Some("digitalocean: 401 unauthorized")
    );
    assert_eq!(ms(fences[3].took), Some(200));
    assert_eq!(fences[3].detail.as_deref(), Some("droplet 1 powered off"));
    assert_eq!(fences[3].error, None);
    assert!(fences[3].since_death > fences[2].since_death);
    let done = net
        .events
        .iter()
        .position(|(_, e)| matches!(e, Event::Fence(f) if f.change == FenceChange::Done))
        .unwrap();
    let start = net
        .events
        .iter()
        .position(|(i, e)| {
            *i == 1 && matches!(e, Event::Group(g) if g.change == GroupChange::Starting)
        })
        .expect("the group started after the fence");
    assert!(done < start, "{:?}", net.events);
    // Each attempt's outcome went to every node as a notice (not the starts).
    let notices: Vec<FenceNotice> = net
        .notices
        .iter()
        .map(|(i, p)| {
            assert_eq!(*i, 1);
            FenceNotice::decode(p).expect("a fence notice")
        })
        .collect();
    let outcomes: Vec<(&str, &str, &str, u32, u64)> = notices
        .iter()
        .map(|n| {
            let (fenced, by, outcome) = (n.fenced.as_str(), n.by.as_str(), n.outcome.as_str());
            (fenced, by, outcome, n.attempt, n.duration_ms)
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("primary", "secondary", "failed", 1, 300),
            ("primary", "secondary", "completed", 2, 200)
        ]
    );
    assert_eq!(
        notices[0].error.as_deref(),
        Some("digitalocean: 401 unauthorized")
    );
    assert_eq!(notices[0].retry_in_ms, Some(1000));
    assert_eq!(notices[1].detail.as_deref(), Some("droplet 1 powered off"));
    assert_eq!(
        notices[1].since_death_ms,
        u64::try_from(fences[3].since_death.as_millis()).unwrap()
    );
    assert_eq!(
        notices[1].provider_call.as_deref(),
        Some("digitalocean power_off")
    );
}

#[test]
fn a_peer_back_before_its_fence_is_not_fenced() {
    let mut net = Net::new(&["primary", "secondary"], None, fencing());
    net.cut.insert((0, 1));
    net.dead(1, "primary", DeathReason::Silent);
    net.run(Duration::from_secs(2));
    net.cut.clear();
    let up = Membership::NodeUp {
        node: "primary".into(),
        generation: 1,
    };
    net.feed(1, Input::Membership(up));
    net.run(Duration::from_secs(10));
    assert!(net.fences.is_empty());
    assert!(net.starts.is_empty());
    let st = net.cores[1].status(net.now);
    assert_eq!(st.fences[0].phase, FencePhase::Abandoned);
    let abandoned: Vec<_> = net
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Fence(f) => Some((f.change, f.attempt, f.error.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        abandoned,
        [(
            FenceChange::Abandoned,
            0,
            Some("the node came back before it was powered off".into())
        )]
    );
}

#[test]
fn without_fencing_a_dead_holder_is_taken_over_at_once() {
    let mut net = Net::new(&["primary", "secondary"], None, None);
    net.cut.insert((0, 1));
    net.dead(1, "primary", DeathReason::Silent);
    assert_eq!(net.starts.len(), 1);
    assert!(net.fences.is_empty());
    assert!(net.cores[1].status(net.now).fences.is_empty());
}

#[test]
fn a_node_cut_off_from_the_majority_never_fences() {
    let mut net = Net::new(&["primary", "secondary"], Some("witness"), fencing());
    net.cut.insert((0, 1));
    // The primary lost the secondary and the witness: both late first, then dead one by
    // one, then no quorum.
    for n in ["secondary", "witness"] {
        let late = Membership::NodeLate { node: n.into() };
        net.feed(0, Input::Membership(late));
    }
    net.dead(0, "secondary", DeathReason::Silent);
    let lost = Membership::NodeDead {
        node: "witness".into(),
        generation: 1,
        reason: DeathReason::Silent,
    };
    net.feed(0, Input::Membership(lost));
    net.feed(
        0,
        Input::Membership(Membership::QuorumChanged(Quorum {
            quorate: false,
            needed: 2,
        })),
    );
    net.run(Duration::from_secs(10));
    assert_eq!(net.fences_by(0), 0);
}

#[test]
fn a_peer_another_member_still_hears_is_not_fenced() {
    let mut net = Net::new(&["primary", "secondary", "third"], None, fencing());
    // Only the link between the primary and the secondary fails; the third hears both.
    net.cut.insert((0, 1));
    net.dead(1, "primary", DeathReason::Silent);
    // The primary and the third keep talking: the third acknowledges newer announcements
    // of the primary than the secondary got.
    net.run(DELAY + Duration::from_secs(3));
    assert_eq!(net.fences_by(1), 0, "{:?}", net.fences);
    let st = net.cores[1].status(net.now);
    assert_eq!(st.fences[0].phase, FencePhase::Abandoned);
    assert!(
        st.fences[0]
            .error
            .as_deref()
            .unwrap()
            .contains("third still hears it")
    );
    assert!(net.starts.is_empty());
}
