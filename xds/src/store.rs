//! The resources received from the control plane, their warming, and the configuration
//! they add up to.
//!
//! A listener or cluster that arrives (new, or a new version) is *warming* until what it
//! needs has arrived too: a listener its RouteConfiguration, a cluster its endpoints (or
//! the initial fetch timeout passed). Until then the previous version, if any, keeps
//! serving. RouteConfigurations and endpoints apply as they arrive.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use rampart_config::Config;
use rampart_config::model::Bind;

use crate::proto::{ClusterLoadAssignment, RouteConfiguration};
use crate::translate::{self, ClusterShape, ListenerShape, RouteSource};

/// The four resource types, in the order a control plane sends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Cluster,
    Endpoint,
    Listener,
    Route,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Cluster, Kind::Endpoint, Kind::Listener, Kind::Route];

    pub fn type_url(self) -> &'static str {
        match self {
            Kind::Listener => crate::proto::LISTENER,
            Kind::Route => crate::proto::ROUTE,
            Kind::Cluster => crate::proto::CLUSTER,
            Kind::Endpoint => crate::proto::ENDPOINT,
        }
    }

    pub fn of_url(url: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.type_url() == url)
    }

    /// `listeners`, `routes`, `clusters`, `endpoints`.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Listener => "listeners",
            Kind::Route => "routes",
            Kind::Cluster => "clusters",
            Kind::Endpoint => "endpoints",
        }
    }

    /// `listener`, `route configuration`, `cluster`, `endpoints` (for messages).
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Listener => "listener",
            Kind::Route => "route configuration",
            Kind::Cluster => "cluster",
            Kind::Endpoint => "cluster load assignment",
        }
    }

    /// How many resources of the type one response may carry, and the store may hold:
    /// the configuration's own bounds (a listener is a frontend, a cluster a backend).
    pub fn max(self) -> usize {
        use rampart_config::limits::{MAX_BACKENDS, MAX_FRONTENDS};
        match self {
            Kind::Listener | Kind::Route => MAX_FRONTENDS,
            Kind::Cluster | Kind::Endpoint => MAX_BACKENDS,
        }
    }

    /// Whether a state-of-the-world response carries every resource of the type, so
    /// that absence means removal (LDS, CDS).
    pub fn full_state(self) -> bool {
        matches!(self, Kind::Listener | Kind::Cluster)
    }
}

/// A resource as accepted: its version, bytes and when it changed.
#[derive(Debug, Clone)]
pub struct Held<T> {
    pub version: String,
    pub bytes: Vec<u8>,
    pub resource: T,
    pub updated: SystemTime,
}

/// A listener or cluster: the version serving, and a newer one waiting for what it needs.
#[derive(Debug, Clone)]
pub struct Slot<T> {
    pub active: Option<T>,
    pub warming: Option<(T, Instant)>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self {
            active: None,
            warming: None,
        }
    }
}

impl<T> Slot<T> {
    /// The newest version: warming, else active.
    pub fn newest(&self) -> Option<&T> {
        self.warming
            .as_ref()
            .map(|(t, _)| t)
            .or(self.active.as_ref())
    }
}

/// A listener: its bytes (the resource itself is not kept: its shape says all) and what
/// it translates to.
#[derive(Debug, Clone)]
pub struct ListenerEntry {
    pub held: Held<()>,
    pub shape: ListenerShape,
}

/// A cluster, kept the same way.
#[derive(Debug, Clone)]
pub struct ClusterEntry {
    pub held: Held<()>,
    pub shape: ClusterShape,
}

/// The last rejection of a resource, for the config dump and `show xds`.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub version: String,
    pub message: String,
    pub when: SystemTime,
}

/// Everything received, by type and name.
#[derive(Debug, Clone, Default)]
pub struct Store {
    pub listeners: BTreeMap<String, Slot<ListenerEntry>>,
    pub routes: BTreeMap<String, Held<RouteConfiguration>>,
    pub clusters: BTreeMap<String, Slot<ClusterEntry>>,
    pub endpoints: BTreeMap<String, Held<ClusterLoadAssignment>>,
    pub rejected: BTreeMap<(Kind, String), Rejected>,
}

/// A resource that does not fit with the rest (a name or address taken).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub kind: Kind,
    pub name: String,
    pub message: String,
}

impl Store {
    /// The bytes of the newest version of a resource, to tell an unchanged one.
    pub fn bytes_of(&self, kind: Kind, name: &str) -> Option<&[u8]> {
        match kind {
            Kind::Listener => self
                .listeners
                .get(name)?
                .newest()
                .map(|e| &e.held.bytes[..]),
            Kind::Cluster => self.clusters.get(name)?.newest().map(|e| &e.held.bytes[..]),
            Kind::Route => self.routes.get(name).map(|h| &h.bytes[..]),
            Kind::Endpoint => self.endpoints.get(name).map(|h| &h.bytes[..]),
        }
    }

    /// The version of every resource of a type held now (delta's
    /// `initial_resource_versions`).
    pub fn versions(&self, kind: Kind) -> BTreeMap<String, String> {
        match kind {
            Kind::Listener => self
                .listeners
                .iter()
                .filter_map(|(n, s)| Some((n.clone(), s.newest()?.held.version.clone())))
                .collect(),
            Kind::Cluster => self
                .clusters
                .iter()
                .filter_map(|(n, s)| Some((n.clone(), s.newest()?.held.version.clone())))
                .collect(),
            Kind::Route => self
                .routes
                .iter()
                .map(|(n, h)| (n.clone(), h.version.clone()))
                .collect(),
            Kind::Endpoint => self
                .endpoints
                .iter()
                .map(|(n, h)| (n.clone(), h.version.clone()))
                .collect(),
        }
    }

    /// Names held of a type.
    pub fn names(&self, kind: Kind) -> BTreeSet<String> {
        self.versions(kind).into_keys().collect()
    }

    /// Puts a checked listener in: it serves at once when its routes are here (or
    /// inline), else it warms.
    pub fn put_listener(&mut self, held: Held<()>, shape: ListenerShape, now: Instant) {
        let ready = match &shape.routes {
            RouteSource::Inline(_) | RouteSource::Tcp(_) => true,
            RouteSource::Rds { name, .. } => self.routes.contains_key(name),
        };
        let slot = self.listeners.entry(shape.name.clone()).or_default();
        let e = ListenerEntry { held, shape };
        if ready {
            slot.active = Some(e);
            slot.warming = None;
        } else {
            slot.warming = Some((e, now));
        }
    }

    /// Puts a checked cluster in: it serves at once when its endpoints are here (or
    /// inline), else it warms.
    pub fn put_cluster(&mut self, held: Held<()>, shape: ClusterShape, now: Instant) {
        let ready = shape
            .eds_name()
            .is_none_or(|n| self.endpoints.contains_key(n));
        let slot = self.clusters.entry(shape.name.clone()).or_default();
        let e = ClusterEntry { held, shape };
        if ready {
            slot.active = Some(e);
            slot.warming = None;
        } else {
            slot.warming = Some((e, now));
        }
    }

    /// RDS names the listeners need.
    pub fn wanted_routes(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for s in self.listeners.values() {
            for e in s.active.iter().chain(s.warming.as_ref().map(|(e, _)| e)) {
                if let RouteSource::Rds { name, .. } = &e.shape.routes {
                    out.insert(name.clone());
                }
            }
        }
        out
    }

    /// EDS names the clusters need.
    pub fn wanted_endpoints(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for s in self.clusters.values() {
            for e in s.active.iter().chain(s.warming.as_ref().map(|(e, _)| e)) {
                if let Some(n) = e.shape.eds_name() {
                    out.insert(n.to_owned());
                }
            }
        }
        out
    }

    /// Forgets route configurations and endpoints no listener or cluster needs.
    pub fn drop_unwanted(&mut self) {
        let r = self.wanted_routes();
        self.routes.retain(|n, _| r.contains(n));
        let e = self.wanted_endpoints();
        self.endpoints.retain(|n, _| e.contains(n));
    }

    /// Moves warming resources whose needs arrived, or whose wait is over, into
    /// service. Returns whether anything moved.
    pub fn settle(&mut self, now: Instant, default_wait: Duration) -> bool {
        let mut moved = false;
        for slot in self.listeners.values_mut() {
            let Some((e, since)) = &slot.warming else {
                continue;
            };
            let (ready, wait) = match &e.shape.routes {
                RouteSource::Inline(_) | RouteSource::Tcp(_) => (true, default_wait),
                RouteSource::Rds {
                    name,
                    initial_fetch_timeout,
                } => (
                    self.routes.contains_key(name),
                    initial_fetch_timeout.unwrap_or(default_wait),
                ),
            };
            if ready || expired(*since, wait, now) {
                if !ready {
                    tracing::warn!(listener = %e.shape.name, "routes did not arrive within {wait:?}: serving without them (404)");
                }
                slot.active = slot.warming.take().map(|(e, _)| e);
                moved = true;
            }
        }
        for slot in self.clusters.values_mut() {
            let Some((e, since)) = &slot.warming else {
                continue;
            };
            let (ready, wait) = match &e.shape.endpoints {
                translate::Endpoints::Inline(_) => (true, default_wait),
                translate::Endpoints::Eds {
                    service,
                    initial_fetch_timeout,
                } => (
                    self.endpoints.contains_key(service),
                    initial_fetch_timeout.unwrap_or(default_wait),
                ),
            };
            if ready || expired(*since, wait, now) {
                if !ready {
                    tracing::warn!(cluster = %e.shape.name, "endpoints did not arrive within {wait:?}: serving without them");
                }
                slot.active = slot.warming.take().map(|(e, _)| e);
                moved = true;
            }
        }
        moved
    }

    /// When the next warming resource stops waiting.
    pub fn next_deadline(&self, default_wait: Duration) -> Option<Instant> {
        let l = self.listeners.values().filter_map(|s| {
            let (e, since) = s.warming.as_ref()?;
            let wait = match &e.shape.routes {
                RouteSource::Rds {
                    initial_fetch_timeout,
                    ..
                } => initial_fetch_timeout.unwrap_or(default_wait),
                RouteSource::Inline(_) | RouteSource::Tcp(_) => Duration::ZERO,
            };
            deadline(*since, wait)
        });
        let c = self.clusters.values().filter_map(|s| {
            let (e, since) = s.warming.as_ref()?;
            let wait = match &e.shape.endpoints {
                translate::Endpoints::Eds {
                    initial_fetch_timeout,
                    ..
                } => initial_fetch_timeout.unwrap_or(default_wait),
                translate::Endpoints::Inline(_) => Duration::ZERO,
            };
            deadline(*since, wait)
        });
        l.chain(c).min()
    }

    /// Whether any cluster is warming.
    pub fn clusters_warming(&self) -> bool {
        self.clusters.values().any(|s| s.warming.is_some())
    }

    /// Removes a resource (SotW absence or a delta removal).
    pub fn remove(&mut self, kind: Kind, name: &str) -> bool {
        self.rejected.remove(&(kind, name.to_owned()));
        match kind {
            Kind::Listener => self.listeners.remove(name).is_some(),
            Kind::Cluster => self.clusters.remove(name).is_some(),
            Kind::Route => self.routes.remove(name).is_some(),
            Kind::Endpoint => self.endpoints.remove(name).is_some(),
        }
    }

    /// Why a listener cannot join the others and the static frontends: its name or its
    /// address is taken.
    pub fn listener_conflict(&self, base: &Config, shape: &ListenerShape) -> Option<String> {
        if base.frontends.contains(&shape.name) {
            return Some("a frontend of that name is in the static configuration".to_owned());
        }
        let mut bound: Vec<(std::net::SocketAddr, String)> = base
            .frontends
            .iter()
            .flat_map(|(n, f)| f.bind.iter().map(move |b| (b.address.value, n.to_owned())))
            .collect();
        for (n, s) in &self.listeners {
            if *n == shape.name {
                continue;
            }
            for e in s.active.iter().chain(s.warming.as_ref().map(|(e, _)| e)) {
                bound.extend(
                    e.shape
                        .frontend
                        .bind
                        .iter()
                        .map(|b| (b.address.value, n.clone())),
                );
            }
        }
        shape
            .frontend
            .bind
            .iter()
            .find_map(|b| taken(&bound, b.address.value))
            .map(|(addr, other)| format!("{addr} is already bound by {other:?}"))
    }

    /// The configuration: `base` plus every serving cluster (as a backend) and listener
    /// (as a frontend). Resources whose names or addresses are taken are left out and
    /// returned as conflicts.
    pub fn assemble(&self, base: &Config) -> (Config, Vec<Conflict>) {
        let mut cfg = base.clone();
        let mut conflicts = Vec::new();
        for (name, slot) in &self.clusters {
            let Some(e) = &slot.active else { continue };
            if base.backends.contains(name) {
                conflicts.push(Conflict {
                    kind: Kind::Cluster,
                    name: name.clone(),
                    message: format!(
                        "cluster {name:?}: a backend of that name is in the static configuration"
                    ),
                });
                continue;
            }
            let cla = e
                .shape
                .eds_name()
                .and_then(|n| self.endpoints.get(n))
                .map(|h| &h.resource);
            cfg.backends.push(
                translate::spanned(name.clone()),
                translate::backend(&e.shape, cla),
            );
        }
        let known = |c: &str| cfg.backends.contains(c);
        let known = translate::Known { cluster: &known };
        let mut frontends = Vec::new();
        let mut tcp = Vec::new();
        let mut bound: Vec<(std::net::SocketAddr, String)> = base
            .frontends
            .iter()
            .flat_map(|(n, f)| f.bind.iter().map(move |b| (b.address.value, n.to_owned())))
            .collect();
        for (name, slot) in &self.listeners {
            let Some(e) = &slot.active else { continue };
            if base.frontends.contains(name) {
                conflicts.push(Conflict {
                    kind: Kind::Listener,
                    name: name.clone(),
                    message: format!(
                        "listener {name:?}: a frontend of that name is in the static configuration"
                    ),
                });
                continue;
            }
            let routes = match &e.shape.routes {
                RouteSource::Rds { name, .. } => self.routes.get(name).map(|h| &h.resource),
                RouteSource::Inline(_) | RouteSource::Tcp(_) => None,
            };
            let fe = translate::frontend(&e.shape, routes, &known);
            if let Some((addr, other)) = fe
                .bind
                .iter()
                .find_map(|b: &Bind| taken(&bound, b.address.value))
            {
                conflicts.push(Conflict {
                    kind: Kind::Listener,
                    name: name.clone(),
                    message: format!("listener {name:?}: {addr} is already bound by {other:?}"),
                });
                continue;
            }
            bound.extend(fe.bind.iter().map(|b| (b.address.value, name.clone())));
            if let RouteSource::Tcp(r) = &e.shape.routes {
                tcp.push((name.clone(), r.clone()));
            }
            frontends.push((translate::spanned(name.clone()), fe));
        }
        cfg.frontends.extend(frontends);
        translate::tcp_backends(&mut cfg, &tcp);
        (cfg, conflicts)
    }
}

/// Whether `addr` is taken by one of `bound` (port 0 never conflicts).
fn taken(
    bound: &[(std::net::SocketAddr, String)],
    addr: std::net::SocketAddr,
) -> Option<(std::net::SocketAddr, String)> {
    if addr.port() == 0 {
        return None;
    }
    bound
        .iter()
        .find(|(a, _)| {
            a.port() == addr.port()
                && (a.ip() == addr.ip() || a.ip().is_unspecified() || addr.ip().is_unspecified())
                && a.is_ipv4() == addr.is_ipv4()
        })
        .map(|(a, n)| (*a, n.clone()))
}

fn deadline(since: Instant, wait: Duration) -> Option<Instant> {
    (!wait.is_zero()).then(|| since.checked_add(wait)).flatten()
}

fn expired(since: Instant, wait: Duration, now: Instant) -> bool {
    deadline(since, wait).is_some_and(|d| now >= d)
}
