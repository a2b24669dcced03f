//! What the client shows: `show xds` (a table or JSON), the configuration dump served on
//! the admin listener (Envoy's `/config_dump` layout), and metrics.

use std::fmt::Write;
use std::time::SystemTime;

use serde_json::{Value, json};

use crate::client::{Xds, lock};
use crate::store::{Kind, Store};

/// Counters of one resource type.
#[derive(Debug, Clone)]
pub struct TypeMetrics {
    /// `listeners`, `routes`, `clusters`, `endpoints`.
    pub kind: &'static str,
    pub resources: usize,
    pub warming: usize,
    pub accepted: u64,
    pub rejected: u64,
    pub last_update: Option<SystemTime>,
}

/// The client's state for metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub connected: bool,
    pub connects: u64,
    pub disconnects: u64,
    pub types: Vec<TypeMetrics>,
}

/// The columns of `show xds`'s second table.
pub const TYPE_FIELDS: [&str; 11] = [
    "type",
    "version",
    "nonce",
    "resources",
    "warming",
    "responses",
    "accepted",
    "rejected",
    "last_update",
    "last_nack",
    "nack_message",
];

fn counts(store: &Store, k: Kind) -> (usize, usize) {
    match k {
        Kind::Listener => (
            store
                .listeners
                .values()
                .filter(|s| s.active.is_some())
                .count(),
            store
                .listeners
                .values()
                .filter(|s| s.warming.is_some())
                .count(),
        ),
        Kind::Cluster => (
            store
                .clusters
                .values()
                .filter(|s| s.active.is_some())
                .count(),
            store
                .clusters
                .values()
                .filter(|s| s.warming.is_some())
                .count(),
        ),
        Kind::Route => (store.routes.len(), 0),
        Kind::Endpoint => (store.endpoints.len(), 0),
    }
}

fn ago(t: Option<SystemTime>) -> String {
    t.and_then(|t| SystemTime::now().duration_since(t).ok())
        .map_or_else(|| "-".to_owned(), |d| d.as_secs().to_string())
}

fn word(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.split_whitespace().collect::<Vec<_>>().join("_")
    }
}

fn time_text(t: SystemTime) -> String {
    let mut s = String::new();
    rampart_config::time::rfc3339(t, &mut s);
    s
}

impl Xds {
    /// `show xds`: the connection, then a line per resource type (ages in seconds), or
    /// the same as JSON.
    pub fn show(&self, json: bool) -> String {
        let s = &self.inner.settings;
        let conn = lock(&self.inner.conn).clone();
        let e = lock(&self.inner.engine);
        if json {
            let types: Vec<Value> = Kind::ALL
                .iter()
                .map(|k| {
                    let t = e.types.get(k).cloned().unwrap_or_default();
                    let (n, w) = counts(&e.store, *k);
                    json!({
                        "type": k.plural(),
                        "type_url": k.type_url(),
                        "version": t.version,
                        "nonce": t.nonce,
                        "resources": n,
                        "warming": w,
                        "responses": t.responses,
                        "accepted": t.accepted,
                        "rejected": t.rejected,
                        "last_update": t.last_update.map(time_text),
                        "last_nack": t.last_nack.as_ref().map(|(w, m)| json!({"time": time_text(*w), "message": m})),
                    })
                })
                .collect();
            let v = json!({
                "server": s.display,
                "mode": s.mode.as_str(),
                "node": {"id": s.node.id, "cluster": s.node.cluster},
                "connected": conn.connected,
                "since": time_text(conn.since),
                "connects": conn.connects,
                "disconnects": conn.disconnects,
                "last_error": conn.last_error,
                "types": types,
            });
            return format!("{v:#}\n");
        }
        let mut out = String::from(
            "# server mode node cluster state state_age connects disconnects last_error\n",
        );
        let _ = writeln!(
            out,
            "{} {} {} {} {} {} {} {} {}",
            word(&s.display),
            s.mode.as_str(),
            word(&s.node.id),
            word(&s.node.cluster),
            if conn.connected {
                "connected"
            } else {
                "disconnected"
            },
            ago(Some(conn.since)),
            conn.connects,
            conn.disconnects,
            conn.last_error.as_deref().unwrap_or("-")
        );
        let _ = writeln!(out, "# {}", TYPE_FIELDS.join(" "));
        for k in Kind::ALL {
            let t = e.types.get(&k).cloned().unwrap_or_default();
            let (n, w) = counts(&e.store, k);
            let _ = writeln!(
                out,
                "{} {} {} {n} {w} {} {} {} {} {} {}",
                k.plural(),
                word(&t.version),
                word(&t.nonce),
                t.responses,
                t.accepted,
                t.rejected,
                ago(t.last_update),
                ago(t.last_nack.as_ref().map(|(w, _)| *w)),
                t.last_nack.as_ref().map_or("-", |(_, m)| m.as_str()),
            );
        }
        out
    }

    /// Counters for `/metrics`.
    pub fn metrics(&self) -> Metrics {
        let conn = lock(&self.inner.conn).clone();
        let e = lock(&self.inner.engine);
        Metrics {
            connected: conn.connected,
            connects: conn.connects,
            disconnects: conn.disconnects,
            types: Kind::ALL
                .iter()
                .map(|k| {
                    let t = e.types.get(k).cloned().unwrap_or_default();
                    let (n, w) = counts(&e.store, *k);
                    TypeMetrics {
                        kind: k.plural(),
                        resources: n,
                        warming: w,
                        accepted: t.accepted,
                        rejected: t.rejected,
                        last_update: t.last_update,
                    }
                })
                .collect(),
        }
    }

    /// The dynamic configuration in Envoy's `/config_dump` layout: listeners, clusters,
    /// route configurations and endpoints with their versions, warming ones, and the last
    /// rejection of each (`error_state`).
    pub fn config_dump(&self) -> String {
        let e = lock(&self.inner.engine);
        let st = &e.store;
        let res = |kind: Kind, bytes: &[u8]| -> Value {
            let full = kind
                .type_url()
                .trim_start_matches(crate::proto::TYPE_PREFIX);
            resource_json(full, bytes)
        };
        let err = |kind: Kind, name: &str| -> Option<Value> {
            st.rejected.get(&(kind, name.to_owned())).map(|r| {
                json!({
                    "version_info": r.version,
                    "last_update_attempt": time_text(r.when),
                    "details": r.message,
                })
            })
        };
        let ver = |k: Kind| {
            e.types
                .get(&k)
                .map(|t| t.version.clone())
                .unwrap_or_default()
        };
        let mut names: Vec<&String> = st.listeners.keys().collect();
        for (k, n) in st.rejected.keys() {
            if *k == Kind::Listener && !st.listeners.contains_key(n) {
                names.push(n);
            }
        }
        let listeners: Vec<Value> = names
            .into_iter()
            .map(|name| {
                let slot = st.listeners.get(name);
                let mut v = json!({"name": name});
                if let Some(a) = slot.and_then(|s| s.active.as_ref()) {
                    v["active_state"] = json!({
                        "version_info": a.held.version,
                        "listener": res(Kind::Listener, &a.held.bytes),
                        "last_updated": time_text(a.held.updated),
                    });
                }
                if let Some((w, _)) = slot.and_then(|s| s.warming.as_ref()) {
                    v["warming_state"] = json!({
                        "version_info": w.held.version,
                        "listener": res(Kind::Listener, &w.held.bytes),
                        "last_updated": time_text(w.held.updated),
                    });
                }
                if let Some(x) = err(Kind::Listener, name) {
                    v["error_state"] = x;
                }
                v
            })
            .collect();
        let clusters = |warming: bool| -> Vec<Value> {
            st.clusters
                .iter()
                .filter_map(|(name, s)| {
                    let c = if warming {
                        s.warming.as_ref().map(|(c, _)| c)
                    } else {
                        s.active.as_ref()
                    }?;
                    let mut v = json!({
                        "version_info": c.held.version,
                        "cluster": res(Kind::Cluster, &c.held.bytes),
                        "last_updated": time_text(c.held.updated),
                    });
                    if let Some(x) = err(Kind::Cluster, name) {
                        v["error_state"] = x;
                    }
                    Some(v)
                })
                .collect()
        };
        let routes: Vec<Value> = st
            .routes
            .values()
            .map(|h| {
                json!({
                    "version_info": h.version,
                    "route_config": res(Kind::Route, &h.bytes),
                    "last_updated": time_text(h.updated),
                })
            })
            .collect();
        let endpoints: Vec<Value> = st
            .endpoints
            .values()
            .map(|h| {
                json!({
                    "version_info": h.version,
                    "endpoint_config": res(Kind::Endpoint, &h.bytes),
                    "last_updated": time_text(h.updated),
                })
            })
            .collect();
        let dump = json!({
            "configs": [
                {
                    "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
                    "version_info": ver(Kind::Cluster),
                    "dynamic_active_clusters": clusters(false),
                    "dynamic_warming_clusters": clusters(true),
                },
                {
                    "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
                    "version_info": ver(Kind::Listener),
                    "dynamic_listeners": listeners,
                },
                {
                    "@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
                    "dynamic_route_configs": routes,
                },
                {
                    "@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
                    "dynamic_endpoint_configs": endpoints,
                },
            ]
        });
        format!("{dump:#}\n")
    }
}

/// A resource as Envoy's JSON (with its `@type`).
fn resource_json(full_name: &str, bytes: &[u8]) -> Value {
    let msg = match crate::proto::dynamic(full_name, bytes) {
        Ok(m) => m,
        Err(e) => return json!({"error": e}),
    };
    let opts = prost_reflect::SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(true);
    let mut out = match msg.serialize_with_options(serde_json::value::Serializer, &opts) {
        Ok(v) => v,
        Err(e) => json!({"error": e.to_string()}),
    };
    if let Value::Object(m) = &mut out {
        m.insert(
            "@type".to_owned(),
            Value::String(format!("{}{full_name}", crate::proto::TYPE_PREFIX)),
        );
    }
    out
}
