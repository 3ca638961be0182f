//! The names the daemon is known by — its bus name and objects — and the names of the
//! hosts whose histories it keeps. Plain rules, used by every layer.

use anyhow::{Result, bail};

pub const BUS_NAME: &str = "dev.ovs.PortAgent1";
pub const OBJECT_PATH: &str = "/dev/ovs/PortAgent1";

/// Checks an origin's name: the primary's host name, and a directory name.
pub fn check_origin_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        bail!("origin {name:?} must be 1 to 64 letters, digits, - _ or . (a host name), not starting with . or -");
    }
    Ok(())
}

/// The D-Bus object serving one origin alone: `/dev/ovs/PortAgent1/origins/<name>`, the name
/// escaped as systemd escapes object path labels (`_` and hex for anything but letters and
/// digits).
pub fn origin_object_path(name: &str) -> String {
    let mut path = format!("{}/origins/", OBJECT_PATH);
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() {
            path.push(b as char);
        } else {
            path.push_str(&format!("_{b:02x}"));
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_object_paths_are_valid_d_bus_paths() {
        assert_eq!(origin_object_path("hv01"), "/dev/ovs/PortAgent1/origins/hv01");
        assert_eq!(origin_object_path("hv-01.lab_a"), "/dev/ovs/PortAgent1/origins/hv_2d01_2elab_5fa");
        zbus::zvariant::ObjectPath::try_from(origin_object_path("a-b.c_d")).unwrap();
    }

    #[test]
    fn origin_names_are_host_names() {
        for good in ["hv01", "hv-01.lab", "a_b"] {
            check_origin_name(good).unwrap();
        }
        for bad in ["", ".hidden", "-x", "a/b", "..", "a b", &"x".repeat(65)] {
            assert!(check_origin_name(bad).is_err(), "{bad:?}");
        }
    }
}
