//! The raw serde shape of cluster.yaml: what the file may contain, before any meaning is checked.
//!
//! Every field is optional here so that a missing key is reported by validation with the
//! contract's wording (and together with every other problem) instead of stopping serde.
use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Visitor};

/// A scalar read as text, whatever YAML made of it (`694`, `2s`, `true`, `"x"`), so that
/// validation can say precisely why it is wrong.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a single value (text or number), not a list or mapping")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTop {
    // Each section is deserialized on its own, so one malformed section does not hide the
    // errors of the others.
    pub cluster: Option<serde_yaml::Value>,
    pub auth: Option<serde_yaml::Value>,
    pub timing: Option<serde_yaml::Value>,
    pub quorum: Option<serde_yaml::Value>,
    pub nodes: Option<serde_yaml::Value>,
    pub health: Option<serde_yaml::Value>,
    pub resources: Option<serde_yaml::Value>,
    pub membership: Option<serde_yaml::Value>,
    pub agent: Option<serde_yaml::Value>,
    pub fencing: Option<serde_yaml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub key_file: Option<Text>,
    pub accept_key_files: Option<Vec<Text>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTiming {
    pub interval: Option<Text>,
    pub warn_after: Option<Text>,
    pub dead_after: Option<Text>,
    pub init_dead: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub name: Option<Text>,
    pub addresses: Option<Vec<Text>>,
    pub role: Option<Text>,
    pub provider_id: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub tcp: Option<Text>,
    pub http: Option<Text>,
    pub exec: Option<Text>,
    pub expect: Option<u16>,
    pub interval: Option<Text>,
    pub timeout: Option<Text>,
    pub fall: Option<u32>,
    pub rise: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroup {
    pub name: Option<Text>,
    pub prefer: Option<Text>,
    pub failback: Option<Text>,
    pub agents: Option<Vec<serde_yaml::Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReservedIp {
    pub provider: Option<Text>,
    pub ip: Option<Text>,
    pub token_file: Option<Text>,
    pub api_url: Option<Text>,
    pub metadata_url: Option<Text>,
    pub droplet_id: Option<u64>,
    pub droplet_ids: Option<BTreeMap<String, u64>>,
    pub unassign_on_stop: Option<bool>,
    pub timeout: Option<Text>,
    pub monitor_interval: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFencing {
    pub provider: Option<Text>,
    pub token_file: Option<Text>,
    pub api_url: Option<Text>,
    pub delay: Option<Text>,
    pub timeout: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLsb {
    pub script: Option<Text>,
    pub timeout: Option<Text>,
    pub monitor_interval: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOcf {
    pub agent: Option<Text>,
    pub params: Option<BTreeMap<String, Text>>,
    pub ocf_root: Option<Text>,
    pub timeout: Option<Text>,
    pub monitor_interval: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExec {
    pub start: Option<Text>,
    pub stop: Option<Text>,
    pub monitor: Option<Text>,
    pub timeout: Option<Text>,
    pub monitor_interval: Option<Text>,
}

/// Keys allowed beside an agent's kind key (`- lsb: nginx` + `timeout: 30s`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgentOuter {
    pub timeout: Option<Text>,
    pub monitor_interval: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMembership {
    pub socket_group: Option<Text>,
    pub metrics: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgentSettings {
    pub socket_group: Option<Text>,
    pub admin_group: Option<Text>,
    pub metrics: Option<Text>,
}

/// The field names serde expects for `T`, read from its derived `Deserialize` so the list of
/// allowed keys (for "unknown key, did you mean ...") never drifts from the structs above.
pub fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldsProbe(&mut fields));
    fields
}

struct FieldsProbe<'a>(&'a mut &'static [&'static str]);

impl<'de> de::Deserializer<'de> for FieldsProbe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("fields probed"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// serde's words for a number that does not fit ("invalid value: integer `-1`, expected
/// u32") in the file's terms: (message, expected).
pub fn plain_number(msg: &str, expected: Option<&str>) -> Option<(String, String)> {
    let max = match expected? {
        "u8" => u64::from(u8::MAX),
        "u16" => u64::from(u16::MAX),
        "u32" => u64::from(u32::MAX),
        "u64" => u64::MAX,
        _ => return None,
    };
    let range = if max == u64::MAX {
        "a whole number".to_owned()
    } else {
        format!("a whole number from 0 to {max}")
    };
    if let Some(n) = backticked(msg, "invalid value: integer ") {
        let why = if n.starts_with('-') {
            "is negative"
        } else {
            "is too large"
        };
        return Some((format!("{n} {why}"), range));
    }
    let what = msg.strip_prefix("invalid type: ")?;
    let message = match what.strip_prefix("string ") {
        Some(quoted) => format!("{quoted} is not a whole number"),
        None => format!("is {what}, not a whole number"),
    };
    Some((message, range))
}

/// serde_yaml's words for an integer too large for any number type ("health[0].fall: invalid
/// type: integer `999…` as u128, expected any YAML value"): (key path, message).
pub fn plain_overflow(msg: &str) -> Option<(String, String)> {
    let (path, rest) = msg.split_once(": invalid type: integer ")?;
    let n = backticked(rest, "")?;
    Some((
        path.to_owned(),
        format!("{n} is too large a number for any key"),
    ))
}

/// The text between the backticks right after `prefix`.
fn backticked<'a>(msg: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = msg.strip_prefix(prefix)?.strip_prefix('`')?;
    rest.split_once('`').map(|(n, _)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_lists_come_from_the_structs() {
        assert_eq!(
            fields_of::<RawNode>(),
            &["name", "addresses", "role", "provider_id"]
        );
        assert!(fields_of::<RawTop>().contains(&"resources"));
    }

    #[test]
    fn numbers_out_of_range_read_plainly() {
        assert_eq!(
            plain_number("invalid value: integer `99999999999`", Some("u32")),
            Some((
                "99999999999 is too large".to_owned(),
                "a whole number from 0 to 4294967295".to_owned()
            ))
        );
        assert_eq!(
            plain_number("invalid value: integer `-1`", Some("u16")).map(|x| x.0),
            Some("-1 is negative".to_owned())
        );
        assert_eq!(
            plain_number("invalid type: string \"three\"", Some("u32")).map(|x| x.0),
            Some("\"three\" is not a whole number".to_owned())
        );
        assert_eq!(plain_number("invalid type: map", Some("a boolean")), None);
        assert_eq!(
            plain_overflow(
                "health[0].fall: invalid type: integer `99999999999999999999999` as u128, expected any YAML value"
            ),
            Some((
                "health[0].fall".to_owned(),
                "99999999999999999999999 is too large a number for any key".to_owned()
            ))
        );
    }
}
