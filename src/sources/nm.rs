//! The NetworkManager source: NM's D-Bus signals (devices added/removed, device and
//! active-connection state changes with reasons, the manager's state and connectivity,
//! settings added/removed/updated, and PropertiesChanged for the properties that matter)
//! become events with NM's numbers turned into names. `Settings.Connection.Updated` carries
//! no payload, so the source fetches `GetSettings` and records the field-level diff; secrets
//! are never stored. A snapshot of everything is reconciled with the index at start and
//! whenever NetworkManager (re)appears on the bus.

use super::nm_enums as names;
use super::{LiveElement, Sink, diff, reconcile, value_text};
use crate::backoff::backoff;
use crate::engine::Engine;
use crate::event::{NewEvent, Priority};
use anyhow::{Context, Result};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use zbus::message::Type as MessageType;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value as ZValue};
use zbus::{Connection, MatchRule, MessageStream};

const SOURCE: &str = "nm";
const NM: &str = "org.freedesktop.NetworkManager";
const NM_PATH: &str = "/org/freedesktop/NetworkManager";
const SETTINGS_PATH: &str = "/org/freedesktop/NetworkManager/Settings";
const DEVICE_IFACE: &str = "org.freedesktop.NetworkManager.Device";
const WIRED_IFACE: &str = "org.freedesktop.NetworkManager.Device.Wired";
const ACTIVE_IFACE: &str = "org.freedesktop.NetworkManager.Connection.Active";
const SETTINGS_IFACE: &str = "org.freedesktop.NetworkManager.Settings";
const CONNECTION_IFACE: &str = "org.freedesktop.NetworkManager.Settings.Connection";

/// Runs forever: connect to the bus, follow NetworkManager, reconnect with backoff.
pub async fn run(bus: String, coalesce: Duration, sink: Sink, engine: Arc<Engine>) {
    let mut attempt = 0u32;
    let mut said_absent = false;
    loop {
        match session(&bus, coalesce, &sink, &engine, &mut said_absent, &mut attempt).await {
            Ok(()) => {}
            Err(e) => {
                sink.waiting(format!("{e:#}"));
                tracing::warn!(error = %format!("{e:#}"), "NetworkManager source stopped; retrying");
            }
        }
        tokio::time::sleep(backoff(attempt)).await;
        attempt = attempt.saturating_add(1);
    }
}

/// What the source knows of NetworkManager's objects.
#[derive(Default)]
struct World {
    manager: Map<String, Value>,
    /// Device path → (element id, state).
    devices: HashMap<String, (String, Map<String, Value>)>,
    /// Settings path → (uuid, flattened settings).
    connections: HashMap<String, (String, Map<String, Value>)>,
    /// Active connection path → connection uuid.
    active: HashMap<String, String>,
    /// PropertiesChanged waiting to be merged: device path → when the burst began.
    pending: HashMap<String, (Instant, Map<String, Value>)>,
    /// Devices NetworkManager withdrew, recorded as removed once `REMOVAL_GRACE` has passed:
    /// NetworkManager stopping withdraws every device it knows, which is not a removal.
    removals: Vec<(Instant, String, Map<String, Value>)>,
}

/// How long a withdrawn device waits before it is recorded as removed. If NetworkManager
/// leaves the bus meanwhile, it was stopping: nothing is recorded, and the reconciliation
/// when it returns says which devices really went.
const REMOVAL_GRACE: Duration = Duration::from_secs(1);

/// NetworkManager's signals waiting to be handled; beyond this they are counted as lost and
/// the source reconciles with NM's live state instead (as for a source-queue overflow).
const SIGNAL_QUEUE: usize = 4096;

/// What the drain tasks hand the handler.
enum Incoming {
    Signal(zbus::Message),
    Owner(zbus::Message),
    Closed(String),
}

/// Polls one match-rule stream and nothing else, so zbus's reader never waits on it (a
/// stream left unpolled while its owner awaits a method call blocks the whole connection).
async fn drain(mut stream: MessageStream, tx: mpsc::Sender<Incoming>, lost: Arc<AtomicU64>, wrap: fn(zbus::Message) -> Incoming) {
    while let Some(msg) = stream.next().await {
        match msg {
            Ok(msg) => {
                if tx.try_send(wrap(msg)).is_err() {
                    lost.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                let _ = tx.send(Incoming::Closed(e.to_string())).await;
                return;
            }
        }
    }
    let _ = tx.send(Incoming::Closed("the bus connection closed".into())).await;
}

/// Aborts the drain tasks when the session ends.
struct Drains(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Drains {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

async fn session(
    bus: &str,
    coalesce: Duration,
    sink: &Sink,
    engine: &Arc<Engine>,
    said_absent: &mut bool,
    attempt: &mut u32,
) -> Result<()> {
    let conn = crate::bus::connect(bus).await?;
    // Subscribe before reading the snapshot, so nothing falls between the two.
    let signals =
        MessageStream::for_match_rule(MatchRule::builder().msg_type(MessageType::Signal).sender(NM)?.build(), &conn, Some(64)).await?;
    let owner_rule =
        MatchRule::builder().msg_type(MessageType::Signal).sender("org.freedesktop.DBus")?.member("NameOwnerChanged")?.add_arg(NM)?.build();
    let owners = MessageStream::for_match_rule(owner_rule, &conn, Some(64)).await?;
    let (tx, mut incoming) = mpsc::channel(SIGNAL_QUEUE);
    let lost = Arc::new(AtomicU64::new(0));
    let _drains = Drains(vec![
        tokio::spawn(drain(signals, tx.clone(), lost.clone(), Incoming::Signal)),
        tokio::spawn(drain(owners, tx, lost.clone(), Incoming::Owner)),
    ]);
    let dbus = zbus::fdo::DBusProxy::new(&conn).await?;
    // Signals count only from NetworkManager's current unique name (a match rule on a
    // well-known name also lets through signals any peer sends us directly).
    let mut nm_owner: Option<String> = dbus.get_name_owner(NM.try_into()?).await.ok().map(|o| o.to_string());
    let mut world = World::default();
    if nm_owner.is_some() {
        world = snapshot(&conn).await?;
        reconcile(SOURCE, live_elements(&world), sink, engine).await?;
        *attempt = 0;
        tracing::info!(bus, "NetworkManager source connected");
        sink.connected(format!("NetworkManager on {bus}"));
    } else {
        sink.waiting(format!("NetworkManager is not on {bus}"));
        if !*said_absent {
            tracing::warn!(bus, "NetworkManager is not on the bus; the NM source waits for it");
            *said_absent = true;
        }
    }
    let mut tick = tokio::time::interval(coalesce.max(Duration::from_millis(10)) / 2);
    loop {
        let dropped = lost.swap(0, Ordering::Relaxed);
        if dropped > 0 && nm_owner.is_some() {
            tracing::warn!(signals = dropped, "NetworkManager signals overflowed; reconciling from its live state");
            // What is still queued is older than the live state read next: drop it, or it
            // would roll the picture back.
            while incoming.try_recv().is_ok() {}
            world = snapshot(&conn).await?;
            reconcile(SOURCE, live_elements(&world), sink, engine).await?;
        }
        tokio::select! {
            msg = incoming.recv() => match msg {
                None => anyhow::bail!("the bus connection closed"),
                Some(Incoming::Closed(why)) => anyhow::bail!("{why}"),
                Some(Incoming::Signal(msg)) => {
                    let from_nm = nm_owner.is_some() && msg.header().sender().map(|s| s.as_str()) == nm_owner.as_deref();
                    if from_nm
                        && let Err(e) = handle_signal(&conn, &msg, &mut world, sink).await
                    {
                        tracing::debug!(error = %format!("{e:#}"), "could not follow a NetworkManager signal");
                    }
                }
                Some(Incoming::Owner(msg)) => {
                    if msg.header().sender().map(|s| s.as_str()) != Some("org.freedesktop.DBus") {
                        continue;
                    }
                    let (_, _, new): (String, String, String) = msg.body().deserialize()?;
                    if new.is_empty() {
                        tracing::warn!("NetworkManager left the bus; waiting for it to return");
                        sink.waiting(format!("NetworkManager left {bus}"));
                        nm_owner = None;
                        // It withdrew its devices as it stopped: not removals (see REMOVAL_GRACE).
                        let withdrawn = std::mem::take(&mut world.removals).len();
                        if withdrawn > 0 {
                            tracing::info!(devices = withdrawn, "NetworkManager withdrew its devices as it stopped; its return is reconciled");
                        }
                    } else {
                        // NM (re)started: give it a moment to publish its objects, then reconcile.
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        nm_owner = Some(new);
                        world = snapshot(&conn).await?;
                        reconcile(SOURCE, live_elements(&world), sink, engine).await?;
                        tracing::info!("NetworkManager appeared on the bus; reconciled");
                        sink.connected(format!("NetworkManager on {bus}"));
                    }
                }
            },
            _ = sink.resync.notified() => {
                if nm_owner.is_some() {
                    world = snapshot(&conn).await?;
                    reconcile(SOURCE, live_elements(&world), sink, engine).await?;
                }
            }
            _ = tick.tick() => flush_pending(&mut world, coalesce, sink),
        }
    }
}

fn live_elements(world: &World) -> Vec<LiveElement> {
    let mut out = vec![LiveElement { element_id: "nm:manager".into(), label: "NetworkManager".into(), state: world.manager.clone() }];
    for (id, state) in world.devices.values() {
        out.push(LiveElement {
            element_id: id.clone(),
            label: format!("device {}", id.trim_start_matches("interface:")),
            state: state.clone(),
        });
    }
    for (uuid, settings) in world.connections.values() {
        let name = settings.get("connection.id").and_then(Value::as_str).unwrap_or(uuid);
        out.push(LiveElement { element_id: format!("connection:{uuid}"), label: format!("connection {name}"), state: settings.clone() });
    }
    out
}

/// Reads the manager, every device and every connection profile.
async fn snapshot(conn: &Connection) -> Result<World> {
    let mut world = World::default();
    let props = get_all(conn, NM_PATH, NM).await?;
    world.manager = manager_view(&props);
    let devices: Vec<OwnedObjectPath> = call(conn, NM_PATH, NM, "GetDevices", &()).await?;
    for path in devices {
        if let Ok(view) = device_view(conn, path.as_str()).await {
            world.devices.insert(path.to_string(), view);
        }
    }
    let connections: Vec<OwnedObjectPath> = call(conn, SETTINGS_PATH, SETTINGS_IFACE, "ListConnections", &()).await?;
    for path in connections {
        if let Ok(settings) = connection_settings(conn, path.as_str()).await {
            world.connections.insert(path.to_string(), settings);
        }
    }
    let active: Vec<OwnedObjectPath> =
        props.get("ActiveConnections").and_then(|v| Vec::<OwnedObjectPath>::try_from(v.clone()).ok()).unwrap_or_default();
    for path in active {
        if let Ok(uuid) = active_uuid(conn, path.as_str()).await {
            let state = get_all(conn, path.as_str(), ACTIVE_IFACE).await.ok().and_then(|p| u32_of(&p, "State")).map(names::active_state);
            if let Some((_, settings)) = world.connections.values_mut().find(|(u, _)| *u == uuid) {
                settings.insert("activation".into(), json!(state.unwrap_or_else(|| "unknown".into())));
            }
            world.active.insert(path.to_string(), uuid);
        }
    }
    for (_, settings) in world.connections.values_mut() {
        settings.entry("activation").or_insert(json!("deactivated"));
    }
    Ok(world)
}

fn manager_view(props: &HashMap<String, OwnedValue>) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(s) = u32_of(props, "State") {
        m.insert("state".into(), json!(names::manager_state(s)));
    }
    if let Some(c) = u32_of(props, "Connectivity") {
        m.insert("connectivity".into(), json!(names::connectivity(c)));
    }
    if let Some(b) = props.get("NetworkingEnabled").and_then(|v| bool::try_from(v).ok()) {
        m.insert("networking_enabled".into(), json!(b));
    }
    m
}

async fn device_view(conn: &Connection, path: &str) -> Result<(String, Map<String, Value>)> {
    let props = get_all(conn, path, DEVICE_IFACE).await?;
    let iface = props.get("Interface").and_then(|v| String::try_from(v.clone()).ok()).context("device without Interface")?;
    let mut m = Map::new();
    m.insert("interface".into(), json!(iface));
    if let Some(t) = u32_of(&props, "DeviceType") {
        m.insert("device_type".into(), json!(names::device_type(t)));
    }
    if let Some(s) = u32_of(&props, "State") {
        m.insert("state".into(), json!(names::device_state(s)));
    }
    if let Some(mtu) = u32_of(&props, "Mtu") {
        m.insert("mtu".into(), json!(mtu));
    }
    if let Some(b) = props.get("Managed").and_then(|v| bool::try_from(v).ok()) {
        m.insert("managed".into(), json!(b));
    }
    for (key, name) in [("Driver", "driver"), ("HwAddress", "hw_address")] {
        if let Some(s) = props.get(key).and_then(|v| String::try_from(v.clone()).ok()).filter(|s| !s.is_empty()) {
            m.insert(name.into(), json!(s));
        }
    }
    if let Ok(wired) = get_all(conn, path, WIRED_IFACE).await
        && let Some(c) = wired.get("Carrier").and_then(|v| bool::try_from(v).ok())
    {
        m.insert("carrier".into(), json!(c));
    }
    if let Some(ip4) = props.get("Ip4Config").and_then(|v| OwnedObjectPath::try_from(v.clone()).ok()) {
        m.insert("addresses".into(), json!(ip4_addresses(conn, ip4.as_str()).await));
    }
    Ok((format!("interface:{iface}"), m))
}

async fn ip4_addresses(conn: &Connection, path: &str) -> Vec<String> {
    if path == "/" {
        return Vec::new();
    }
    let Ok(props) = get_all(conn, path, "org.freedesktop.NetworkManager.IP4Config").await else { return Vec::new() };
    let Some(data) = props.get("AddressData") else { return Vec::new() };
    let json = to_json(data);
    let mut out: Vec<String> = json
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| Some(format!("{}/{}", a.get("address")?.as_str()?, a.get("prefix")?)))
        .collect();
    out.sort();
    out
}

async fn active_uuid(conn: &Connection, path: &str) -> Result<String> {
    let props = get_all(conn, path, ACTIVE_IFACE).await?;
    props.get("Uuid").and_then(|v| String::try_from(v.clone()).ok()).context("active connection without Uuid")
}

/// `GetSettings` flattened to `section.key`, without secrets or the volatile timestamp.
async fn connection_settings(conn: &Connection, path: &str) -> Result<(String, Map<String, Value>)> {
    let settings: HashMap<String, HashMap<String, OwnedValue>> = call(conn, path, CONNECTION_IFACE, "GetSettings", &()).await?;
    flatten_settings(&settings)
}

/// GetSettings' sections as one flat map ("ipv4.method": …) and the connection's uuid;
/// secrets and the ever-changing timestamp are left out.
fn flatten_settings(settings: &HashMap<String, HashMap<String, OwnedValue>>) -> Result<(String, Map<String, Value>)> {
    let mut flat = Map::new();
    for (section, values) in settings {
        for (key, value) in values {
            let full = format!("{section}.{key}");
            // A section named like a secret is left out whole (none of NetworkManager's is today).
            if is_secret(section) || is_secret(key) || full == "connection.timestamp" {
                continue;
            }
            let mut json = to_json(value);
            scrub_secrets(&mut json);
            if full == "ipv4.dns" {
                // NM keeps IPv4 name servers as u32 in network byte order.
                json = Value::Array(
                    json.as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_u64)
                        .map(|x| json!(std::net::Ipv4Addr::from((x as u32).to_le_bytes()).to_string()))
                        .collect(),
                );
            }
            flat.insert(full, json);
        }
    }
    let uuid = flat.get("connection.uuid").and_then(Value::as_str).context("connection without uuid")?.to_owned();
    Ok((uuid, flat))
}

/// Keys that may hold secrets; GetSettings normally omits them, and so do we, always.
fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("psk")
        || k.contains("password")
        || k.contains("secret")
        || k.contains("private-key")
        || k.starts_with("wep-key")
        || k == "pin"
        || k.ends_with("-pin")
}

/// Removes secret-like keys at any depth (VPN secrets and data are dictionaries).
fn scrub_secrets(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|k, _| !is_secret(k));
            map.values_mut().for_each(scrub_secrets);
        }
        Value::Array(items) => items.iter_mut().for_each(scrub_secrets),
        _ => {}
    }
}

/// Handles one signal from NetworkManager.
async fn handle_signal(conn: &Connection, msg: &zbus::Message, world: &mut World, sink: &Sink) -> Result<()> {
    let header = msg.header();
    let (Some(iface), Some(member), Some(path)) = (header.interface(), header.member(), header.path()) else { return Ok(()) };
    let (iface, member, path) = (iface.as_str(), member.as_str(), path.as_str().to_owned());
    match (iface, member) {
        (NM, "DeviceAdded") => {
            let (device,): (OwnedObjectPath,) = msg.body().deserialize()?;
            let (id, view) = device_view(conn, device.as_str()).await?;
            // Removed a moment ago and back: both happened, in that order.
            if let Some(at) = world.removals.iter().position(|(_, removed, _)| *removed == id) {
                let (_, removed, before) = world.removals.remove(at);
                let name = removed.trim_start_matches("interface:").to_owned();
                sink.emit(event(&removed, "device.removed", Priority::High, json!({"before": before}), format!("device {name} removed")));
            }
            // Already known (in the snapshot just reconciled, NetworkManager announcing what it
            // found on its return): not an addition.
            if world.devices.values().any(|(known, _)| *known == id) {
                world.devices.insert(device.to_string(), (id, view));
                return Ok(());
            }
            let name = view["interface"].as_str().unwrap_or_default().to_owned();
            let kind = view.get("device_type").and_then(Value::as_str).unwrap_or("device").to_owned();
            sink.emit(event(&id, "device.added", Priority::Medium, json!({"after": view}), format!("{kind} device {name} added")));
            world.devices.insert(device.to_string(), (id, view));
        }
        (NM, "DeviceRemoved") => {
            let (device,): (OwnedObjectPath,) = msg.body().deserialize()?;
            world.pending.remove(device.as_str());
            if let Some((id, view)) = world.devices.remove(device.as_str()) {
                world.removals.push((Instant::now() + REMOVAL_GRACE, id, view));
            }
        }
        (NM, "StateChanged") => {
            let (state,): (u32,) = msg.body().deserialize()?;
            let new = names::manager_state(state);
            let old = world.manager.insert("state".into(), json!(new)).unwrap_or(Value::Null);
            if old != json!(new) {
                let priority = if matches!(new.as_str(), "disconnected" | "asleep") { Priority::Critical } else { Priority::Medium };
                sink.emit(event(
                    "nm:manager",
                    "state.changed",
                    priority,
                    changed_details("state", old.clone(), json!(new)),
                    format!("NetworkManager state {} → {new}", value_text(&old)),
                ));
            }
        }
        (DEVICE_IFACE, "StateChanged") => {
            let (new, old, reason): (u32, u32, u32) = msg.body().deserialize()?;
            let Some((id, view)) = world.devices.get_mut(&path) else { return Ok(()) };
            // A state transition is never merged away: flush pending properties first.
            let (new, old, reason) = (names::device_state(new), names::device_state(old), names::device_state_reason(reason));
            view.insert("state".into(), json!(new));
            let priority = if new == "failed" {
                Priority::Critical
            } else if matches!(old.as_str(), "activated" | "secondaries" | "ip-check")
                && matches!(new.as_str(), "unavailable" | "disconnected" | "deactivating")
            {
                Priority::High
            } else if new == "activated" {
                Priority::Medium
            } else {
                Priority::Low
            };
            let name = id.trim_start_matches("interface:").to_owned();
            let mut details = changed_details("state", json!(old), json!(new));
            details["reason"] = json!(reason);
            let id = id.clone();
            flush_one(world, &path, sink);
            sink.emit(event(&id, "state.changed", priority, details, format!("{name}: {old} → {new} ({})", reason.replace('-', " "))));
        }
        (ACTIVE_IFACE, "StateChanged") => {
            let (state, reason): (u32, u32) = msg.body().deserialize()?;
            let uuid = match world.active.get(&path) {
                Some(u) => u.clone(),
                None => {
                    let u = active_uuid(conn, &path).await?;
                    world.active.insert(path.clone(), u.clone());
                    u
                }
            };
            let (new, reason) = (names::active_state(state), names::active_state_reason(reason));
            let entry = world.connections.values_mut().find(|(u, _)| *u == uuid);
            let (name, old) = match entry {
                Some((_, settings)) => (
                    settings.get("connection.id").and_then(Value::as_str).unwrap_or(&uuid).to_owned(),
                    settings.insert("activation".into(), json!(new)).unwrap_or(Value::Null),
                ),
                None => (uuid.clone(), Value::Null),
            };
            let (action, priority) = match new.as_str() {
                "activated" => ("connection.activated", Priority::Medium),
                "deactivated" => ("connection.deactivated", Priority::High),
                _ => ("activation.changed", Priority::Low),
            };
            let mut details = changed_details("activation", old, json!(new));
            details["reason"] = json!(reason);
            sink.emit(event(
                &format!("connection:{uuid}"),
                action,
                priority,
                details,
                format!("connection {name}: {new} ({})", reason.replace('-', " ")),
            ));
            if new == "deactivated" {
                world.active.remove(&path);
            }
        }
        (SETTINGS_IFACE, "NewConnection") => {
            let (p,): (OwnedObjectPath,) = msg.body().deserialize()?;
            let (uuid, mut settings) = connection_settings(conn, p.as_str()).await?;
            settings.insert("activation".into(), json!("deactivated"));
            let name = settings.get("connection.id").and_then(Value::as_str).unwrap_or(&uuid).to_owned();
            let kind = settings.get("connection.type").and_then(Value::as_str).unwrap_or("").to_owned();
            sink.emit(event(
                &format!("connection:{uuid}"),
                "connection.added",
                Priority::Medium,
                json!({"after": settings}),
                format!("connection profile {name} ({kind}) added"),
            ));
            world.connections.insert(p.to_string(), (uuid, settings));
        }
        (SETTINGS_IFACE, "ConnectionRemoved") => {
            let (p,): (OwnedObjectPath,) = msg.body().deserialize()?;
            if let Some((uuid, settings)) = world.connections.remove(p.as_str()) {
                let name = settings.get("connection.id").and_then(Value::as_str).unwrap_or(&uuid).to_owned();
                sink.emit(event(
                    &format!("connection:{uuid}"),
                    "connection.removed",
                    Priority::Medium,
                    json!({"before": settings}),
                    format!("connection profile {name} removed"),
                ));
            }
        }
        (CONNECTION_IFACE, "Updated") => {
            let Some((uuid, old)) = world.connections.get(&path).cloned() else { return Ok(()) };
            let (_, mut new) = connection_settings(conn, &path).await?;
            new.insert("activation".into(), old.get("activation").cloned().unwrap_or(json!("deactivated")));
            let d = diff(&old, &new);
            if !d.is_empty() {
                let name = new.get("connection.id").and_then(Value::as_str).unwrap_or(&uuid).to_owned();
                let summary = format!("connection {name}: {}", d.describe(3));
                sink.emit(event(&format!("connection:{uuid}"), "settings.updated", Priority::Medium, d.into_details(), summary));
            }
            world.connections.insert(path, (uuid, new));
        }
        ("org.freedesktop.DBus.Properties", "PropertiesChanged") => {
            let (target, changed, _): (String, HashMap<String, OwnedValue>, Vec<String>) = msg.body().deserialize()?;
            properties_changed(conn, &path, &target, &changed, world, sink).await?;
        }
        _ => {}
    }
    Ok(())
}

/// Manager properties are recorded at once; device properties are merged over the
/// coalescing window into one event per burst.
async fn properties_changed(
    conn: &Connection,
    path: &str,
    target: &str,
    changed: &HashMap<String, OwnedValue>,
    world: &mut World,
    sink: &Sink,
) -> Result<()> {
    if path == NM_PATH && target == NM {
        if let Some(c) = u32_of(changed, "Connectivity") {
            let new = names::connectivity(c);
            let old = world.manager.insert("connectivity".into(), json!(new)).unwrap_or(Value::Null);
            if old != json!(new) {
                let lost = matches!(new.as_str(), "none" | "limited" | "portal") && old == json!("full");
                let priority = if lost { Priority::Critical } else { Priority::Medium };
                sink.emit(event(
                    "nm:manager",
                    "connectivity.changed",
                    priority,
                    changed_details("connectivity", old.clone(), json!(new)),
                    format!("connectivity {} → {new}", value_text(&old)),
                ));
            }
        }
        if let Some(b) = changed.get("NetworkingEnabled").and_then(|v| bool::try_from(v).ok()) {
            let old = world.manager.insert("networking_enabled".into(), json!(b)).unwrap_or(Value::Null);
            if old != json!(b) {
                let (action, priority, words) = if b {
                    ("networking.enabled", Priority::Medium, "enabled")
                } else {
                    ("networking.disabled", Priority::High, "disabled")
                };
                sink.emit(event(
                    "nm:manager",
                    action,
                    priority,
                    changed_details("networking_enabled", old, json!(b)),
                    format!("networking {words}"),
                ));
            }
        }
        if let Some(paths) = changed.get("ActiveConnections").and_then(|v| Vec::<OwnedObjectPath>::try_from(v.clone()).ok()) {
            for p in paths {
                if !world.active.contains_key(p.as_str())
                    && let Ok(uuid) = active_uuid(conn, p.as_str()).await
                {
                    world.active.insert(p.to_string(), uuid);
                }
            }
        }
        return Ok(());
    }
    if !world.devices.contains_key(path) || !(target == DEVICE_IFACE || target.starts_with("org.freedesktop.NetworkManager.Device.")) {
        return Ok(());
    }
    let mut updates = Map::new();
    if let Some(v) = u32_of(changed, "Mtu") {
        updates.insert("mtu".into(), json!(v));
    }
    if let Some(v) = changed.get("Carrier").and_then(|v| bool::try_from(v).ok()) {
        updates.insert("carrier".into(), json!(v));
    }
    if let Some(v) = changed.get("Managed").and_then(|v| bool::try_from(v).ok()) {
        updates.insert("managed".into(), json!(v));
    }
    if let Some(v) = changed.get("HwAddress").and_then(|v| String::try_from(v.clone()).ok()).filter(|s| !s.is_empty()) {
        updates.insert("hw_address".into(), json!(v));
    }
    if let Some(p) = changed.get("Ip4Config").and_then(|v| OwnedObjectPath::try_from(v.clone()).ok()) {
        updates.insert("addresses".into(), json!(ip4_addresses(conn, p.as_str()).await));
    }
    if updates.is_empty() {
        return Ok(());
    }
    let entry = world.pending.entry(path.to_owned()).or_insert_with(|| (Instant::now(), Map::new()));
    entry.1.extend(updates);
    Ok(())
}

/// Emits merged property events whose window has passed, and removals whose grace has.
fn flush_pending(world: &mut World, window: Duration, sink: &Sink) {
    let due: Vec<String> = world.pending.iter().filter(|(_, (t, _))| t.elapsed() >= window).map(|(p, _)| p.clone()).collect();
    for path in due {
        flush_one(world, &path, sink);
    }
    let now = Instant::now();
    let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut world.removals).into_iter().partition(|(at, _, _)| *at <= now);
    world.removals = waiting;
    for (_, id, view) in due {
        let name = id.trim_start_matches("interface:").to_owned();
        sink.emit(event(&id, "device.removed", Priority::High, json!({"before": view}), format!("device {name} removed")));
    }
}

fn flush_one(world: &mut World, path: &str, sink: &Sink) {
    let Some((_, updates)) = world.pending.remove(path) else { return };
    let Some((id, view)) = world.devices.get_mut(path) else { return };
    let old = view.clone();
    view.extend(updates);
    let d = diff(&old, view);
    if d.is_empty() {
        return;
    }
    let name = id.trim_start_matches("interface:").to_owned();
    let carrier = d.after.get("carrier").and_then(Value::as_bool);
    let (action, priority, summary) = match carrier {
        Some(false) => ("link.down", Priority::High, format!("{name}: carrier lost (link down)")),
        Some(true) => ("link.up", Priority::Medium, format!("{name}: carrier detected (link up)")),
        None => {
            let important = d.changed.iter().any(|c| c == "mtu" || c == "addresses");
            ("properties.changed", if important { Priority::Medium } else { Priority::Low }, format!("{name}: {}", d.describe(3)))
        }
    };
    let id = id.clone();
    sink.emit(event(&id, action, priority, d.into_details(), summary));
}

fn event(element_id: &str, action: &str, priority: Priority, details: Value, summary: String) -> NewEvent {
    NewEvent::new(SOURCE, element_id, action, priority, details).with_summary(summary)
}

fn changed_details(field: &str, old: Value, new: Value) -> Value {
    json!({"before": {field: old}, "after": {field: new}, "changed": [field]})
}

fn u32_of(props: &HashMap<String, OwnedValue>, key: &str) -> Option<u32> {
    props.get(key).and_then(|v| u32::try_from(v).ok())
}

async fn get_all(conn: &Connection, path: &str, iface: &str) -> Result<HashMap<String, OwnedValue>> {
    call(conn, path, "org.freedesktop.DBus.Properties", "GetAll", &(iface,)).await
}

async fn call<B, R>(conn: &Connection, path: &str, iface: &str, method: &str, body: &B) -> Result<R>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
    R: for<'d> serde::Deserialize<'d> + zbus::zvariant::Type,
{
    let reply = conn.call_method(Some(NM), path, Some(iface), method, body).await.with_context(|| format!("{iface}.{method} on {path}"))?;
    Ok(reply.body().deserialize()?)
}

/// A D-Bus value as JSON: byte arrays that are text (SSIDs) as strings, other byte arrays as
/// hex, dictionaries as objects.
pub fn to_json(v: &ZValue<'_>) -> Value {
    match v {
        ZValue::U8(x) => json!(x),
        ZValue::Bool(x) => json!(x),
        ZValue::I16(x) => json!(x),
        ZValue::U16(x) => json!(x),
        ZValue::I32(x) => json!(x),
        ZValue::U32(x) => json!(x),
        ZValue::I64(x) => json!(x),
        ZValue::U64(x) => json!(x),
        ZValue::F64(x) => json!(x),
        ZValue::Str(s) => json!(s.as_str()),
        ZValue::Signature(s) => json!(s.to_string()),
        ZValue::ObjectPath(p) => json!(p.as_str()),
        ZValue::Value(inner) => to_json(inner),
        ZValue::Array(a) => {
            if a.element_signature().to_string() == "y" {
                let bytes: Vec<u8> = a.iter().filter_map(|b| if let ZValue::U8(x) = b { Some(*x) } else { None }).collect();
                return match std::str::from_utf8(&bytes) {
                    Ok(s) if s.chars().all(|c| !c.is_control()) => json!(s),
                    _ => json!(hex::encode(bytes)),
                };
            }
            Value::Array(a.iter().map(to_json).collect())
        }
        ZValue::Dict(d) => {
            let mut m = Map::new();
            for (k, v) in d.iter() {
                let key = match to_json(k) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                m.insert(key, to_json(v));
            }
            Value::Object(m)
        }
        ZValue::Structure(s) => Value::Array(s.fields().iter().map(to_json).collect()),
        #[allow(unreachable_patterns)]
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_recognised() {
        for k in ["psk", "password", "wep-key0", "private-key-password", "pin", "secrets", "password-flags"] {
            assert!(is_secret(k), "{k}");
        }
        for k in ["id", "uuid", "mtu", "method", "addresses"] {
            assert!(!is_secret(k), "{k}");
        }
    }

    #[test]
    fn nested_secrets_are_scrubbed() {
        let mut v =
            json!({"data": {"user": "u", "password": "p", "cert-pass": {"psk": "x", "keep": 1}}, "list": [{"secret-key": 1, "ok": 2}]});
        scrub_secrets(&mut v);
        assert_eq!(v, json!({"data": {"user": "u", "cert-pass": {"keep": 1}}, "list": [{"ok": 2}]}));
    }

    #[test]
    fn dbus_values_become_json() {
        let ssid = ZValue::from(vec![b'o', b'f', b'f', b'i', b'c', b'e']);
        assert_eq!(to_json(&ssid), json!("office"));
        let mac = ZValue::from(vec![0x52u8, 0x54, 0x00, 0x12, 0x34, 0x56]);
        assert_eq!(to_json(&mac), json!("525400123456"));
        assert_eq!(to_json(&ZValue::from(9000u32)), json!(9000));
    }
}

#[cfg(test)]
mod hostile_settings {
    use super::*;
    use proptest::prelude::*;

    const KEYS: &[&str] = &[
        "connection",
        "id",
        "uuid",
        "psk",
        "password",
        "vpn",
        "secrets",
        "data",
        "wep-key0",
        "pin",
        "sim-pin",
        "private-key",
        "private-key-password",
        "802-11-wireless-security",
        "ipv4",
        "addresses",
        "dns",
        "method",
        "Secret",
    ];

    fn has_secret_key(v: &Value) -> bool {
        match v {
            Value::Object(map) => map.iter().any(|(k, v)| is_secret(k) || has_secret_key(v)),
            Value::Array(items) => items.iter().any(has_secret_key),
            _ => false,
        }
    }

    proptest! {
        // Bounded: 2048 cases each, well under a second.
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Settings of any shape lose every secret-like key at any depth before anything
        /// is recorded.
        #[test]
        fn no_secret_survives_scrubbing(mut settings in crate::arbitrary_json::json(KEYS)) {
            scrub_secrets(&mut settings);
            prop_assert!(!has_secret_key(&settings), "{settings}");
        }

        /// Any GetSettings reply, as D-Bus values of the kinds NetworkManager sends
        /// (numbers, text, bytes that are or are not text, lists, nested dictionaries), is
        /// decoded without a panic into JSON that survives a round trip, with no secret at
        /// any depth; a uuid is found when there is one, and refused when there is not.
        #[test]
        fn any_settings_reply_decodes_without_secrets(
            sections in proptest::collection::hash_map(key(), proptest::collection::hash_map(key(), setting(), 0..5), 0..5),
            uuid in proptest::option::of(".{0,40}"),
        ) {
            let mut settings: HashMap<String, HashMap<String, OwnedValue>> = sections
                .iter()
                .map(|(section, values)| (section.clone(), values.iter().map(|(k, v)| (k.clone(), owned(v))).collect()))
                .collect();
            // The uuid is the one chosen here, or none.
            if let Some(connection) = settings.get_mut("connection") {
                connection.remove("uuid");
            }
            if let Some(uuid) = &uuid {
                settings.entry("connection".into()).or_default().insert("uuid".into(), owned(&Setting::Str(uuid.clone())));
            }
            match flatten_settings(&settings) {
                Ok((found, flat)) => {
                    prop_assert_eq!(Some(&found), uuid.as_ref());
                    let flat = Value::Object(flat);
                    prop_assert!(!has_secret_key(&flat), "{flat}");
                    let again: Value = serde_json::from_str(&flat.to_string()).unwrap();
                    prop_assert_eq!(again, flat);
                }
                Err(_) => prop_assert!(uuid.is_none()),
            }
        }
    }

    /// A settings value as NetworkManager might send it (plain data, so proptest can shrink it).
    #[derive(Debug, Clone)]
    enum Setting {
        U32(u32),
        I64(i64),
        Bool(bool),
        Str(String),
        Bytes(Vec<u8>),
        Strs(Vec<String>),
        U32s(Vec<u32>),
        Dict(Vec<(String, Setting)>),
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![proptest::sample::select(KEYS).prop_map(str::to_owned), ".{0,12}"]
    }

    fn plain() -> impl Strategy<Value = Setting> {
        prop_oneof![
            any::<u32>().prop_map(Setting::U32),
            any::<i64>().prop_map(Setting::I64),
            any::<bool>().prop_map(Setting::Bool),
            ".{0,40}".prop_map(Setting::Str),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Setting::Bytes),
            proptest::collection::vec(".{0,12}", 0..4).prop_map(Setting::Strs),
            proptest::collection::vec(any::<u32>(), 0..4).prop_map(Setting::U32s),
        ]
    }

    fn setting() -> impl Strategy<Value = Setting> {
        prop_oneof![3 => plain(), 1 => proptest::collection::vec((key(), plain()), 0..4).prop_map(Setting::Dict)]
    }

    fn value(s: &Setting) -> ZValue<'static> {
        match s {
            Setting::U32(x) => ZValue::from(*x),
            Setting::I64(x) => ZValue::from(*x),
            Setting::Bool(x) => ZValue::from(*x),
            Setting::Str(x) => ZValue::from(x.clone()),
            Setting::Bytes(x) => ZValue::from(x.clone()),
            Setting::Strs(x) => ZValue::from(x.clone()),
            Setting::U32s(x) => ZValue::from(x.clone()),
            Setting::Dict(entries) => {
                let map: HashMap<String, ZValue<'static>> = entries.iter().map(|(k, v)| (k.clone(), value(v))).collect();
                ZValue::from(map)
            }
        }
    }

    fn owned(s: &Setting) -> OwnedValue {
        value(s).try_to_owned().expect("no file descriptors in settings")
    }
}
