//! What a query asks for: a time window (`time`), the text for the sentence model, and a
//! keyword query for the lexical index — exact tokens (names, addresses, numbers) as phrases,
//! other words with the domain's synonyms (`thesaurus`), common words left out.

use super::direction::{self, Direction};
use super::thesaurus;
use super::time::{self, TimeWindow};
use serde::Serialize;

/// Common words that carry no meaning for a keyword match. Words such as "up", "down", "off"
/// and "no" are not among them: in this domain they are what happened.
const STOP_WORDS: &[&str] = &[
    "a",
    "about",
    "after",
    "again",
    "all",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "been",
    "before",
    "being",
    "by",
    "can",
    "could",
    "did",
    "do",
    "does",
    "doing",
    "during",
    "each",
    "for",
    "from",
    "had",
    "has",
    "have",
    "having",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "just",
    "me",
    "my",
    "of",
    "on",
    "once",
    "only",
    "or",
    "other",
    "our",
    "over",
    "own",
    "so",
    "some",
    "such",
    "than",
    "that",
    "the",
    "their",
    "them",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "through",
    "to",
    "too",
    "under",
    "until",
    "very",
    "was",
    "we",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "would",
    "you",
    "your",
    "show",
    "list",
    "find",
    "tell",
    "give",
    "get",
    "got",
    "happened",
    "happen",
    "events",
    "event",
    "anything",
    "something",
    "any",
];

/// A query, read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The text given to the sentence model: the query without its time phrase, with the
    /// events' words its words stand for (`with_event_words`).
    pub semantic: String,
    /// The FTS5 expression for the lexical index (None: no word to match).
    #[serde(skip)]
    pub lexical: Option<String>,
    /// The words and exact tokens the lexical side looks for (as the caller wrote them).
    pub terms: Vec<String>,
    /// The FTS5 term of each word, with its synonyms (to say which matched).
    #[serde(skip)]
    pub term_queries: Vec<(String, String)>,
    pub time: Option<TimeWindow>,
    /// Which way the asked-about change went, when the query says ("back online": up).
    pub direction: Option<Direction>,
    /// Whether the query asks about failures (errors, things that failed).
    pub failure: bool,
    /// What was assumed or could not be read, said back with the answer.
    pub notes: Vec<String>,
}

/// Why a query cannot be searched.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Unsearchable(pub String);

/// The longest query read (a question, not a document).
pub const MAX_QUERY_BYTES: usize = 4096;

/// Reads a query at `now_ns` (time phrases in the host's local time, `utc_offset_s`).
pub fn plan(query: &str, now_ns: i64, utc_offset_s: i64) -> Result<Plan, Unsearchable> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(Unsearchable(format!("the query is {} bytes, more than the limit of {MAX_QUERY_BYTES}", query.len())));
    }
    let extracted = time::extract(query, now_ns, utc_offset_s);
    let mut notes = Vec::new();
    if let Some(phrase) = &extracted.unreadable {
        notes.push(format!("{phrase:?} names no time this search can read; no time filter was applied"));
    }
    let mut terms = Vec::new();
    let mut term_queries = Vec::new();
    // The events' words the query's words stand for, in the order met.
    let mut event_words: Vec<&'static str> = Vec::new();
    for raw in extracted.rest.split_whitespace() {
        let word = raw.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase();
        if word.is_empty() || STOP_WORDS.contains(&word.as_str()) || term_queries.iter().any(|(w, _)| *w == word) {
            continue;
        }
        let fts = if is_exact(&word) {
            phrase(&word)
        } else {
            let synonyms = thesaurus::synonyms(&word);
            let mut alternatives = vec![phrase(&word)];
            alternatives.extend(synonyms.iter().map(|s| phrase(s)));
            for synonym in synonyms {
                if !event_words.contains(&synonym) {
                    event_words.push(synonym);
                }
            }
            alternatives.dedup();
            if alternatives.len() == 1 { alternatives.remove(0) } else { format!("({})", alternatives.join(" OR ")) }
        };
        terms.push(raw.trim_matches(|c: char| !c.is_alphanumeric()).to_owned());
        term_queries.push((word, fts));
    }
    let semantic = with_event_words(extracted.rest.trim(), event_words, &term_queries);
    let has_letters = extracted.rest.chars().any(char::is_alphanumeric);
    if term_queries.is_empty() && extracted.window.is_none() {
        let why = if has_letters {
            "the query holds only common words (such as \"the\", \"what\", \"show\")"
        } else {
            "the query holds no words"
        };
        return Err(Unsearchable(format!("{why}; say what to look for, e.g. \"link down on eth0\"")));
    }
    let lexical = (!term_queries.is_empty()).then(|| term_queries.iter().map(|(_, q)| q.as_str()).collect::<Vec<_>>().join(" OR "));
    let words: Vec<String> = term_queries.iter().map(|(w, _)| w.clone()).collect();
    Ok(Plan {
        direction: direction::of_query(&words),
        failure: direction::query_asks_failure(&words),
        semantic: if term_queries.is_empty() { String::new() } else { semantic },
        lexical,
        terms,
        term_queries,
        time: extracted.window,
        notes,
    })
}

/// The text for the sentence model: the query, then in parentheses the events' words its
/// words stand for ("host went offline (down none lost disabled)"). The model alone puts
/// "offline" far from `connectivity full → none`; with the words the events use, the query's
/// embedding moves towards them (measured: docs/decisions.md, "The query's event words go to the
/// model too"). Words the query holds already are not added again.
fn with_event_words(query: &str, mut event_words: Vec<&str>, term_queries: &[(String, String)]) -> String {
    event_words.retain(|synonym| !term_queries.iter().any(|(w, _)| w == synonym));
    if event_words.is_empty() { query.to_owned() } else { format!("{query} ({})", event_words.join(" ")) }
}

/// A name, address or number: matched as written (its parts in order), never expanded.
fn is_exact(word: &str) -> bool {
    word.chars().any(|c| c.is_ascii_digit()) || word.contains(['.', ':', '/', '-', '_', '@'])
}

/// An FTS5 phrase of a word's tokens (`192.168.0.1` → `"192 168 0 1"`).
fn phrase(word: &str) -> String {
    let parts: Vec<&str> = word.split(|c: char| !c.is_alphanumeric()).filter(|p| !p.is_empty()).collect();
    format!("\"{}\"", parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_tokens_are_phrases_and_words_bring_synonyms() {
        let p = plan("who set MTU 9000 on 192.168.0.1 and br-int?", 0, 0).unwrap();
        assert_eq!(p.terms, vec!["set", "MTU", "9000", "192.168.0.1", "br-int"]);
        let fts = p.lexical.unwrap();
        assert!(fts.contains("\"9000\"") && fts.contains("\"192 168 0 1\"") && fts.contains("\"br int\""), "{fts}");
        let p = plan("cable unplugged", 0, 0).unwrap();
        assert!(p.lexical.unwrap().contains("\"carrier\""), "domain synonyms reach the lexical side");
    }

    #[test]
    fn the_sentence_model_gets_the_query_with_the_events_words_it_stands_for() {
        assert_eq!(plan("host went offline", 0, 0).unwrap().semantic, "host went offline (down none lost disabled)");
        assert_eq!(plan("link down on ens3", 0, 0).unwrap().semantic, "link down on ens3 (deactivated)");
        assert_eq!(plan("mtu 9000 on br-int", 0, 0).unwrap().semantic, "mtu 9000 on br-int", "names and numbers bring nothing");
    }

    #[test]
    fn queries_without_anything_to_look_for_are_refused_with_a_reason() {
        assert!(plan("what is the", 0, 0).unwrap_err().0.contains("only common words"));
        assert!(plan("?!", 0, 0).unwrap_err().0.contains("no words"));
        let only_time = plan("yesterday", 1_795_167_000 * 1_000_000_000, 0).unwrap();
        assert!(only_time.lexical.is_none() && only_time.time.is_some() && only_time.semantic.is_empty());
        let unreadable = plan("errors since 99:99", 0, 0).unwrap();
        assert!(unreadable.notes[0].contains("names no time"), "{:?}", unreadable.notes);
    }
}
