//! What the state values NetworkManager reports mean, in the words of its own documentation
//! (`NMDeviceState`, `NMActiveConnectionState`, `NMConnectivityState`, `NetworkingEnabled`,
//! `NMDeviceStateReason`).
//! An event says `connectivity full → none` or `state prepare → failed`; an operator asks
//! "host went offline" or "device failed to connect". The meaning of the value an event ended
//! at joins its semantic text and its keywords, so both sides can find it by what it means.

/// The meaning of a field's value, for the fields NetworkManager defines. `field` is in words
/// (`networking enabled`, as `text::words` makes it), `value` as the event holds it.
pub fn meaning(field: &str, value: &str) -> Option<&'static str> {
    let value = value.trim().to_ascii_lowercase().replace('_', "-");
    let subject = field.rsplit(' ').next().unwrap_or(field);
    match subject {
        "state" | "activation" => state(&value),
        "connectivity" => connectivity(&value),
        "reason" => reason(&value),
        "enabled" if field.ends_with("networking enabled") => match value.as_str() {
            "no" | "false" => Some("overall networking is disabled"),
            "yes" | "true" => Some("overall networking is enabled"),
            _ => None,
        },
        _ => None,
    }
}

/// A device's (`NMDeviceState`) or an active connection's (`NMActiveConnectionState`) state.
fn state(value: &str) -> Option<&'static str> {
    Some(match value {
        "unmanaged" => "the device is not managed by NetworkManager",
        "unavailable" => "the device is not available for use, for example it has no carrier",
        "disconnected" => "the device is idle and not connected to a network",
        "prepare" => "the device is preparing to connect to the network",
        "config" => "the device is connecting to the network",
        "need-auth" => "the device needs more information, such as secrets, to connect",
        "ip-config" => "the device is requesting IP addresses and routes from the network",
        "ip-check" => "the device is checking whether the connection needs further action",
        "secondaries" => "the device is waiting for a secondary connection, such as a VPN",
        "activated" => "there is a connection to the network",
        "activating" => "a connection to the network is being prepared",
        "deactivating" => "the connection to the network is being torn down",
        "deactivated" => "there is no connection to the network any more",
        // NetworkManager logs this as "Activation: failed for connection …".
        "failed" => "activation failed: the device failed to connect to the network",
        _ => return None,
    })
}

/// Why a device changed state (`NMDeviceStateReason`, the common ones).
fn reason(value: &str) -> Option<&'static str> {
    Some(match value {
        "ip-config-unavailable" => "no IP address could be obtained: none available, or a DHCP timeout",
        "dhcp-failed" | "dhcp-error" | "dhcp-start-failed" => "the DHCP client failed",
        "no-secrets" => "secrets needed by the connection were not provided",
        "dependency-failed" => "a dependency of the connection failed",
        "config-failed" => "setting up the device failed",
        "carrier" | "carrier-lost" => "the device's carrier or link changed",
        "user-requested" => "disconnected by a user or client",
        "device-disconnected" => "the device the connection was using was disconnected",
        "supplicant-failed" | "supplicant-timeout" => "802.1X supplicant failed",
        _ => return None,
    })
}

/// The host's connectivity (`NMConnectivityState`).
fn connectivity(value: &str) -> Option<&'static str> {
    Some(match value {
        "none" => "the host is not connected to any network",
        "portal" => "the internet connection is hijacked by a captive portal",
        "limited" => "the host is connected to a network but cannot reach the full internet",
        "full" => "the host is connected to a network and can reach the full internet",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_of_networkmanagers_fields_have_meanings() {
        assert_eq!(meaning("connectivity", "none"), Some("the host is not connected to any network"));
        assert_eq!(meaning("state", "failed"), Some("activation failed: the device failed to connect to the network"));
        assert_eq!(meaning("device state", "IP_CONFIG"), meaning("state", "ip-config"));
        assert_eq!(meaning("networking enabled", "no"), Some("overall networking is disabled"));
        assert_eq!(meaning("reason", "dhcp-failed"), Some("the DHCP client failed"));
    }

    #[test]
    fn other_fields_and_values_have_none() {
        assert_eq!(meaning("mtu", "1500"), None);
        assert_eq!(meaning("state", "bogus"), None);
        assert_eq!(meaning("enabled", "no"), None, "not networking's switch");
    }
}
