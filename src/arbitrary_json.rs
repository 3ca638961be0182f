//! Arbitrary JSON for the property tests of code that reads input from outside (OVSDB
//! updates, NetworkManager settings, ledger lines): nested objects and arrays up to a few
//! levels, keys drawn from the names the code looks for mixed with any text, and values of
//! every JSON type, numbers at their extremes included.

use proptest::prelude::*;
use serde_json::{Map, Value};

/// Any JSON value whose object keys come mostly from `keys`.
pub fn json(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        ".{0,12}".prop_map(Value::String),
        proptest::sample::select(keys).prop_map(|k| Value::String(k.to_owned())),
    ];
    let key = prop_oneof![4 => proptest::sample::select(keys).prop_map(str::to_owned), 1 => ".{0,8}"];
    leaf.prop_recursive(4, 64, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((key.clone(), inner), 0..6).prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}
