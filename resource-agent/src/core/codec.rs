//! The agents' messages on membership's `Send`/`Subscribe` ([`TOPIC`]): JSON in a versioned
//! envelope, at most [`MAX_PAYLOAD`] bytes. One kind does most of the work, the full and
//! idempotent [`Announce`]ment of a node's state (see the handover module).
//!
//! An announcement has two forms ([`Form`]), chosen once from the configuration: the lists
//! (`"t":"state"`, a list of group names per set) whenever their worst case fits, which every
//! agent version reads; else the per-group form (`"t":"gstate"`, each group named once with
//! its flags), which fits about four times as many groups. An agent older than the per-group
//! form rejects it as an unknown kind and counts it, never reading it as an empty state; it
//! could not have started with such a configuration anyway (it refused the lists' size).
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::Config;

/// The membership topic the resource agents talk on.
pub const TOPIC: &str = "tandem.agent.v1";
/// Version of the message encoding; messages of another version are rejected and counted.
pub const MESSAGE_VERSION: u32 = 1;
/// Largest payload membership carries (membership.proto, `Send`).
pub const MAX_PAYLOAD: usize = 900;

/// One node's announcement of its own state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Announce {
    /// The sender agent's incarnation (increases on every agent start).
    pub inc: u64,
    pub seq: u64,
    #[serde(default)]
    pub standby: bool,
    #[serde(default)]
    pub healthy: bool,
    #[serde(default)]
    pub holds: BTreeSet<String>,
    /// Absent when empty, like `starting`, so either full costs the same bytes.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub claims: BTreeSet<String>,
    /// Groups of `holds` whose start has not completed (a reserved IP not assigned yet):
    /// a peer running one checks it against the provider only once the start is done.
    /// Absent when empty (older agents neither send nor read it). A group is never claimed
    /// and starting at once, and the key is as long as `claims`', so the worst-case size
    /// ([`worst_case_announcement`]) is unchanged.
    #[serde(default, rename = "starts", skip_serializing_if = "BTreeSet::is_empty")]
    pub starting: BTreeSet<String>,
    /// Groups this node will not take (released by an operator, or failed here).
    #[serde(default)]
    pub avoid: BTreeSet<String>,
    /// Groups an operator moved to this node (takeover).
    #[serde(default)]
    pub pins: BTreeSet<String>,
    /// Newest (incarnation, seq) seen from each peer: the acknowledgement of claims.
    #[serde(default)]
    pub seen: BTreeMap<String, (u64, u64)>,
}

/// How an announcement is written; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Form {
    /// `"t":"state"`: `holds`, `claims`, `starts`, `avoid` and `pins` as lists of names.
    #[default]
    Lists,
    /// `"t":"gstate"`: `"g":{"web":3,…}`, each group once with its flags, the sum of
    /// 1 holds, 2 claims, 4 starting, 8 avoid, 16 pins; a group with none is left out.
    PerGroup,
}

/// Messages on [`TOPIC`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Message {
    State(Announce),
    /// Ask `node` to go to standby (`on`) or online.
    Standby {
        node: String,
        on: bool,
    },
    /// Ask `node` to take `group` over: a release on the group's holder, which moves it once
    /// to the next candidate (agents older than this message reject and count it).
    Takeover {
        node: String,
        group: String,
    },
}

/// The kind tag of [`Form::PerGroup`].
const PER_GROUP_KIND: &str = "gstate";

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    v: u32,
    #[serde(flatten)]
    msg: &'a Message,
}

/// [`Announce`] in [`Form::PerGroup`], envelope included.
#[derive(Serialize, Deserialize)]
struct PerGroup {
    v: u32,
    t: String,
    inc: u64,
    seq: u64,
    #[serde(default)]
    standby: bool,
    #[serde(default)]
    healthy: bool,
    #[serde(default)]
    g: BTreeMap<String, u32>,
    #[serde(default)]
    seen: BTreeMap<String, (u64, u64)>,
}

/// The flags of [`Form::PerGroup`]: one bit per set of [`Announce`]. A number rather than
/// letters: a group then costs its name plus 6 bytes at most (letters: 10), which is what
/// lets 20 groups of 24-character names fit among three nodes.
const HOLDS: u32 = 1;
const CLAIMS: u32 = 2;
const STARTING: u32 = 4;
const AVOID: u32 = 8;
const PINS: u32 = 16;

impl PerGroup {
    fn from_announce(a: &Announce) -> Self {
        let mut g: BTreeMap<String, u32> = BTreeMap::new();
        let sets = [
            (HOLDS, &a.holds),
            (CLAIMS, &a.claims),
            (STARTING, &a.starting),
            (AVOID, &a.avoid),
            (PINS, &a.pins),
        ];
        for (bit, set) in sets {
            for name in set {
                *g.entry(name.clone()).or_default() |= bit;
            }
        }
        PerGroup {
            v: MESSAGE_VERSION,
            t: PER_GROUP_KIND.to_owned(),
            inc: a.inc,
            seq: a.seq,
            standby: a.standby,
            healthy: a.healthy,
            g,
            seen: a.seen.clone(),
        }
    }

    /// A flag this version does not know is refused: a newer meaning is never dropped silently.
    fn into_announce(self) -> Result<Announce, CodecError> {
        let mut a = Announce {
            inc: self.inc,
            seq: self.seq,
            standby: self.standby,
            healthy: self.healthy,
            seen: self.seen,
            ..Announce::default()
        };
        for (name, flags) in self.g {
            if flags & !(HOLDS | CLAIMS | STARTING | AVOID | PINS) != 0 {
                return Err(CodecError::Malformed(format!(
                    "group {name:?} has flags {flags}, beyond the 31 this agent knows"
                )));
            }
            let sets = [
                (HOLDS, &mut a.holds),
                (CLAIMS, &mut a.claims),
                (STARTING, &mut a.starting),
                (AVOID, &mut a.avoid),
                (PINS, &mut a.pins),
            ];
            for (bit, set) in sets {
                if flags & bit != 0 {
                    set.insert(name.clone());
                }
            }
        }
        Ok(a)
    }
}

#[derive(Deserialize)]
struct Head {
    v: u32,
    #[serde(default)]
    t: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("message of {0} bytes is larger than the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    #[error("unsupported message version {0} (this agent speaks {MESSAGE_VERSION})")]
    Version(u32),
    #[error("malformed message: {0}")]
    Malformed(String),
}

impl Message {
    /// Encodes in [`Form::Lists`] (the form every agent reads).
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        self.encode_in(Form::Lists)
    }

    /// Encodes an announcement in `form` (the other kinds have one form).
    pub fn encode_in(&self, form: Form) -> Result<Vec<u8>, CodecError> {
        let bytes = match (self, form) {
            (Message::State(a), Form::PerGroup) => serde_json::to_vec(&PerGroup::from_announce(a)),
            _ => serde_json::to_vec(&EnvelopeOut {
                v: MESSAGE_VERSION,
                msg: self,
            }),
        }
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
        if bytes.len() > MAX_PAYLOAD {
            return Err(CodecError::TooLarge(bytes.len()));
        }
        Ok(bytes)
    }

    /// Decodes either form of an announcement and every other kind.
    pub fn decode(bytes: &[u8]) -> Result<Message, CodecError> {
        if bytes.len() > MAX_PAYLOAD {
            return Err(CodecError::TooLarge(bytes.len()));
        }
        let head: Head =
            serde_json::from_slice(bytes).map_err(|e| CodecError::Malformed(e.to_string()))?;
        if head.v != MESSAGE_VERSION {
            return Err(CodecError::Version(head.v));
        }
        if head.t.as_deref() == Some(PER_GROUP_KIND) {
            let p: PerGroup =
                serde_json::from_slice(bytes).map_err(|e| CodecError::Malformed(e.to_string()))?;
            return p.into_announce().map(Message::State);
        }
        serde_json::from_slice(bytes).map_err(|e| CodecError::Malformed(e.to_string()))
    }
}

/// The largest announcement of `groups` by a node with `peers` (the other nodes) in `form`:
/// every group in every set but one of `claims` and `starting` (a group is never claimed and
/// starting at once), every peer in `seen` with the largest numbers.
pub fn worst_case_in<N: AsRef<str>, G: AsRef<str>>(peers: &[N], groups: &[G], form: Form) -> usize {
    let all: BTreeSet<String> = groups.iter().map(|g| g.as_ref().to_owned()).collect();
    let size = |claims: BTreeSet<String>, starting: BTreeSet<String>| {
        let a = Announce {
            inc: u64::MAX,
            seq: u64::MAX,
            standby: true,
            healthy: true,
            holds: all.clone(),
            claims,
            starting,
            avoid: all.clone(),
            pins: all.clone(),
            seen: peers
                .iter()
                .map(|n| (n.as_ref().to_owned(), (u64::MAX, u64::MAX)))
                .collect(),
        };
        let bytes = match form {
            Form::Lists => serde_json::to_vec(&EnvelopeOut {
                v: MESSAGE_VERSION,
                msg: &Message::State(a),
            }),
            Form::PerGroup => serde_json::to_vec(&PerGroup::from_announce(&a)),
        };
        bytes.map_or(usize::MAX, |b| b.len())
    };
    size(all.clone(), BTreeSet::new()).max(size(BTreeSet::new(), all.clone()))
}

/// The form a node with these groups and peers announces in, and its worst-case size: the
/// lists when they always fit (older agents read them), else the per-group form.
pub fn announcement_form<N: AsRef<str>, G: AsRef<str>>(peers: &[N], groups: &[G]) -> (Form, usize) {
    let lists = worst_case_in(peers, groups, Form::Lists);
    if lists <= MAX_PAYLOAD {
        (Form::Lists, lists)
    } else {
        (Form::PerGroup, worst_case_in(peers, groups, Form::PerGroup))
    }
}

/// The local node's peers, whose names its announcements carry (in `seen`).
pub fn peers(cfg: &Config) -> Vec<&str> {
    cfg.nodes
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| *n != cfg.local)
        .collect()
}

/// Size of the largest announcement this configuration can produce, in the form it uses.
pub fn worst_case_announcement(cfg: &Config) -> usize {
    let groups: Vec<&str> = cfg.groups.iter().map(|g| g.name.as_str()).collect();
    announcement_form(&peers(cfg), &groups).1
}

/// Why a configuration's announcement cannot fit, with what would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooManyGroups {
    /// The worst-case announcement, bytes.
    pub worst: usize,
    /// The peers counted (every node but the one announcing).
    pub peers: usize,
    pub groups: usize,
    /// The longest group name here, bytes.
    pub longest: usize,
    /// How many groups with names as long as `longest` fit among these nodes.
    pub max_groups: usize,
    /// How long all of these groups' names may be (`None`: not even empty names fit).
    pub max_name: Option<usize>,
}

impl fmt::Display for TooManyGroups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the announcement of this node's state could reach {} bytes, more than membership \
             carries ({MAX_PAYLOAD}): with these {} other node names, at most {} groups with \
             names of {} characters fit",
            self.worst, self.peers, self.max_groups, self.longest
        )?;
        match self.max_name {
            Some(n) => write!(
                f,
                ", or these {} groups with names of at most {n} characters",
                self.groups
            )?,
            None => write!(f, "; these {} groups do not fit at all", self.groups)?,
        }
        write!(f, "; use fewer groups or shorter group or node names")
    }
}

/// Checks that the announcement of `groups` by a node with `peers` fits what membership
/// carries; if not, says how many groups, and how long names, would.
pub fn check_fits<N: AsRef<str>, G: AsRef<str>>(
    peers: &[N],
    groups: &[G],
) -> Result<(Form, usize), TooManyGroups> {
    let (form, worst) = announcement_form(peers, groups);
    if worst <= MAX_PAYLOAD {
        return Ok((form, worst));
    }
    let longest = groups.iter().map(|g| g.as_ref().len()).max().unwrap_or(0);
    // Distinct names of one length (a set would merge equal ones): a counter padded with 'x'.
    let names = |count: usize, len: usize| -> Vec<String> {
        (0..count)
            .map(|i| {
                let id = i.to_string();
                format!("{id}{}", "x".repeat(len.saturating_sub(id.len())))
            })
            .collect()
    };
    let fits =
        |count: usize, len: usize| announcement_form(peers, &names(count, len)).1 <= MAX_PAYLOAD;
    // Each group costs at least one byte, so no more than MAX_PAYLOAD fit.
    let max_groups = (0..groups.len())
        .rev()
        .find(|&k| fits(k, longest))
        .unwrap_or(0);
    let max_name = (0..longest).rev().find(|&l| fits(groups.len(), l));
    Err(TooManyGroups {
        worst,
        peers: peers.len(),
        groups: groups.len(),
        longest,
        max_groups,
        max_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn busy() -> Announce {
        Announce {
            inc: 7,
            seq: 42,
            standby: false,
            healthy: true,
            holds: set(&["web", "db", "ip6"]),
            claims: set(&["web"]),
            starting: set(&["ip6"]),
            avoid: set(&["cache"]),
            pins: set(&["db", "cache"]),
            seen: [("a".to_owned(), (3, 9)), ("b".to_owned(), (1, 2))].into(),
        }
    }

    fn names(count: usize, len: usize) -> Vec<String> {
        (0..count)
            .map(|i| format!("{i:02}-{}", "g".repeat(len - 3)))
            .collect()
    }

    #[test]
    fn both_forms_round_trip_to_the_same_announcement() {
        let m = Message::State(busy());
        for form in [Form::Lists, Form::PerGroup] {
            let bytes = m.encode_in(form).expect("encode");
            assert_eq!(Message::decode(&bytes).expect("decode"), m, "{form:?}");
        }
        let empty = Message::State(Announce::default());
        for form in [Form::Lists, Form::PerGroup] {
            let bytes = empty.encode_in(form).expect("encode");
            assert_eq!(Message::decode(&bytes).expect("decode"), empty, "{form:?}");
        }
    }

    #[test]
    fn the_per_group_form_names_each_group_once_with_its_flags() {
        let bytes = Message::State(busy())
            .encode_in(Form::PerGroup)
            .expect("encode");
        let text = String::from_utf8(bytes).expect("utf8");
        assert!(text.starts_with(r#"{"v":1,"t":"gstate","#), "{text}");
        assert!(
            text.contains(r#""g":{"cache":24,"db":17,"ip6":5,"web":3}"#),
            "{text}"
        );
        assert_eq!(text.matches("web").count(), 1, "{text}");
        // The other kinds, and `encode`, keep the lists every agent reads.
        let lists =
            String::from_utf8(Message::State(busy()).encode().expect("encode")).expect("utf8");
        assert!(lists.contains(r#""t":"state""#) && lists.contains(r#""holds":["#));
        let standby = Message::Standby {
            node: "a".into(),
            on: true,
        };
        assert_eq!(
            standby.encode_in(Form::PerGroup),
            standby.encode_in(Form::Lists)
        );
    }

    /// An agent of the version before the per-group form decodes the envelope's version, then
    /// the kinds it knows: it must refuse the new kind (and count it), never read it as a
    /// state with nothing held.
    #[test]
    fn an_agent_without_the_per_group_form_refuses_it() {
        let bytes = Message::State(busy())
            .encode_in(Form::PerGroup)
            .expect("encode");
        let head: Head = serde_json::from_slice(&bytes).expect("head");
        assert_eq!(head.v, MESSAGE_VERSION);
        let old = serde_json::from_slice::<Message>(&bytes);
        assert!(old.is_err(), "{old:?}");
    }

    #[test]
    fn an_unknown_flag_or_a_bad_shape_is_refused() {
        let bad = [
            r#"{"v":1,"t":"gstate","inc":1,"seq":1,"g":{"web":32}}"#,
            r#"{"v":1,"t":"gstate","inc":1,"seq":1,"g":{"web":-1}}"#,
            r#"{"v":1,"t":"gstate","inc":1,"seq":1,"g":{"web":"h"}}"#,
            r#"{"v":1,"t":"gstate","inc":1,"seq":1,"g":["web"]}"#,
            r#"{"v":1,"t":"gstate","seq":1,"g":{}}"#,
            r#"{"v":1,"t":7,"inc":1,"seq":1}"#,
            r#"{"v":1,"t":"other","inc":1,"seq":1}"#,
        ];
        for b in bad {
            assert!(
                matches!(Message::decode(b.as_bytes()), Err(CodecError::Malformed(_))),
                "{b}"
            );
        }
        assert_eq!(
            Message::decode(br#"{"v":2,"t":"gstate","inc":1,"seq":1}"#),
            Err(CodecError::Version(2))
        );
    }

    #[test]
    fn a_small_configuration_keeps_the_lists_and_twenty_groups_use_the_per_group_form() {
        // Three nodes: a node's announcement names the two others.
        let peers = ["tandem-node-b", "tandem-witness"];
        assert_eq!(announcement_form(&peers, &["floatip"]).0, Form::Lists);
        let twenty = names(20, 24);
        assert!(worst_case_in(&peers, &twenty, Form::Lists) > MAX_PAYLOAD);
        let (form, worst) = check_fits(&peers, &twenty).expect("twenty groups of 24 fit");
        assert_eq!(form, Form::PerGroup);
        assert!(worst <= MAX_PAYLOAD, "{worst}");
    }

    #[test]
    fn the_worst_case_bounds_every_real_announcement() {
        let nodes = ["tandem-node-b", "witness-c"];
        let groups = names(16, 24);
        let (form, worst) = check_fits(&nodes, &groups).expect("fits");
        let all: BTreeSet<String> = groups.iter().cloned().collect();
        let full = |claims: bool| Announce {
            inc: u64::MAX,
            seq: u64::MAX,
            standby: true,
            healthy: true,
            holds: all.clone(),
            claims: if claims { all.clone() } else { BTreeSet::new() },
            starting: if claims { BTreeSet::new() } else { all.clone() },
            avoid: all.clone(),
            pins: all.clone(),
            seen: nodes
                .iter()
                .map(|n| ((*n).to_owned(), (u64::MAX, u64::MAX)))
                .collect(),
        };
        for claims in [true, false] {
            let size = Message::State(full(claims))
                .encode_in(form)
                .expect("fits")
                .len();
            assert!(size <= worst, "{size} > {worst}");
        }
    }

    #[test]
    fn too_many_groups_says_how_many_and_how_long_would_fit() {
        let nodes = ["tandem-node-b", "tandem-node-c"];
        let groups = names(40, 24);
        let e = check_fits(&nodes, &groups).expect_err("forty groups of 24 do not fit");
        assert_eq!((e.groups, e.longest, e.peers), (40, 24, 2));
        assert!(e.worst > MAX_PAYLOAD);
        // The counts it names are the largest that fit.
        assert!(check_fits(&nodes, &names(e.max_groups, 24)).is_ok());
        assert!(check_fits(&nodes, &names(e.max_groups + 1, 24)).is_err());
        let len = e.max_name.expect("short names fit");
        assert!(check_fits(&nodes, &names(40, len)).is_ok());
        assert!(check_fits(&nodes, &names(40, len + 1)).is_err());
        let text = e.to_string();
        assert!(
            text.contains(&format!("at most {} groups with names of 24", e.max_groups))
                && text.contains(&format!("these 40 groups with names of at most {len}")),
            "{text}"
        );
    }

    proptest! {
        /// Whatever arrives, decoding returns and never panics; what it accepts re-encodes.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1000)) {
            if let Ok(m) = Message::decode(&bytes) {
                let _ = m.encode();
            }
        }

        /// A real message cut short or with one byte changed is refused or read, never a panic.
        #[test]
        fn damaged_announcements_never_panic(cut in 0usize..400, at in 0usize..400, byte in any::<u8>(), per_group in any::<bool>()) {
            let form = if per_group { Form::PerGroup } else { Form::Lists };
            let mut bytes = Message::State(busy()).encode_in(form).expect("encode");
            let at = at % bytes.len();
            bytes[at] = byte;
            bytes.truncate(cut.max(1));
            let _ = Message::decode(&bytes);
        }

        #[test]
        fn any_announcement_round_trips_in_both_forms(
            inc in any::<u64>(), seq in any::<u64>(), standby in any::<bool>(), healthy in any::<bool>(),
            flags in proptest::collection::btree_map("[a-z\"\\\\é-]{1,12}", 0u8..32, 0..12),
        ) {
            let pick = |bit: u8| flags.iter().filter(|(_, f)| *f & bit != 0).map(|(n, _)| n.clone()).collect();
            let a = Announce {
                inc, seq, standby, healthy,
                holds: pick(1), claims: pick(2), starting: pick(4), avoid: pick(8), pins: pick(16),
                seen: [("a".to_owned(), (inc, seq))].into(),
            };
            let m = Message::State(a);
            for form in [Form::Lists, Form::PerGroup] {
                let bytes = m.encode_in(form).expect("encode");
                prop_assert_eq!(&Message::decode(&bytes).expect("decode"), &m);
            }
        }
    }
}
