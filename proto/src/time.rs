//! Conversions between std time types and the protobuf well-known types.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A `std::time::Duration` as `google.protobuf.Duration` (saturating at i64::MAX seconds).
pub fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

/// A `google.protobuf.Duration` as `std::time::Duration`; negative values become zero.
pub fn from_duration(d: &prost_types::Duration) -> Duration {
    if d.seconds < 0 || d.nanos < 0 {
        return Duration::ZERO;
    }
    Duration::new(d.seconds as u64, d.nanos as u32)
}

/// A wall-clock time as `google.protobuf.Timestamp`.
pub fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => prost_types::Timestamp {
            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: d.subsec_nanos() as i32,
        },
        Err(e) => {
            let d = e.duration();
            prost_types::Timestamp {
                seconds: -i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nanos: 0,
            }
        }
    }
}

/// A `google.protobuf.Timestamp` as `SystemTime`.
pub fn from_timestamp(t: &prost_types::Timestamp) -> SystemTime {
    if t.seconds >= 0 {
        UNIX_EPOCH + Duration::new(t.seconds as u64, t.nanos.clamp(0, 999_999_999) as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.seconds.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        let d = Duration::from_millis(1234);
        assert_eq!(from_duration(&duration(d)), d);
        assert_eq!(
            from_duration(&prost_types::Duration {
                seconds: -1,
                nanos: 0
            }),
            Duration::ZERO
        );
    }

    #[test]
    fn timestamps_round_trip() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(from_timestamp(&timestamp(t)), t);
    }
}
