//! A bounded cache of embeddings keyed by a hash of the text: identical texts (repeated
//! events, a dashboard's standing query) are embedded once.

use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// A bounded map from a text's hash to its vector; the oldest entry goes first.
pub struct TextCache {
    map: HashMap<u128, Arc<[f32]>>,
    order: VecDeque<u128>,
    capacity: usize,
}

impl TextCache {
    pub fn new(capacity: usize) -> Self {
        Self { map: HashMap::new(), order: VecDeque::new(), capacity }
    }

    pub fn key(text: &str) -> u128 {
        let digest = Sha256::digest(text.as_bytes());
        u128::from_le_bytes(digest[..16].try_into().expect("16 bytes"))
    }

    pub fn get(&self, key: u128) -> Option<Arc<[f32]>> {
        self.map.get(&key).cloned()
    }

    pub fn insert(&mut self, key: u128, v: Arc<[f32]>) {
        if self.capacity == 0 || self.map.contains_key(&key) {
            return;
        }
        if self.map.len() >= self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.map.remove(&old);
        }
        self.map.insert(key, v);
        self.order.push_back(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_is_bounded() {
        let mut cache = TextCache::new(2);
        let v: Arc<[f32]> = vec![1.0].into();
        for text in ["a", "b", "c"] {
            cache.insert(TextCache::key(text), v.clone());
        }
        assert!(cache.get(TextCache::key("a")).is_none());
        assert!(cache.get(TextCache::key("c")).is_some());
        assert_eq!(cache.map.len(), 2);
    }
}
