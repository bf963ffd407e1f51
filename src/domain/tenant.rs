//! The tenant directory: which partner event source, in which region, each
//! tenant's events go to. Callers name a tenant and optionally a source key;
//! they never name a Source, so one service cannot write into another
//! tenant's source.

use std::{collections::BTreeMap, collections::HashMap, sync::Arc};

use super::{delivery::Delivery, lifecycle::InactivePolicy};

/// One partner event source and its region. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceRef {
    name: Arc<str>,
    region: Arc<str>,
}

impl SourceRef {
    pub fn new(name: &str, region: &str) -> Self {
        Self {
            name: name.into(),
            region: region.into(),
        }
    }
    /// The full source name, `aws.partner/...`.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The AWS region the source lives in.
    pub fn region(&self) -> &str {
        &self.region
    }
}

/// The weight a tenant gets when tenants share a region's quota, unless
/// its config says otherwise.
pub const DEFAULT_TENANT_WEIGHT: u32 = 1;

/// A tenant as the scheduler sees it: who it is and its weight in the fair
/// share of a region's quota. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantShare {
    id: Arc<str>,
    weight: u32,
}

impl TenantShare {
    pub fn new(id: &str, weight: u32) -> Self {
        Self {
            id: id.into(),
            weight: weight.max(1),
        }
    }
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The id, shared.
    pub fn id_arc(&self) -> Arc<str> {
        self.id.clone()
    }
    /// At least 1.
    pub fn weight(&self) -> u32 {
        self.weight
    }
}

/// One tenant: its sources by key, and which one is the default.
#[derive(Debug, Clone)]
pub struct Tenant {
    id: String,
    default_source: String,
    sources: BTreeMap<String, SourceRef>,
    on_inactive: Option<InactivePolicy>,
    delivery: Option<Delivery>,
    share: TenantShare,
}

impl Tenant {
    /// `default_source` must be a key of `sources` (the config checks it).
    pub fn new(id: String, default_source: String, sources: BTreeMap<String, SourceRef>) -> Self {
        debug_assert!(sources.contains_key(&default_source));
        Self {
            share: TenantShare::new(&id, DEFAULT_TENANT_WEIGHT),
            id,
            default_source,
            sources,
            on_inactive: None,
            delivery: None,
        }
    }

    /// This tenant's weight in the fair share of a region's quota.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.share = TenantShare::new(&self.id, weight);
        self
    }

    /// Who this tenant is to the scheduler, with its weight.
    pub fn share(&self) -> &TenantShare {
        &self.share
    }

    /// This tenant's own policy for inactive sources, overriding the global one.
    pub fn with_inactive_policy(mut self, policy: Option<InactivePolicy>) -> Self {
        self.on_inactive = policy;
        self
    }

    pub fn inactive_policy(&self) -> Option<InactivePolicy> {
        self.on_inactive
    }

    /// This tenant's own default delivery mode, overriding the global one.
    pub fn with_delivery(mut self, delivery: Option<Delivery>) -> Self {
        self.delivery = delivery;
        self
    }

    pub fn delivery(&self) -> Option<Delivery> {
        self.delivery
    }
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The source for `key`; the empty key means the default source.
    pub fn source(&self, key: &str) -> Option<&SourceRef> {
        let key = if key.is_empty() {
            &self.default_source
        } else {
            key
        };
        self.sources.get(key)
    }
    /// The source keys, in order.
    pub fn source_keys(&self) -> impl Iterator<Item = &str> {
        self.sources.keys().map(String::as_str)
    }
    /// All sources with their keys.
    pub fn sources(&self) -> impl Iterator<Item = (&str, &SourceRef)> {
        self.sources.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// Every configured tenant.
#[derive(Debug, Clone, Default)]
pub struct TenantDirectory {
    tenants: HashMap<String, Tenant>,
}

impl TenantDirectory {
    pub fn new(tenants: impl IntoIterator<Item = Tenant>) -> Self {
        Self {
            tenants: tenants.into_iter().map(|t| (t.id.clone(), t)).collect(),
        }
    }
    pub fn get(&self, tenant_id: &str) -> Option<&Tenant> {
        self.tenants.get(tenant_id)
    }
    /// Every region some source lives in, sorted, each once.
    pub fn regions(&self) -> Vec<String> {
        let mut r: Vec<String> = self
            .tenants
            .values()
            .flat_map(|t| t.sources.values().map(|s| s.region().to_string()))
            .collect();
        r.sort();
        r.dedup();
        r
    }
    /// Every tenant, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Tenant> {
        self.tenants.values()
    }
    pub fn len(&self) -> usize {
        self.tenants.len()
    }
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_and_keyed_sources() {
        let mut s = BTreeMap::new();
        s.insert("a".into(), SourceRef::new("aws.partner/p/t/a", "us-east-1"));
        s.insert("b".into(), SourceRef::new("aws.partner/p/t/b", "eu-west-1"));
        let d = TenantDirectory::new([Tenant::new("t".into(), "b".into(), s)]);
        let t = d.get("t").unwrap();
        assert_eq!(t.source("").unwrap().name(), "aws.partner/p/t/b");
        assert_eq!(t.source("a").unwrap().region(), "us-east-1");
        assert!(t.source("c").is_none());
        assert!(d.get("u").is_none());
        assert_eq!(d.regions(), vec!["eu-west-1", "us-east-1"]);
    }
}
