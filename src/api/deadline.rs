//! The caller's deadline, from the `grpc-timeout` request header.
//!
//! tonic has no public parser for it. The gateway answers a little before
//! the caller's deadline so that the results reach the caller instead of a
//! DEADLINE_EXCEEDED with no results.

use std::time::Duration;

use tonic::metadata::MetadataMap;

/// Parses a `grpc-timeout` value: at most 8 digits and a unit
/// (H, M, S, m, u, n), per the gRPC HTTP/2 protocol.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The time the gateway has to answer: the caller's timeout less a margin
/// (a tenth, at most 50 ms) for the answer to travel back, or `default`
/// when the caller set none.
pub fn budget(metadata: &MetadataMap, default: Duration) -> Duration {
    match metadata
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
    {
        Some(t) => t - (t / 10).min(Duration::from_millis(50)),
        None => default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_grpc_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("100n"), Some(Duration::from_nanos(100)));
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("-5S"), None);
        assert_eq!(parse_grpc_timeout("5s"), None);
    }

    #[test]
    fn budget_keeps_a_margin() {
        let mut m = MetadataMap::new();
        assert_eq!(budget(&m, Duration::from_secs(30)), Duration::from_secs(30));
        m.insert("grpc-timeout", "100m".parse().unwrap());
        assert_eq!(
            budget(&m, Duration::from_secs(30)),
            Duration::from_millis(90)
        );
        m.insert("grpc-timeout", "10S".parse().unwrap());
        assert_eq!(
            budget(&m, Duration::from_secs(30)),
            Duration::from_millis(9_950)
        );
    }
}
