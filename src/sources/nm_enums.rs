//! NetworkManager's numeric enums as names (libnm's nm-dbus-interface.h, NM 1.42).

fn lookup(table: &[(u32, &'static str)], value: u32) -> String {
    table.iter().find(|(v, _)| *v == value).map(|(_, n)| (*n).to_owned()).unwrap_or_else(|| format!("unknown-{value}"))
}

const DEVICE_TYPES: &[(u32, &str)] = &[
    (0, "unknown"),
    (1, "ethernet"),
    (2, "wifi"),
    (5, "bluetooth"),
    (6, "olpc-mesh"),
    (7, "wimax"),
    (8, "modem"),
    (9, "infiniband"),
    (10, "bond"),
    (11, "vlan"),
    (12, "adsl"),
    (13, "bridge"),
    (14, "generic"),
    (15, "team"),
    (16, "tun"),
    (17, "ip-tunnel"),
    (18, "macvlan"),
    (19, "vxlan"),
    (20, "veth"),
    (21, "macsec"),
    (22, "dummy"),
    (23, "ppp"),
    (24, "ovs-interface"),
    (25, "ovs-port"),
    (26, "ovs-bridge"),
    (27, "wpan"),
    (28, "6lowpan"),
    (29, "wireguard"),
    (30, "wifi-p2p"),
    (31, "vrf"),
    (32, "loopback"),
    (33, "hsr"),
    (34, "ipvlan"),
];

const DEVICE_STATES: &[(u32, &str)] = &[
    (0, "unknown"),
    (10, "unmanaged"),
    (20, "unavailable"),
    (30, "disconnected"),
    (40, "prepare"),
    (50, "config"),
    (60, "need-auth"),
    (70, "ip-config"),
    (80, "ip-check"),
    (90, "secondaries"),
    (100, "activated"),
    (110, "deactivating"),
    (120, "failed"),
];

const DEVICE_STATE_REASONS: &[(u32, &str)] = &[
    (0, "none"),
    (1, "unknown"),
    (2, "now-managed"),
    (3, "now-unmanaged"),
    (4, "config-failed"),
    (5, "ip-config-unavailable"),
    (6, "ip-config-expired"),
    (7, "no-secrets"),
    (8, "supplicant-disconnect"),
    (9, "supplicant-config-failed"),
    (10, "supplicant-failed"),
    (11, "supplicant-timeout"),
    (12, "ppp-start-failed"),
    (13, "ppp-disconnect"),
    (14, "ppp-failed"),
    (15, "dhcp-start-failed"),
    (16, "dhcp-error"),
    (17, "dhcp-failed"),
    (18, "shared-start-failed"),
    (19, "shared-failed"),
    (20, "autoip-start-failed"),
    (21, "autoip-error"),
    (22, "autoip-failed"),
    (23, "modem-busy"),
    (24, "modem-no-dial-tone"),
    (25, "modem-no-carrier"),
    (26, "modem-dial-timeout"),
    (27, "modem-dial-failed"),
    (28, "modem-init-failed"),
    (29, "gsm-apn-failed"),
    (30, "gsm-registration-not-searching"),
    (31, "gsm-registration-denied"),
    (32, "gsm-registration-timeout"),
    (33, "gsm-registration-failed"),
    (34, "gsm-pin-check-failed"),
    (35, "firmware-missing"),
    (36, "removed"),
    (37, "sleeping"),
    (38, "connection-removed"),
    (39, "user-requested"),
    (40, "carrier"),
    (41, "connection-assumed"),
    (42, "supplicant-available"),
    (43, "modem-not-found"),
    (44, "bt-failed"),
    (45, "gsm-sim-not-inserted"),
    (46, "gsm-sim-pin-required"),
    (47, "gsm-sim-puk-required"),
    (48, "gsm-sim-wrong"),
    (49, "infiniband-mode"),
    (50, "dependency-failed"),
    (51, "br2684-failed"),
    (52, "modem-manager-unavailable"),
    (53, "ssid-not-found"),
    (54, "secondary-connection-failed"),
    (55, "dcb-fcoe-failed"),
    (56, "teamd-control-failed"),
    (57, "modem-failed"),
    (58, "modem-available"),
    (59, "sim-pin-incorrect"),
    (60, "new-activation"),
    (61, "parent-changed"),
    (62, "parent-managed-changed"),
    (63, "ovsdb-failed"),
    (64, "ip-address-duplicate"),
    (65, "ip-method-unsupported"),
    (66, "sriov-configuration-failed"),
    (67, "peer-not-found"),
    (68, "device-handler-failed"),
];

const MANAGER_STATES: &[(u32, &str)] = &[
    (0, "unknown"),
    (10, "asleep"),
    (20, "disconnected"),
    (30, "disconnecting"),
    (40, "connecting"),
    (50, "connected-local"),
    (60, "connected-site"),
    (70, "connected-global"),
];

const CONNECTIVITY: &[(u32, &str)] = &[(0, "unknown"), (1, "none"), (2, "portal"), (3, "limited"), (4, "full")];

const ACTIVE_STATES: &[(u32, &str)] = &[(0, "unknown"), (1, "activating"), (2, "activated"), (3, "deactivating"), (4, "deactivated")];

const ACTIVE_STATE_REASONS: &[(u32, &str)] = &[
    (0, "unknown"),
    (1, "none"),
    (2, "user-disconnected"),
    (3, "device-disconnected"),
    (4, "service-stopped"),
    (5, "ip-config-invalid"),
    (6, "connect-timeout"),
    (7, "service-start-timeout"),
    (8, "service-start-failed"),
    (9, "no-secrets"),
    (10, "login-failed"),
    (11, "connection-removed"),
    (12, "dependency-failed"),
    (13, "device-realize-failed"),
    (14, "device-removed"),
];

pub fn device_type(v: u32) -> String {
    lookup(DEVICE_TYPES, v)
}
pub fn device_state(v: u32) -> String {
    lookup(DEVICE_STATES, v)
}
pub fn device_state_reason(v: u32) -> String {
    lookup(DEVICE_STATE_REASONS, v)
}
pub fn manager_state(v: u32) -> String {
    lookup(MANAGER_STATES, v)
}
pub fn connectivity(v: u32) -> String {
    lookup(CONNECTIVITY, v)
}
pub fn active_state(v: u32) -> String {
    lookup(ACTIVE_STATES, v)
}
pub fn active_state_reason(v: u32) -> String {
    lookup(ACTIVE_STATE_REASONS, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_for_numbers() {
        assert_eq!(device_type(20), "veth");
        assert_eq!(device_type(24), "ovs-interface");
        assert_eq!(device_state(100), "activated");
        assert_eq!(device_state_reason(40), "carrier");
        assert_eq!(manager_state(70), "connected-global");
        assert_eq!(connectivity(1), "none");
        assert_eq!(active_state(4), "deactivated");
        assert_eq!(active_state_reason(2), "user-disconnected");
        assert_eq!(device_state(999), "unknown-999");
    }
}
