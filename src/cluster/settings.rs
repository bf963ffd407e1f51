//! `[cluster]`: the Redis (or Valkey) the replicas share, and how each one
//! behaves when it cannot reach it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[cluster]` as written. Absent: one replica, in-process pacing.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// `redis://host:6379/0`, or `rediss://` for TLS; a user may be named
    /// (`redis://user@host`), the password comes from `password_env`.
    pub url: String,
    /// The environment variable holding Redis's password (a Kubernetes
    /// Secret); empty: none, or the one in the URL.
    pub password_env: String,
    /// Prefix of every key: the replicas that share one AWS account's quota
    /// share it; another account (or another deployment) takes another.
    pub key_prefix: String,
    /// The fraction of the `[quotas]` rates one replica uses on its own
    /// while Redis cannot be reached (adaptive pacing lowers it further if
    /// EventBridge throttles).
    pub fallback_share: f64,
    /// How long a replica waits for Redis's answer before it counts Redis as
    /// unreachable and falls back.
    pub timeout_ms: u64,
    /// Most call tokens a replica takes from Redis in one round trip, when
    /// that many calls wait (1: one round trip per call).
    pub lease_calls: u32,
}

impl Default for ClusterSection {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_string(),
            password_env: String::new(),
            key_prefix: "partner-events-gateway".to_string(),
            fallback_share: 0.25,
            timeout_ms: 50,
            lease_calls: 4,
        }
    }
}

/// `[cluster]`, checked.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// The URL with the password put in, if any: never logged.
    pub url: String,
    /// The URL as written (no password from the environment): for logs.
    pub url_for_logs: String,
    pub key_prefix: String,
    pub fallback_share: f64,
    pub timeout: Duration,
    pub lease_calls: u32,
}

/// A `[cluster]` setting that does not hold: the field and the problem.
#[derive(Debug, thiserror::Error)]
#[error("`cluster.{field}`: {problem}")]
pub struct ClusterConfigError {
    pub field: &'static str,
    pub problem: String,
}

fn bad(field: &'static str, problem: impl Into<String>) -> ClusterConfigError {
    ClusterConfigError {
        field,
        problem: problem.into(),
    }
}

impl ClusterSection {
    /// Checks every field; reads the password from its variable.
    pub fn settings(&self) -> Result<ClusterSettings, ClusterConfigError> {
        let scheme_ok = self.url.starts_with("redis://") || self.url.starts_with("rediss://");
        if !scheme_ok {
            return Err(bad(
                "url",
                format!(
                    "`{}` must start with redis:// (or rediss:// for TLS)",
                    redact(&self.url)
                ),
            ));
        }
        let mut url = self.url.clone();
        if !self.password_env.is_empty() {
            let password = std::env::var(&self.password_env).map_err(|_| {
                bad(
                    "password_env",
                    format!("the variable `{}` is not set", self.password_env),
                )
            })?;
            url = with_password(&url, &password).map_err(|e| bad("url", e))?;
        }
        // Parsed now so that a bad URL stops the start, not the first call.
        redis::Client::open(url.as_str())
            .map_err(|e| bad("url", format!("`{}`: {e}", redact(&self.url))))?;
        if self.key_prefix.is_empty() || self.key_prefix.len() > 200 {
            return Err(bad("key_prefix", "must be 1 to 200 characters"));
        }
        if !(self.fallback_share > 0.0 && self.fallback_share <= 1.0) {
            return Err(bad("fallback_share", "must be more than 0 and at most 1"));
        }
        if !(5..=10_000).contains(&self.timeout_ms) {
            return Err(bad("timeout_ms", "must be 5 to 10000"));
        }
        if !(1..=100).contains(&self.lease_calls) {
            return Err(bad("lease_calls", "must be 1 to 100"));
        }
        Ok(ClusterSettings {
            url,
            url_for_logs: redact(&self.url),
            key_prefix: self.key_prefix.clone(),
            fallback_share: self.fallback_share,
            timeout: Duration::from_millis(self.timeout_ms),
            lease_calls: self.lease_calls,
        })
    }
}

/// `url` with `password` as its password (percent-encoded).
fn with_password(url: &str, password: &str) -> Result<String, String> {
    let (scheme, rest) = url.split_once("://").ok_or("no scheme")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = match authority.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split(':').next().unwrap_or_default();
            return Ok(format!(
                "{scheme}://{user}:{}@{host}{path}",
                percent_encode(password)
            ));
        }
        None => authority,
    };
    Ok(format!(
        "{scheme}://:{}@{host}{path}",
        percent_encode(password)
    ))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `url` without any password, for logs and errors.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{scheme}://{name}:***@{host}{path}"),
            None => format!("{scheme}://{user}@{host}{path}"),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact("rediss://app:s3cret@cache.example:6379/0"),
            "rediss://app:***@cache.example:6379/0"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("redis://app@h/1"), "redis://app@h/1");
    }

    #[test]
    fn the_password_from_the_environment_goes_into_the_url() {
        assert_eq!(
            with_password("rediss://app@h:6380/0", "p@ss:w/rd").unwrap(),
            "rediss://app:p%40ss%3Aw%2Frd@h:6380/0"
        );
        assert_eq!(
            with_password("redis://h:6379", "pw").unwrap(),
            "redis://:pw@h:6379"
        );
        let s = ClusterSection {
            url: "redis://app:old@h:6379".into(),
            password_env: "PEG_TEST_REDIS_PASSWORD_UNSET".into(),
            ..Default::default()
        };
        let e = s.settings().unwrap_err();
        assert_eq!(e.field, "password_env");
    }

    #[test]
    fn bad_settings_name_their_field() {
        for (s, field) in [
            (
                ClusterSection {
                    url: "http://h".into(),
                    ..Default::default()
                },
                "url",
            ),
            (
                ClusterSection {
                    fallback_share: 0.0,
                    ..Default::default()
                },
                "fallback_share",
            ),
            (
                ClusterSection {
                    lease_calls: 0,
                    ..Default::default()
                },
                "lease_calls",
            ),
            (
                ClusterSection {
                    key_prefix: String::new(),
                    ..Default::default()
                },
                "key_prefix",
            ),
        ] {
            assert_eq!(s.settings().unwrap_err().field, field);
        }
        assert!(ClusterSection::default().settings().is_ok());
    }
}
