//! rampart-admin: the operator's surfaces.
//!
//! It owns the HAProxy-compatible runtime API (a Unix socket speaking HAProxy's command
//! framing, field orders and error strings, so that socat, hatop, haproxyadmin and
//! haproxy_exporter work unchanged), the stats page (HTML, CSV, JSON), the Prometheus
//! `/metrics` endpoint and the `/ready` and `/live` probes.
//!
//! It reads the proxy's live state and changes server states only through
//! `rampart-proxy`'s public handle, and depends on `rampart-config` for the model; the
//! data plane never depends on it.
//!
//! It holds no code yet: the crate fixes the boundary and the dependency rules above.
