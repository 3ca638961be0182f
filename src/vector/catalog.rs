//! What search filters look at, kept in memory beside the graph: per `seq`, the event's
//! time, priority and interned element, type, action and source. About 24 bytes an event.

use crate::event::Priority;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    ts: i64,
    element: u32,
    element_type: u32,
    action: u32,
    source: u32,
    priority: u8,
}

#[derive(Default, Clone)]
struct Interner {
    ids: HashMap<String, u32>,
}

impl Interner {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.ids.len() as u32;
        self.ids.insert(s.to_owned(), id);
        id
    }

    fn get(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }
}

/// The filters of a search; `None` accepts everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filters {
    pub element_id: Option<String>,
    pub element_type: Option<String>,
    pub action: Option<String>,
    pub source: Option<String>,
    pub min_priority: Option<Priority>,
    /// Unix nanoseconds, inclusive.
    pub since_ns: Option<i64>,
    pub until_ns: Option<i64>,
    /// Only events recorded before this one (analytics: "earlier than event N").
    pub before_seq: Option<u64>,
}

impl Filters {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Filters translated to interned ids; a name never seen matches nothing.
pub struct CompiledFilter<'a> {
    catalog: &'a Catalog,
    element: Option<Option<u32>>,
    element_type: Option<Option<u32>>,
    action: Option<Option<u32>>,
    source: Option<Option<u32>>,
    min_priority: u8,
    since: i64,
    until: i64,
    /// Seqs below this only.
    end: u64,
}

impl CompiledFilter<'_> {
    pub fn accepts(&self, seq: u64) -> bool {
        if seq >= self.end {
            return false;
        }
        let Some(Some(e)) = self.catalog.entries.get(seq as usize) else { return false };
        let matches = |want: Option<Option<u32>>, have: u32| want.is_none_or(|w| w == Some(have));
        e.priority >= self.min_priority
            && e.ts >= self.since
            && e.ts <= self.until
            && matches(self.element, e.element)
            && matches(self.element_type, e.element_type)
            && matches(self.action, e.action)
            && matches(self.source, e.source)
    }

    /// The newest accepted `seq`s, newest first, at most `n`.
    pub fn newest(&self, n: usize) -> Vec<u64> {
        (1..self.end).rev().filter(|s| self.accepts(*s)).take(n).collect()
    }

    /// Every accepted `seq`, up to `cap` of them (None when there are more).
    pub fn matching(&self, cap: usize) -> Option<Vec<u64>> {
        let mut out = Vec::new();
        for seq in 1..self.end {
            if self.accepts(seq) {
                if out.len() == cap {
                    return None;
                }
                out.push(seq);
            }
        }
        Some(out)
    }
}

/// An event offered to the catalog out of ledger order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the filter catalog takes events in order: seq {seq} offered where at most {next} fits")]
pub struct CatalogGap {
    pub seq: u64,
    pub next: u64,
}

#[derive(Default, Clone)]
pub struct Catalog {
    entries: Vec<Option<Entry>>,
    elements: Interner,
    types: Interner,
    actions: Interner,
    sources: Interner,
}

impl Catalog {
    /// Adds (or replaces) the event `seq`. Events arrive in ledger order, so `seq` is at most
    /// one past the highest seen: a larger one (a damaged or crafted index) is refused
    /// rather than allocating room for it.
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &mut self,
        seq: u64,
        ts: i64,
        element_id: &str,
        element_type: &str,
        action: &str,
        source: &str,
        priority: Priority,
    ) -> Result<(), CatalogGap> {
        let at = usize::try_from(seq).map_err(|_| CatalogGap { seq, next: self.entries.len().max(1) as u64 })?;
        if at == 0 || at > self.entries.len().max(1) {
            return Err(CatalogGap { seq, next: self.entries.len().max(1) as u64 });
        }
        let entry = Entry {
            ts,
            element: self.elements.intern(element_id),
            element_type: self.types.intern(element_type),
            action: self.actions.intern(action),
            source: self.sources.intern(source),
            priority: priority.rank(),
        };
        if self.entries.len() <= at {
            self.entries.resize(at + 1, None);
        }
        self.entries[at] = Some(entry);
        Ok(())
    }

    /// The highest seq held (0 when empty).
    pub fn last_seq(&self) -> u64 {
        self.entries.len().saturating_sub(1) as u64
    }

    pub fn len(&self) -> usize {
        self.entries.iter().filter(|e| e.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events stamped within `since..=until` (ns), oldest first, of the given elements only
    /// when `elements` is given, after `after_seq`; at most `cap` of them, and how many there
    /// were in all.
    pub fn in_window(&self, since: i64, until: i64, elements: Option<&[&str]>, after_seq: u64, cap: usize) -> (Vec<u64>, usize) {
        let wanted: Option<Vec<u32>> = elements.map(|ids| ids.iter().filter_map(|id| self.elements.get(id)).collect());
        let mut out = Vec::new();
        let mut total = 0;
        for (seq, entry) in self.entries.iter().enumerate().skip(after_seq as usize + 1) {
            let Some(e) = entry else { continue };
            if e.ts < since || e.ts > until || wanted.as_ref().is_some_and(|w| !w.contains(&e.element)) {
                continue;
            }
            total += 1;
            if out.len() < cap {
                out.push(seq as u64);
            }
        }
        (out, total)
    }

    /// The timestamp of event `seq`, if held.
    pub fn ts_of(&self, seq: u64) -> Option<i64> {
        self.entries.get(seq as usize).copied().flatten().map(|e| e.ts)
    }

    pub fn compile(&self, f: &Filters) -> CompiledFilter<'_> {
        CompiledFilter {
            catalog: self,
            element: f.element_id.as_deref().map(|s| self.elements.get(s)),
            element_type: f.element_type.as_deref().map(|s| self.types.get(s)),
            action: f.action.as_deref().map(|s| self.actions.get(s)),
            source: f.source.as_deref().map(|s| self.sources.get(s)),
            min_priority: f.min_priority.map(Priority::rank).unwrap_or(0),
            since: f.since_ns.unwrap_or(i64::MIN),
            until: f.until_ns.unwrap_or(i64::MAX),
            end: f.before_seq.unwrap_or(u64::MAX).min(self.entries.len() as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_combine() {
        let mut c = Catalog::default();
        c.insert(1, 100, "interface:eth0", "interface", "link.down", "nm", Priority::High).unwrap();
        c.insert(2, 200, "interface:eth1", "interface", "link.down", "nm", Priority::Low).unwrap();
        c.insert(3, 300, "bridge:br0", "bridge", "port.added", "ovsdb", Priority::Medium).unwrap();
        assert!(c.insert(1 << 40, 0, "x", "x", "x", "x", Priority::Low).is_err(), "a seq far ahead is refused");
        assert!(c.insert(0, 0, "x", "x", "x", "x", Priority::Low).is_err());
        let f = Filters { element_type: Some("interface".into()), min_priority: Some(Priority::Medium), ..Default::default() };
        assert_eq!(c.compile(&f).matching(10), Some(vec![1]));
        let f = Filters { since_ns: Some(150), ..Default::default() };
        assert_eq!(c.compile(&f).matching(10), Some(vec![2, 3]));
        assert_eq!(c.compile(&f).matching(1), None);
        let f = Filters { before_seq: Some(3), ..Default::default() };
        assert_eq!(c.compile(&f).matching(10), Some(vec![1, 2]));
        assert!(!c.compile(&f).accepts(3));
        let f = Filters { action: Some("never.seen".into()), ..Default::default() };
        assert_eq!(c.compile(&f).matching(10), Some(vec![]));
        assert_eq!(c.in_window(100, 250, None, 0, 10), (vec![1, 2], 2));
        assert_eq!(c.in_window(0, 400, Some(&["bridge:br0", "nobody"]), 0, 10), (vec![3], 1));
        assert_eq!(c.in_window(0, 400, None, 1, 1), (vec![2], 2));
    }
}
