//! Finds where a key path sits in the YAML text.
//!
//! serde_yaml's `Value` keeps no positions, but serde_yaml stamps the position of the node being
//! deserialized on any error a visitor returns. So we walk the document with a seed that follows
//! the path and fails on purpose at the target: the error's location is the target's position.
//! This uses serde_yaml's own parser, so block style, flow style and quoting all agree with it.
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A key path like `resources[0].agents[1].reserved-ip.ip`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    pub fn root() -> Self {
        KeyPath(Vec::new())
    }
    pub fn key(&self, k: &str) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Key(k.to_owned()));
        KeyPath(v)
    }
    pub fn index(&self, i: usize) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Index(i));
        KeyPath(v)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Marker message of the deliberate error; any other error means the walk went wrong.
const FOUND: &str = "\u{0}tandem-locate-found";

/// 1-based (line, column) of the value at `path`, or of its key when `key` is set.
/// A path that does not exist (a missing key) falls back to its nearest existing parent.
pub fn locate(text: &str, path: &KeyPath, key: bool) -> Option<(usize, usize)> {
    let mut segs: &[Seg] = &path.0;
    let mut want_key = key;
    loop {
        if let Some(pos) = locate_exact(text, segs, want_key) {
            return Some(pos);
        }
        if segs.is_empty() {
            return None;
        }
        segs = &segs[..segs.len() - 1];
        want_key = false;
    }
}

fn locate_exact(text: &str, segs: &[Seg], key: bool) -> Option<(usize, usize)> {
    let de = serde_yaml::Deserializer::from_str(text);
    match (Find { segs, key }).deserialize(de) {
        Ok(()) => None,
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| (l.line(), l.column())),
        Err(_) => None,
    }
}

struct Find<'a> {
    segs: &'a [Seg],
    key: bool,
}

impl<'de> DeserializeSeed<'de> for Find<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Find<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("anything")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.leaf()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.leaf()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.leaf()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.leaf()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        match self.segs.first() {
            None => Err(de::Error::custom(FOUND)),
            Some(Seg::Index(n)) => {
                for _ in 0..*n {
                    if seq.next_element::<IgnoredAny>()?.is_none() {
                        return Ok(());
                    }
                }
                seq.next_element_seed(Find {
                    segs: &self.segs[1..],
                    key: self.key,
                })?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(())
            }
            Some(Seg::Key(_)) => {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(())
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some(Seg::Key(target)) = self.segs.first() else {
            if self.segs.is_empty() {
                return Err(de::Error::custom(FOUND));
            }
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        let last = self.segs.len() == 1;
        loop {
            let probe = KeyProbe {
                target,
                fail_on_match: last && self.key,
            };
            match map.next_key_seed(probe)? {
                None => return Ok(()),
                Some(true) => {
                    map.next_value_seed(Find {
                        segs: &self.segs[1..],
                        key: self.key,
                    })?;
                }
                Some(false) => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
    }
}

impl Find<'_> {
    fn leaf<E: de::Error>(self) -> Result<(), E> {
        if self.segs.is_empty() {
            Err(E::custom(FOUND))
        } else {
            Ok(())
        }
    }
}

/// Deserializes a mapping key; says whether it is the target, or fails on it to report its position.
struct KeyProbe<'a> {
    target: &'a str,
    fail_on_match: bool,
}

impl<'de> DeserializeSeed<'de> for KeyProbe<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyProbe<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        self.check(v)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

impl KeyProbe<'_> {
    fn check<E: de::Error>(&self, v: &str) -> Result<bool, E> {
        let hit = v == self.target;
        if hit && self.fail_on_match {
            return Err(E::custom(FOUND));
        }
        Ok(hit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
cluster: web
nodes:
  - name: primary
    addresses: [\"104.236.6.11:694\", \"10.17.0.28:694\"]
  - name: secondary
    addresses:
      - 104.236.6.22:694
health:
  - { tcp: \"10.17.0.1:53\", interval: 2s }
";

    fn p(segs: &[Seg]) -> KeyPath {
        KeyPath(segs.to_vec())
    }
    fn k(s: &str) -> Seg {
        Seg::Key(s.into())
    }

    #[test]
    fn finds_block_flow_and_keys() {
        assert_eq!(locate(DOC, &p(&[k("cluster")]), false), Some((1, 10)));
        assert_eq!(locate(DOC, &p(&[k("cluster")]), true), Some((1, 1)));
        let a = p(&[k("nodes"), Seg::Index(0), k("addresses"), Seg::Index(1)]);
        assert_eq!(locate(DOC, &a, false), Some((4, 37)));
        let b = p(&[k("nodes"), Seg::Index(1), k("addresses"), Seg::Index(0)]);
        assert_eq!(locate(DOC, &b, false), Some((7, 9)));
        let h = p(&[k("health"), Seg::Index(0), k("interval")]);
        assert_eq!(locate(DOC, &h, true), Some((9, 28)));
    }

    #[test]
    fn missing_key_falls_back_to_parent() {
        let m = p(&[k("nodes"), Seg::Index(1), k("role")]);
        assert_eq!(locate(DOC, &m, false), Some((5, 5)));
    }

    #[test]
    fn path_displays_like_the_docs() {
        let a = p(&[k("nodes"), Seg::Index(1), k("addresses"), Seg::Index(0)]);
        assert_eq!(a.to_string(), "nodes[1].addresses[0]");
    }
}
