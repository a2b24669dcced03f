//! The aggregated discovery protocol, without I/O: responses in, requests out.
//!
//! One [`Engine`] lives as long as the client; a stream's state (nonces, what was sent)
//! is reset on every connection. Each response is checked resource by resource: valid
//! resources are applied and invalid ones keep their last accepted version (or stay
//! absent); the response is ACKed when all were valid and NACKed otherwise, with
//! `error_detail` naming each rejected resource and field, and (state of the world) with
//! `version_info` kept at the last version accepted whole. This is gRPC's A46 behaviour
//! and Envoy's for listeners; Envoy rejects a whole CDS response, rampart does not.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;
use rampart_config::xds::XdsMode;
use rampart_config::{Config, ConfigErrors};

use crate::proto::{Any, Cluster, ClusterLoadAssignment, Listener, RouteConfiguration};
use crate::store::{Held, Kind, Rejected, Slot, Store};
use crate::translate;

/// Applies a whole configuration (the static one plus the control plane's); on an error
/// nothing changed.
pub trait Applier: Send + Sync {
    fn apply(&self, cfg: Config) -> Result<(), ConfigErrors>;

    /// The configuration serving now, to skip applying one that changes nothing; `None`
    /// when the applier cannot tell (the engine then keeps a copy of the last it applied).
    fn current(&self) -> Option<std::sync::Arc<Config>> {
        None
    }
}

/// Why a new static configuration was not applied; the running one is unchanged.
#[derive(Debug)]
pub enum BaseRefused {
    /// It takes a name or address a control plane's resource has.
    Conflict(ConfigErrors),
    /// The applier refused it (and reported it).
    Applier(ConfigErrors),
}

/// A request to send.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    Sotw(DiscoveryRequest),
    Delta(DeltaDiscoveryRequest),
}

/// Per-type protocol state and counters.
#[derive(Debug, Clone, Default)]
pub struct TypeState {
    /// State of the world: the last version accepted whole (ACKed).
    pub version: String,
    /// The last nonce received on this stream.
    pub nonce: String,
    /// The names last sent (RDS, EDS); LDS and CDS are wildcards.
    pub names: BTreeSet<String>,
    /// Whether this stream has sent a request of this type.
    pub requested: bool,
    pub responses: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub last_update: Option<SystemTime>,
    pub last_nack: Option<(SystemTime, String)>,
}

/// The protocol engine.
pub struct Engine {
    pub mode: XdsMode,
    node: Node,
    node_first_only: bool,
    /// Whether the next request is the stream's first.
    first: bool,
    /// How long warming resources wait when their config source does not say.
    pub default_wait: Duration,
    pub store: Store,
    pub base: Config,
    pub types: BTreeMap<Kind, TypeState>,
    /// Whether listeners were asked for on this stream (after the clusters).
    lds_asked: bool,
    /// The configuration last applied, when the applier cannot tell what serves, so that
    /// one that would change nothing is not applied.
    last_applied: Option<Config>,
}

/// An undo record: a resource as it was before a response changed it.
enum Undo {
    Listener(String, Option<Box<Slot<crate::store::ListenerEntry>>>),
    Cluster(String, Option<Box<Slot<crate::store::ClusterEntry>>>),
    Route(String, Option<Box<Held<RouteConfiguration>>>),
    Endpoint(String, Option<Box<Held<ClusterLoadAssignment>>>),
}

impl Undo {
    fn of(store: &Store, kind: Kind, name: &str) -> Self {
        let n = name.to_owned();
        match kind {
            Kind::Listener => Undo::Listener(n, store.listeners.get(name).cloned().map(Box::new)),
            Kind::Cluster => Undo::Cluster(n, store.clusters.get(name).cloned().map(Box::new)),
            Kind::Route => Undo::Route(n, store.routes.get(name).cloned().map(Box::new)),
            Kind::Endpoint => Undo::Endpoint(n, store.endpoints.get(name).cloned().map(Box::new)),
        }
    }

    fn key(&self) -> (Kind, &str) {
        match self {
            Undo::Listener(n, _) => (Kind::Listener, n),
            Undo::Cluster(n, _) => (Kind::Cluster, n),
            Undo::Route(n, _) => (Kind::Route, n),
            Undo::Endpoint(n, _) => (Kind::Endpoint, n),
        }
    }

    fn restore(self, store: &mut Store) {
        fn put<T>(m: &mut BTreeMap<String, T>, n: String, v: Option<Box<T>>) {
            match v {
                Some(v) => {
                    m.insert(n, *v);
                }
                None => {
                    m.remove(&n);
                }
            }
        }
        match self {
            Undo::Listener(n, v) => put(&mut store.listeners, n, v),
            Undo::Cluster(n, v) => put(&mut store.clusters, n, v),
            Undo::Route(n, v) => put(&mut store.routes, n, v),
            Undo::Endpoint(n, v) => put(&mut store.endpoints, n, v),
        }
    }
}

/// One resource of a response, decoded.
enum Decoded {
    Listener(Box<Listener>),
    Route(Box<RouteConfiguration>),
    Cluster(Box<Cluster>),
    Endpoint(Box<ClusterLoadAssignment>),
}

impl Decoded {
    fn name(&self) -> &str {
        match self {
            Decoded::Listener(x) => &x.name,
            Decoded::Route(x) => &x.name,
            Decoded::Cluster(x) => &x.name,
            Decoded::Endpoint(x) => &x.cluster_name,
        }
    }
}

fn decode(kind: Kind, any: &Any) -> Result<Decoded, String> {
    if any.type_url != kind.type_url() {
        return Err(format!(
            "a resource of type {} in a {} response",
            any.type_url,
            kind.type_url()
        ));
    }
    let b = any.value.as_slice();
    let bad = |e: prost::DecodeError| format!("cannot decode: {e}");
    Ok(match kind {
        Kind::Listener => Decoded::Listener(Box::new(Listener::decode(b).map_err(bad)?)),
        Kind::Route => Decoded::Route(Box::new(RouteConfiguration::decode(b).map_err(bad)?)),
        Kind::Cluster => Decoded::Cluster(Box::new(Cluster::decode(b).map_err(bad)?)),
        Kind::Endpoint => {
            Decoded::Endpoint(Box::new(ClusterLoadAssignment::decode(b).map_err(bad)?))
        }
    })
}

/// What processing a response decided.
struct Outcome {
    errors: Vec<String>,
    /// Resources whose stored state changed.
    changed: Vec<Undo>,
}

impl Engine {
    pub fn new(
        mode: XdsMode,
        node: Node,
        node_first_only: bool,
        default_wait: Duration,
        base: Config,
    ) -> Self {
        Self {
            mode,
            node,
            node_first_only,
            first: true,
            default_wait,
            store: Store::default(),
            base: base.clone(),
            types: Kind::ALL
                .iter()
                .map(|k| (*k, TypeState::default()))
                .collect(),
            lds_asked: false,
            // The proxy starts with the static configuration.
            last_applied: Some(base.clone()),
        }
    }

    fn ty(&mut self, k: Kind) -> &mut TypeState {
        self.types.entry(k).or_default()
    }

    fn node_once(&mut self) -> Option<Node> {
        let first = std::mem::replace(&mut self.first, false);
        (first || !self.node_first_only).then(|| self.node.clone())
    }

    /// A new stream: the first requests. On the first connection only clusters are asked
    /// for (listeners follow once they are in, as Envoy does); on a reconnection every
    /// type at once, with what is held.
    pub fn on_connect(&mut self) -> Vec<Out> {
        self.first = true;
        for t in self.types.values_mut() {
            t.nonce.clear();
            t.requested = false;
        }
        self.lds_asked = false;
        let held_before = !self.store.listeners.is_empty() || !self.store.clusters.is_empty();
        let mut out = vec![self.request(Kind::Cluster, None, true)];
        let eds = self.store.wanted_endpoints();
        if !eds.is_empty() {
            out.push(self.subscribe(Kind::Endpoint, eds));
        }
        if held_before {
            out.extend(self.ask_listeners());
        }
        out
    }

    fn ask_listeners(&mut self) -> Vec<Out> {
        if self.lds_asked {
            return Vec::new();
        }
        self.lds_asked = true;
        let mut out = vec![self.request(Kind::Listener, None, true)];
        let rds = self.store.wanted_routes();
        if !rds.is_empty() {
            out.push(self.subscribe(Kind::Route, rds));
        }
        out
    }

    /// A request for `kind` with the current subscription (SotW) or the stream's first
    /// request (delta, `initial`): an ACK or NACK when `nack` is given with the nonce.
    fn request(&mut self, kind: Kind, ack: Option<(&str, Option<String>)>, initial: bool) -> Out {
        let node = self.node_once();
        let st = self.ty(kind).clone();
        let names: Vec<String> = if kind.full_state() {
            Vec::new()
        } else {
            st.names.iter().cloned().collect()
        };
        self.ty(kind).requested = true;
        let (nonce, error) = match ack {
            Some((n, e)) => (n.to_owned(), e),
            None => (st.nonce.clone(), None),
        };
        let error_detail = error.map(|m| RpcStatus {
            code: 3, // INVALID_ARGUMENT
            message: m,
            details: Vec::new(),
        });
        match self.mode {
            XdsMode::Sotw => Out::Sotw(DiscoveryRequest {
                version_info: st.version.clone(),
                node,
                resource_names: names,
                type_url: kind.type_url().to_owned(),
                response_nonce: nonce,
                error_detail,
                ..Default::default()
            }),
            XdsMode::Delta => {
                let mut r = DeltaDiscoveryRequest {
                    node,
                    type_url: kind.type_url().to_owned(),
                    response_nonce: if initial { String::new() } else { nonce },
                    error_detail,
                    ..Default::default()
                };
                if initial {
                    r.resource_names_subscribe = names;
                    r.initial_resource_versions = self.store.versions(kind).into_iter().collect();
                }
                Out::Delta(r)
            }
        }
    }

    /// Subscribes to `names` of an RDS/EDS type (the whole list in SotW, the change in
    /// delta); nothing when unchanged.
    fn subscribe(&mut self, kind: Kind, names: BTreeSet<String>) -> Out {
        let before = std::mem::replace(&mut self.ty(kind).names, names.clone());
        let requested = self.ty(kind).requested;
        match self.mode {
            XdsMode::Sotw => self.request(kind, None, !requested),
            XdsMode::Delta if !requested => self.request(kind, None, true),
            XdsMode::Delta => {
                let node = self.node_once();
                Out::Delta(DeltaDiscoveryRequest {
                    node,
                    type_url: kind.type_url().to_owned(),
                    resource_names_subscribe: names.difference(&before).cloned().collect(),
                    resource_names_unsubscribe: before.difference(&names).cloned().collect(),
                    ..Default::default()
                })
            }
        }
    }

    /// Requests that keep RDS and EDS subscriptions in step with the listeners and
    /// clusters held; `resend_eds` asks for endpoints again even when the names did not
    /// change (after a cluster update, as Envoy does).
    fn resubscribe(&mut self, resend_eds: bool) -> Vec<Out> {
        let mut out = Vec::new();
        let eds = self.store.wanted_endpoints();
        let eds_changed = eds != self.ty(Kind::Endpoint).names;
        if eds_changed || (resend_eds && self.mode == XdsMode::Sotw && !eds.is_empty()) {
            out.push(self.subscribe(Kind::Endpoint, eds));
        }
        let rds = self.store.wanted_routes();
        if self.lds_asked && rds != self.ty(Kind::Route).names {
            out.push(self.subscribe(Kind::Route, rds));
        }
        out
    }

    /// The NACK of a response of a type rampart does not handle.
    fn unknown_type(&mut self, type_url: &str, nonce: &str) -> Out {
        tracing::warn!(%type_url, "xDS: response of an unknown type");
        let node = self.node_once();
        let error_detail = Some(RpcStatus {
            code: 3,
            message: format!("rampart does not handle resources of type {type_url}"),
            details: Vec::new(),
        });
        match self.mode {
            XdsMode::Sotw => Out::Sotw(DiscoveryRequest {
                node,
                type_url: type_url.to_owned(),
                response_nonce: nonce.to_owned(),
                error_detail,
                ..Default::default()
            }),
            XdsMode::Delta => Out::Delta(DeltaDiscoveryRequest {
                node,
                type_url: type_url.to_owned(),
                response_nonce: nonce.to_owned(),
                error_detail,
                ..Default::default()
            }),
        }
    }

    /// A state-of-the-world response.
    pub fn on_sotw(&mut self, resp: DiscoveryResponse, applier: &dyn Applier) -> Vec<Out> {
        let started = Instant::now();
        let out = self.sotw(resp, applier);
        tracing::debug!(elapsed = ?started.elapsed(), "xDS: response handled");
        out
    }

    fn sotw(&mut self, resp: DiscoveryResponse, applier: &dyn Applier) -> Vec<Out> {
        let Some(kind) = Kind::of_url(&resp.type_url) else {
            return vec![self.unknown_type(&resp.type_url, &resp.nonce)];
        };
        self.ty(kind).nonce = resp.nonce.clone();
        self.ty(kind).responses += 1;
        if let Some(out) = self.too_many(kind, resp.resources.len(), &resp.nonce) {
            return out;
        }
        let items: Vec<(Option<String>, &Any)> = resp.resources.iter().map(|a| (None, a)).collect();
        let mut outcome = self.take(kind, &resp.version_info, items);
        // Absence means removal, unless a resource could not even be read: it may be one
        // of those held, so nothing is removed on its account.
        let names: Vec<Option<String>> = resp
            .resources
            .iter()
            .map(|a| decode(kind, a).ok().map(|d| d.name().to_owned()))
            .collect();
        if kind.full_state() && names.iter().all(Option::is_some) {
            let present: BTreeSet<String> = names.into_iter().flatten().collect();
            for name in self.store.names(kind) {
                if !present.contains(&name) {
                    outcome.changed.push(Undo::of(&self.store, kind, &name));
                    self.store.remove(kind, &name);
                }
            }
        }
        self.finish(kind, &resp.version_info, &resp.nonce, outcome, applier)
    }

    /// A delta response.
    pub fn on_delta(&mut self, resp: DeltaDiscoveryResponse, applier: &dyn Applier) -> Vec<Out> {
        let Some(kind) = Kind::of_url(&resp.type_url) else {
            return vec![self.unknown_type(&resp.type_url, &resp.nonce)];
        };
        self.ty(kind).nonce = resp.nonce.clone();
        self.ty(kind).responses += 1;
        let n = resp.resources.len().max(resp.removed_resources.len());
        if let Some(out) = self.too_many(kind, n, &resp.nonce) {
            return out;
        }
        let items: Vec<(Option<String>, &Any)> = resp
            .resources
            .iter()
            .filter_map(|r| r.resource.as_ref().map(|a| (Some(r.version.clone()), a)))
            .collect();
        let mut outcome = self.take(kind, &resp.system_version_info, items);
        for name in &resp.removed_resources {
            if self.store.bytes_of(kind, name).is_some() {
                outcome.changed.push(Undo::of(&self.store, kind, name));
                self.store.remove(kind, name);
            }
        }
        self.finish(
            kind,
            &resp.system_version_info,
            &resp.nonce,
            outcome,
            applier,
        )
    }

    /// The NACK of a response with more resources than rampart takes of its type, refused
    /// before any is read.
    fn too_many(&mut self, kind: Kind, n: usize, nonce: &str) -> Option<Vec<Out>> {
        if n <= kind.max() {
            return None;
        }
        let msg = format!(
            "the response has {n} {}, more than the {} rampart takes; refused",
            kind.plural(),
            kind.max()
        );
        tracing::warn!("xDS: {msg}");
        let st = self.ty(kind);
        st.rejected += 1;
        st.last_nack = Some((SystemTime::now(), msg.clone()));
        Some(vec![self.request(kind, Some((nonce, Some(msg))), false)])
    }

    /// Checks and stores the resources of a response.
    fn take(&mut self, kind: Kind, version: &str, items: Vec<(Option<String>, &Any)>) -> Outcome {
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut errors = Vec::new();
        let mut changed = Vec::new();
        let mut decoded: Vec<(String, Decoded, &Any)> = Vec::new();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for (i, (rv, any)) in items.iter().enumerate() {
            match decode(kind, any) {
                Ok(d) => {
                    *counts.entry(d.name().to_owned()).or_default() += 1;
                    decoded.push((rv.clone().unwrap_or_else(|| version.to_owned()), d, any));
                }
                Err(e) => errors.push(format!("{} #{i}: {e}", kind.noun())),
            }
        }
        let mut repeated = BTreeSet::new();
        for (rv, d, any) in decoded {
            let name = d.name().to_owned();
            if counts.get(&name).copied().unwrap_or(0) > 1 {
                if repeated.insert(name.clone()) {
                    errors.push(format!(
                        "{} {name:?} appears more than once in the response",
                        kind.noun()
                    ));
                }
                continue;
            }
            if self.store.bytes_of(kind, &name) == Some(&any.value[..]) {
                continue;
            }
            let checked: Result<(), translate::Bad> = (|| {
                let undo = Undo::of(&self.store, kind, &name);
                fn held<T>(
                    resource: T,
                    version: &str,
                    bytes: &[u8],
                    updated: SystemTime,
                ) -> Held<T> {
                    Held {
                        version: version.to_owned(),
                        bytes: bytes.to_vec(),
                        resource,
                        updated,
                    }
                }
                match d {
                    Decoded::Listener(l) => {
                        let shape = translate::check_listener(&l)?;
                        if let Some(m) = self.store.listener_conflict(&self.base, &shape) {
                            return Err(translate::Bad {
                                path: String::new(),
                                message: m,
                            });
                        }
                        self.store
                            .put_listener(held((), &rv, &any.value, wall), shape, now);
                    }
                    Decoded::Cluster(c) => {
                        let shape = translate::check_cluster(&c)?;
                        if self.base.backends.contains(&shape.name) {
                            return Err(translate::Bad {
                                path: String::new(),
                                message: "a backend of that name is in the static configuration"
                                    .to_owned(),
                            });
                        }
                        self.store
                            .put_cluster(held((), &rv, &any.value, wall), shape, now);
                    }
                    Decoded::Route(r) => {
                        translate::check_routes(&r)?;
                        let known = |c: &str| {
                            self.base.backends.contains(c)
                                || self
                                    .store
                                    .clusters
                                    .get(c)
                                    .is_some_and(|s| s.newest().is_some())
                        };
                        translate::check_clusters_known(&r, &translate::Known { cluster: &known })?;
                        self.store
                            .routes
                            .insert(name.clone(), held(*r, &rv, &any.value, wall));
                    }
                    Decoded::Endpoint(e) => {
                        translate::check_endpoints(&e)?;
                        self.store
                            .endpoints
                            .insert(name.clone(), held(*e, &rv, &any.value, wall));
                    }
                }
                changed.push(undo);
                self.store.rejected.remove(&(kind, name.clone()));
                Ok(())
            })();
            if let Err(b) = checked {
                let msg = format!("{} {name:?}: {b}", kind.noun());
                tracing::warn!("xDS: rejected {msg}");
                self.store.rejected.insert(
                    (kind, name.clone()),
                    Rejected {
                        version: rv.clone(),
                        message: msg.clone(),
                        when: wall,
                    },
                );
                errors.push(msg);
            }
        }
        Outcome { errors, changed }
    }

    /// Applies what a response changed (taking back resources the configuration refuses),
    /// and answers it.
    fn finish(
        &mut self,
        kind: Kind,
        version: &str,
        nonce: &str,
        mut outcome: Outcome,
        applier: &dyn Applier,
    ) -> Vec<Out> {
        let now = Instant::now();
        let settled = self.store.settle(now, self.default_wait);
        if !outcome.changed.is_empty() || settled {
            self.commit(&mut outcome, applier);
        }
        let changed_clusters = kind == Kind::Cluster && !outcome.changed.is_empty();
        if kind.full_state() || matches!(kind, Kind::Endpoint | Kind::Route) {
            self.store.drop_unwanted();
        }
        let mut out = self.resubscribe(changed_clusters);
        let sotw = self.mode == XdsMode::Sotw;
        let st = self.ty(kind);
        let error = if outcome.errors.is_empty() {
            st.accepted += 1;
            if sotw {
                st.version = version.to_owned();
            }
            if !outcome.changed.is_empty() {
                st.last_update = Some(SystemTime::now());
            }
            None
        } else {
            st.rejected += 1;
            let msg = outcome.errors.join("; ");
            st.last_nack = Some((SystemTime::now(), msg.clone()));
            if !outcome.changed.is_empty() {
                st.last_update = Some(SystemTime::now());
            }
            Some(msg)
        };
        out.push(self.request(kind, Some((nonce, error)), false));
        // Listeners are asked for once the clusters are in (and warm), as Envoy does.
        if self.ty(Kind::Cluster).responses > 0 && !self.store.clusters_warming() {
            out.extend(self.ask_listeners());
        }
        out
    }

    /// Timers: warming resources whose wait is over go into service.
    pub fn on_tick(&mut self, applier: &dyn Applier) -> Vec<Out> {
        self.on_tick_at(Instant::now(), applier)
    }

    /// [`on_tick`](Self::on_tick) at `now`.
    pub fn on_tick_at(&mut self, now: Instant, applier: &dyn Applier) -> Vec<Out> {
        if !self.store.settle(now, self.default_wait) {
            return Vec::new();
        }
        let mut outcome = Outcome {
            errors: Vec::new(),
            changed: Vec::new(),
        };
        self.commit(&mut outcome, applier);
        let mut out = self.resubscribe(false);
        if self.ty(Kind::Cluster).responses > 0 && !self.store.clusters_warming() {
            out.extend(self.ask_listeners());
        }
        out
    }

    /// When [`on_tick`](Self::on_tick) should run next.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.store.next_deadline(self.default_wait)
    }

    /// A new static configuration (a YAML reload), applied with the resources held.
    pub fn set_base(&mut self, base: Config, applier: &dyn Applier) -> Result<(), BaseRefused> {
        let (cfg, conflicts) = self.store.assemble(&base);
        if !conflicts.is_empty() {
            return Err(BaseRefused::Conflict(ConfigErrors(
                conflicts
                    .into_iter()
                    .map(|c| {
                        rampart_config::ConfigError::new(
                            rampart_config::Pos::default(),
                            "",
                            format!("{} (from the control plane)", c.message),
                        )
                    })
                    .collect(),
            )));
        }
        let keep = applier.current().is_none().then(|| cfg.clone());
        applier.apply(cfg).map_err(BaseRefused::Applier)?;
        self.base = base;
        self.last_applied = keep;
        Ok(())
    }

    /// Assembles and applies the configuration; resources it cannot take are put back as
    /// they were and reported in `outcome.errors`.
    fn commit(&mut self, outcome: &mut Outcome, applier: &dyn Applier) {
        for _ in 0..4 {
            let (cfg, conflicts) = self.store.assemble(&self.base);
            let mut undone = false;
            for c in &conflicts {
                if let Some(i) = outcome
                    .changed
                    .iter()
                    .position(|u| u.key() == (c.kind, c.name.as_str()))
                {
                    outcome.changed.remove(i).restore(&mut self.store);
                    outcome.errors.push(c.message.clone());
                    undone = true;
                }
            }
            if undone {
                continue;
            }
            // The configuration's bounds (servers, rules, patterns...) hold for the
            // control plane's resources too: a response that would cross one is taken back.
            let over = rampart_config::validate::bounds_of(&cfg);
            if !over.is_empty() {
                let msg = over
                    .iter()
                    .map(|e| format!("{}: {}", e.path, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                for u in outcome.changed.drain(..).rev() {
                    u.restore(&mut self.store);
                }
                outcome
                    .errors
                    .push(format!("the configuration would be too large: {msg}"));
                tracing::warn!("xDS: update refused, the configuration would be too large: {msg}");
                return;
            }
            let current = applier.current();
            let unchanged = match &current {
                Some(c) => **c == cfg,
                None => self.last_applied.as_ref() == Some(&cfg),
            };
            if unchanged {
                return;
            }
            let keep = current.is_none().then(|| cfg.clone());
            let started = Instant::now();
            let Err(errs) = applier.apply(cfg) else {
                tracing::debug!(elapsed = ?started.elapsed(), "xDS: configuration applied");
                self.last_applied = keep;
                return;
            };
            // Which changed resources the errors name (by frontend or backend name).
            let mut named = Vec::new();
            for e in &errs.0 {
                let hit = outcome.changed.iter().position(|u| {
                    let (k, n) = u.key();
                    let prefix = match k {
                        Kind::Listener => format!("frontends.{n}"),
                        Kind::Cluster => format!("backends.{n}"),
                        Kind::Route | Kind::Endpoint => return false,
                    };
                    e.path == prefix || e.path.starts_with(&format!("{prefix}."))
                });
                if let Some(i) = hit {
                    named.push((i, e.clone()));
                }
            }
            if named.is_empty() {
                // Not one resource's fault: none of this response's changes apply.
                let msg = errs.to_string().replace('\n', "; ");
                for u in outcome.changed.drain(..).rev() {
                    u.restore(&mut self.store);
                }
                outcome
                    .errors
                    .push(format!("the configuration was refused: {msg}"));
                tracing::warn!(
                    "xDS: update refused, the running configuration is unchanged: {msg}"
                );
                return;
            }
            named.sort_by_key(|(i, _)| std::cmp::Reverse(*i));
            named.dedup_by_key(|(i, _)| *i);
            for (i, e) in named {
                let u = outcome.changed.remove(i);
                let (k, n) = u.key();
                let msg = format!("{} {n:?}: {}", k.noun(), e.message);
                self.store.rejected.insert(
                    (k, n.to_owned()),
                    Rejected {
                        version: String::new(),
                        message: msg.clone(),
                        when: SystemTime::now(),
                    },
                );
                outcome.errors.push(msg);
                u.restore(&mut self.store);
            }
        }
    }
}

#[cfg(test)]
mod tests;
