//! docs/configuration.md, config/config.example.toml and the program agree: every key the
//! example lists is documented with the same default and nothing more, and the example with
//! every key uncommented is accepted (no unknown key) and is exactly the program's defaults.

use ovs_port_agent::config::Config;
use std::collections::BTreeMap;
use std::path::Path;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// `section.key` → default as written, from the example's `# key = value` lines.
fn example_keys(example: &str) -> BTreeMap<String, String> {
    let mut section = String::new();
    let mut keys = BTreeMap::new();
    for line in example.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if let Some((key, value)) = line.strip_prefix("# ").and_then(|l| l.split_once(" = ")) {
            let plain = key.chars().all(|c| c.is_ascii_lowercase() || c == '_');
            if plain && section != "sources.priorities" {
                keys.insert(format!("{section}.{key}"), value.to_owned());
            }
        }
    }
    keys
}

/// `section.key` → default, from the doc's table rows ``| `section.key` | `default` | …``.
fn documented_keys(doc: &str) -> BTreeMap<String, String> {
    doc.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let key = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let default = cells.get(2)?.strip_prefix('`')?.strip_suffix('`')?;
            key.contains('.').then(|| (key.to_owned(), default.to_owned()))
        })
        .collect()
}

#[test]
fn the_doc_the_example_and_the_defaults_agree() {
    let example = read("config/config.example.toml");
    let from_example = example_keys(&example);
    assert!(from_example.len() >= 30, "{from_example:?}");
    assert_eq!(documented_keys(&read("docs/configuration.md")), from_example, "docs/configuration.md against the example");

    // Every key uncommented: accepted, and equal to the defaults.
    let uncommented: String = example
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if rest_is_setting(rest) => rest.to_owned(),
            _ => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config.toml");
    std::fs::write(&path, &uncommented).unwrap();
    let mut config = Config::load(&path, true).unwrap_or_else(|e| panic!("{e:#}\n{uncommented}"));
    let example_override = config.sources.priorities.remove("link.down");
    assert_eq!(example_override, Some(ovs_port_agent::event::Priority::Critical), "the priority example is real");
    assert_eq!(config, Config::default(), "the example's values are the program's defaults");
}

/// `key = value` (or `"quoted.key" = value`), as opposed to a comment sentence.
fn rest_is_setting(rest: &str) -> bool {
    let Some((key, _)) = rest.split_once(" = ") else { return false };
    let key = key.trim_matches('"');
    !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || matches!(c, '_' | '.'))
}
