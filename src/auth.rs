//! Who is calling, and which tenants they may write for.
//!
//! A caller is identified by its TLS client certificate (each SAN URI, such
//! as a SPIFFE id, and each SAN DNS name is an identity) or by a bearer
//! token (`authorization: Bearer <token>`, for meshes that terminate TLS),
//! whose SHA-256 is compared in constant time with the configured ones. The
//! authorization table maps identities to tenant patterns.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use serde::{Deserialize, Serialize};

/// An `[auth]` setting that does not hold (the config turns it into its
/// own error): the field and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("`{field}`: {problem}")]
pub struct AuthConfigError {
    pub field: String,
    pub problem: String,
}

/// How callers are identified and authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Anyone who reaches the port may write for any tenant (the local
    /// default; the gateway logs a warning at start-up).
    #[default]
    Off,
    /// Every call needs an identity (client certificate or bearer token)
    /// that `[auth.callers]` allows for the tenant.
    Required,
}

/// `[auth]`: caller identities and what each may do.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    pub mode: AuthMode,
    /// Bearer tokens, for meshes that terminate TLS before the gateway.
    pub tokens: Vec<TokenSection>,
    /// Caller identity (SPIFFE id, DNS name, or a token's caller name) ->
    /// the tenants it may write for.
    pub callers: BTreeMap<String, CallerSection>,
    /// With `mode = "off"` and no `[tls]`, the gateway refuses to listen on
    /// an address other than loopback (anyone who reaches the port could
    /// write for every tenant), unless this says that anyone on the network
    /// may (a network that authenticates for it, such as a service mesh).
    pub allow_anyone_on_network: bool,
    /// Identities (as in `callers`) that may use the operators' API: the
    /// dead letters of the durable queue. Empty: nobody, with authorization
    /// required.
    pub operators: Vec<String>,
}

/// One bearer token: exactly one of `sha256`, `file`, `env`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSection {
    /// The caller this token identifies.
    pub caller: String,
    /// Hex SHA-256 of the token (the token itself is never in the file).
    pub sha256: Option<String>,
    /// A file holding the token (a mounted secret).
    pub file: Option<String>,
    /// An environment variable holding the token.
    pub env: Option<String>,
}

/// `[auth.callers."<identity>"]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CallerSection {
    /// Tenant ids or patterns with `*` (`acme`, `acme-*`, `*`).
    pub tenants: Vec<String>,
    /// This caller's own limit in entries per second (overrides
    /// `quotas.caller_entries_per_second`).
    pub entries_per_second: Option<f64>,
}

/// A caller's identities (certificate SANs, or a token's caller name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    pub identities: Vec<String>,
}

impl Caller {
    /// The name logs and metrics use: the first identity.
    pub fn name(&self) -> &str {
        self.identities.first().map(String::as_str).unwrap_or("")
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no caller identity: present a client certificate or a bearer token")]
    Unauthenticated,
    #[error("the bearer token is not valid")]
    BadToken,
    #[error("caller `{caller}` may not write for tenant `{tenant}`")]
    Denied { caller: String, tenant: String },
    #[error("caller `{caller}` is not an operator (`[auth] operators`)")]
    NotOperator { caller: String },
}

/// A tenant pattern: exact, or with `*` standing for any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantPattern(String);

impl TenantPattern {
    pub fn matches(&self, tenant: &str) -> bool {
        glob_match(&self.0, tenant)
    }
}

fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) {
        return false;
    }
    if text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(at) => rest = &rest[at + mid.len()..],
            None => return false,
        }
    }
    true
}

/// A checked `[auth]` section.
#[derive(Debug, Clone, Default)]
pub struct AuthPolicy {
    pub mode: AuthMode,
    tokens: Vec<(String, [u8; 32])>,
    callers: BTreeMap<String, CallerRule>,
    operators: Vec<String>,
}

#[derive(Debug, Clone)]
struct CallerRule {
    tenants: Vec<TenantPattern>,
    entries_per_second: Option<f64>,
}

impl AuthPolicy {
    /// Builds the policy; token files and variables are read here.
    pub fn from_section(section: &AuthSection) -> Result<Self, AuthConfigError> {
        let invalid = |field: String, problem: String| AuthConfigError { field, problem };
        let mut tokens = Vec::new();
        for (i, t) in section.tokens.iter().enumerate() {
            let field = format!("auth.tokens[{i}]");
            if t.caller.is_empty() {
                return Err(invalid(format!("{field}.caller"), "required".into()));
            }
            let hash = match (&t.sha256, &t.file, &t.env) {
                (Some(hex_hash), None, None) => {
                    let bytes = hex::decode(hex_hash.trim()).map_err(|_| {
                        invalid(format!("{field}.sha256"), "must be 64 hex digits".into())
                    })?;
                    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                        invalid(format!("{field}.sha256"), "must be 64 hex digits".into())
                    })?
                }
                (None, Some(path), None) => {
                    let token = std::fs::read_to_string(path).map_err(|e| {
                        invalid(
                            format!("{field}.file"),
                            format!("cannot read `{path}`: {e}"),
                        )
                    })?;
                    sha256(token.trim())
                }
                (None, None, Some(var)) => {
                    let token = std::env::var(var).map_err(|_| {
                        invalid(format!("{field}.env"), format!("`{var}` is not set"))
                    })?;
                    sha256(token.trim())
                }
                _ => {
                    return Err(invalid(
                        field,
                        "give exactly one of `sha256`, `file`, `env`".into(),
                    ))
                }
            };
            tokens.push((t.caller.clone(), hash));
        }
        let mut callers = BTreeMap::new();
        for (name, c) in &section.callers {
            if c.tenants.is_empty() {
                return Err(invalid(
                    format!("auth.callers.\"{name}\".tenants"),
                    "list at least one tenant or pattern".into(),
                ));
            }
            if let Some(r) = c.entries_per_second {
                if !(r > 0.0 && r.is_finite()) {
                    return Err(invalid(
                        format!("auth.callers.\"{name}\".entries_per_second"),
                        "must be a positive number".into(),
                    ));
                }
            }
            callers.insert(
                name.clone(),
                CallerRule {
                    tenants: c.tenants.iter().map(|t| TenantPattern(t.clone())).collect(),
                    entries_per_second: c.entries_per_second,
                },
            );
        }
        if section.mode == AuthMode::Required && callers.is_empty() {
            return Err(invalid(
                "auth.callers".into(),
                "with mode = \"required\", list at least one caller".into(),
            ));
        }
        Ok(Self {
            mode: section.mode,
            tokens,
            callers,
            operators: section.operators.clone(),
        })
    }

    /// Identifies the caller from its bearer token or its certificate SANs.
    /// A token that is present but wrong is an error even when a
    /// certificate would do: a caller that sends one means to use it.
    pub fn identify(
        &self,
        authorization: Option<&str>,
        cert_identities: Vec<String>,
    ) -> Result<Option<Caller>, AuthError> {
        if let Some(value) = authorization {
            let token = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .ok_or(AuthError::BadToken)?;
            let presented = sha256(token.trim());
            // Compare with every token, without stopping early, so timing
            // does not tell how much of a hash matched or which entry did.
            let mut found: Option<&str> = None;
            for (caller, hash) in &self.tokens {
                if constant_time_eq(hash, &presented) {
                    found = Some(caller);
                }
            }
            return match found {
                Some(caller) => Ok(Some(Caller {
                    identities: vec![caller.to_string()],
                })),
                None => Err(AuthError::BadToken),
            };
        }
        if cert_identities.is_empty() {
            return Ok(None);
        }
        Ok(Some(Caller {
            identities: cert_identities,
        }))
    }

    /// Whether `caller` may write for `tenant`. With auth off, everyone may.
    pub fn authorize(&self, caller: Option<&Caller>, tenant: &str) -> Result<(), AuthError> {
        if self.mode == AuthMode::Off {
            return Ok(());
        }
        let caller = caller.ok_or(AuthError::Unauthenticated)?;
        let allowed = caller.identities.iter().any(|id| {
            self.callers
                .get(id)
                .is_some_and(|rule| rule.tenants.iter().any(|p| p.matches(tenant)))
        });
        if allowed {
            Ok(())
        } else {
            Err(AuthError::Denied {
                caller: caller.name().to_string(),
                tenant: tenant.to_string(),
            })
        }
    }

    /// Whether `caller` may use the operators' API. With auth off, everyone may.
    pub fn authorize_operator(&self, caller: Option<&Caller>) -> Result<(), AuthError> {
        if self.mode == AuthMode::Off {
            return Ok(());
        }
        let caller = caller.ok_or(AuthError::Unauthenticated)?;
        if caller
            .identities
            .iter()
            .any(|id| self.operators.contains(id))
        {
            Ok(())
        } else {
            Err(AuthError::NotOperator {
                caller: caller.name().to_string(),
            })
        }
    }

    /// The caller's own entries-per-second limit, if the table sets one.
    pub fn caller_rate(&self, caller: &Caller) -> Option<f64> {
        caller
            .identities
            .iter()
            .find_map(|id| self.callers.get(id).and_then(|r| r.entries_per_second))
    }
}

fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The identities in a DER client certificate: its SAN URIs, then its SAN
/// DNS names. A certificate that does not parse has none.
pub fn certificate_identities(der: &[u8]) -> Vec<String> {
    use x509_parser::{extensions::GeneralName, prelude::FromDer};
    let Ok((_, cert)) = x509_parser::certificate::X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    let mut uris = Vec::new();
    let mut dns = Vec::new();
    for name in &san.value.general_names {
        match name {
            GeneralName::URI(u) => uris.push(u.to_string()),
            GeneralName::DNSName(d) => dns.push(d.to_string()),
            _ => {}
        }
    }
    uris.extend(dns);
    uris
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::{CallerSection, TokenSection};

    fn policy() -> AuthPolicy {
        let mut callers = BTreeMap::new();
        callers.insert(
            "spiffe://example.org/billing".to_string(),
            CallerSection {
                tenants: vec!["acme".into(), "globex-*".into()],
                entries_per_second: None,
            },
        );
        callers.insert(
            "ops".to_string(),
            CallerSection {
                tenants: vec!["*".into()],
                entries_per_second: Some(5.0),
            },
        );
        AuthPolicy::from_section(&AuthSection {
            mode: AuthMode::Required,
            tokens: vec![TokenSection {
                caller: "ops".into(),
                sha256: Some(hex::encode(sha256("s3cret"))),
                file: None,
                env: None,
            }],
            callers,
            allow_anyone_on_network: false,
            operators: vec!["ops".into()],
        })
        .unwrap()
    }

    #[test]
    fn only_operators_may_use_the_operators_api() {
        let p = policy();
        let ops = Caller {
            identities: vec!["ops".into()],
        };
        let other = Caller {
            identities: vec!["billing".into()],
        };
        assert!(p.authorize_operator(Some(&ops)).is_ok());
        assert!(matches!(
            p.authorize_operator(Some(&other)),
            Err(AuthError::NotOperator { .. })
        ));
        assert_eq!(p.authorize_operator(None), Err(AuthError::Unauthenticated));
        assert!(AuthPolicy::default().authorize_operator(None).is_ok());
    }

    #[test]
    fn patterns() {
        assert!(glob_match("acme", "acme"));
        assert!(!glob_match("acme", "acme2"));
        assert!(glob_match("globex-*", "globex-eu"));
        assert!(!glob_match("globex-*", "globe"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxc"));
        assert!(!glob_match("ab*ba", "aba"));
    }

    #[test]
    fn tokens_and_table() {
        let p = policy();
        let ops = p.identify(Some("Bearer s3cret"), vec![]).unwrap().unwrap();
        assert_eq!(ops.name(), "ops");
        assert_eq!(
            p.identify(Some("Bearer wrong"), vec![]),
            Err(AuthError::BadToken)
        );
        assert_eq!(
            p.identify(Some("Basic abc"), vec![]),
            Err(AuthError::BadToken)
        );
        assert_eq!(p.identify(None, vec![]), Ok(None));
        assert!(p.authorize(Some(&ops), "anyone").is_ok());
        assert_eq!(p.caller_rate(&ops), Some(5.0));

        let billing = p
            .identify(None, vec!["spiffe://example.org/billing".into()])
            .unwrap()
            .unwrap();
        assert!(p.authorize(Some(&billing), "acme").is_ok());
        assert!(p.authorize(Some(&billing), "globex-eu").is_ok());
        assert!(matches!(
            p.authorize(Some(&billing), "initech"),
            Err(AuthError::Denied { .. })
        ));
        assert_eq!(p.authorize(None, "acme"), Err(AuthError::Unauthenticated));
    }

    #[test]
    fn off_allows_everyone() {
        let p = AuthPolicy::default();
        assert!(p.authorize(None, "acme").is_ok());
    }
}
