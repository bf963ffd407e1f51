//! Packing entries into PutPartnerEvents calls.
//!
//! [`CallBudget`] is the one rule for what fits in a call: at most
//! [`MAX_ENTRIES_PER_CALL`] entries and `max_call_bytes` by the AWS formula,
//! and always at least one entry. The pipeline's lanes pack calls with it as
//! entries arrive; [`split_into_calls`] applies it to a whole batch at once
//! (the form the property tests and the micro-benchmarks use), through the
//! same [`group_by_source`] and [`cut_into_calls`] the pipeline uses for the
//! whole calls a batch fills.
//!
//! Entries are grouped by (region, source) in order of first appearance, and
//! each group is cut greedily, in request order, into calls of at most
//! [`MAX_ENTRIES_PER_CALL`] entries and `max_call_bytes` by the AWS formula.
//! Every entry lands in exactly one call. An entry larger than the limit on
//! its own is refused earlier (by [`super::entry::prepare`]), so it never
//! reaches here; should one, it travels alone.

use super::{entry::PreparedEntry, limits::MAX_ENTRIES_PER_CALL, tenant::SourceRef};

/// How much of one call is used: decides whether the next entry still fits.
#[derive(Debug, Clone, Copy)]
pub struct CallBudget {
    max_bytes: usize,
    entries: usize,
    bytes: usize,
}

impl CallBudget {
    /// An empty call under a `max_bytes` limit.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            entries: 0,
            bytes: 0,
        }
    }
    /// Whether an entry of `size` fits. The first entry always does: an
    /// entry too large on its own travels alone (and is refused earlier).
    pub fn fits(&self, size: usize) -> bool {
        self.entries == 0
            || (self.entries < MAX_ENTRIES_PER_CALL && self.bytes + size <= self.max_bytes)
    }
    /// Counts an entry of `size` into the call.
    pub fn add(&mut self, size: usize) {
        self.entries += 1;
        self.bytes += size;
    }
    /// Whether no entry at all can be added.
    pub fn is_full(&self) -> bool {
        self.entries >= MAX_ENTRIES_PER_CALL
    }
}

/// One upstream call to be made: entries for one source in one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallPlan {
    pub entries: Vec<PreparedEntry>,
}

impl CallPlan {
    /// The region all of this call's entries go to.
    pub fn region(&self) -> &str {
        self.entries[0].source.region()
    }
    /// The call's size by the AWS formula.
    pub fn size(&self) -> usize {
        self.entries.iter().map(|e| e.size).sum()
    }
}

/// Cuts `entries` into calls (see the module docs).
pub fn split_into_calls(entries: Vec<PreparedEntry>, max_call_bytes: usize) -> Vec<CallPlan> {
    group_by_source(entries, |e| &e.source)
        .into_iter()
        .flat_map(|group| cut_into_calls(group, max_call_bytes, |e| e.size))
        .map(|entries| CallPlan { entries })
        .collect()
}

/// Groups `items` by their source, groups in order of first appearance and
/// items in order within each. Few groups per request, so a linear search
/// beats hashing here; consecutive items of one source are the common case.
pub fn group_by_source<T>(items: Vec<T>, source: impl Fn(&T) -> &SourceRef) -> Vec<Vec<T>> {
    let mut groups: Vec<Vec<T>> = Vec::with_capacity(1);
    for item in items {
        let at = match groups.last() {
            Some(g) if source(&g[0]) == source(&item) => groups.len() - 1,
            _ => match groups.iter().position(|g| source(&g[0]) == source(&item)) {
                Some(at) => at,
                None => {
                    groups.push(Vec::new());
                    groups.len() - 1
                }
            },
        };
        groups[at].push(item);
    }
    groups
}

/// Cuts `items` greedily, in order, into calls of one [`CallBudget`] each:
/// every call but the last is full (by count, or the next item did not
/// fit); the last holds what is left.
pub fn cut_into_calls<T>(
    items: Vec<T>,
    max_call_bytes: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<Vec<T>> {
    let mut calls = Vec::new();
    let mut current = Vec::new();
    let mut budget = CallBudget::new(max_call_bytes);
    for item in items {
        if !budget.fits(size(&item)) {
            calls.push(std::mem::take(&mut current));
            budget = CallBudget::new(max_call_bytes);
        }
        budget.add(size(&item));
        current.push(item);
    }
    if !current.is_empty() {
        calls.push(current);
    }
    calls
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::tenant::SourceRef;

    fn entry(index: u32, source: u8, size: usize) -> PreparedEntry {
        PreparedEntry {
            index,
            source: SourceRef::new(
                &format!("aws.partner/p/t/s{source}"),
                if source.is_multiple_of(2) {
                    "us-east-1"
                } else {
                    "eu-west-1"
                },
            ),
            time: None,
            detail_type: "T".into(),
            detail: "{}".into(),
            resources: vec![],
            size,
        }
    }

    #[test]
    fn forty_five_small_entries_make_three_calls() {
        let calls = split_into_calls((0..45).map(|i| entry(i, 0, 100)).collect(), 256 * 1024);
        assert_eq!(
            calls.iter().map(|c| c.entries.len()).collect::<Vec<_>>(),
            vec![20, 20, 5]
        );
    }

    #[test]
    fn size_cuts_before_count() {
        let calls = split_into_calls((0..10).map(|i| entry(i, 0, 300)).collect(), 1000);
        assert_eq!(
            calls.iter().map(|c| c.entries.len()).collect::<Vec<_>>(),
            vec![3, 3, 3, 1]
        );
    }

    proptest! {
        #[test]
        fn every_entry_once_and_no_call_over_the_limits(
            specs in proptest::collection::vec((0u8..4, 1usize..600), 0..300),
            max in 600usize..5000,
        ) {
            let entries: Vec<_> = specs.iter().enumerate()
                .map(|(i, (s, size))| entry(i as u32, *s, *size)).collect();
            let calls = split_into_calls(entries, max);
            let mut seen = vec![0u32; specs.len()];
            for c in &calls {
                prop_assert!(!c.entries.is_empty());
                prop_assert!(c.entries.len() <= MAX_ENTRIES_PER_CALL);
                prop_assert!(c.size() <= max);
                let src = &c.entries[0].source;
                prop_assert!(c.entries.iter().all(|e| &e.source == src));
                // request order is kept inside a call
                prop_assert!(c.entries.windows(2).all(|w| w[0].index < w[1].index));
                for e in &c.entries { seen[e.index as usize] += 1; }
            }
            prop_assert!(seen.iter().all(|&n| n == 1));
        }
    }
}
