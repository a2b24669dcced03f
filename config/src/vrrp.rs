//! Floating addresses shared between nodes with VRRP: the `vrrp` section.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::config_struct;
use crate::decode::{Cx, Decode, NamedMap, Spanned};
use crate::error::Pos;
use crate::yaml::Node;

config_struct! {
    /// The VRRP speaker: virtual routers this node takes part in.
    pub struct Vrrp {
        pub instances: NamedMap<VrrpInstance>,
    }
}

config_struct! {
    /// One virtual router (keepalived's `vrrp_instance`).
    pub struct VrrpInstance {
        /// Interface the adverts go out on and the addresses are added to.
        pub interface: Spanned<String>,
        /// Virtual router id, 1-255; unique per interface (and per network).
        pub vrid: Spanned<u8>,
        /// 1-254, higher wins; 255 = address owner (always Master).
        pub priority: Spanned<u8> = Spanned { value: 100, pos: Pos::default() },
        /// 2 (RFC 3768, keepalived's default) or 3 (RFC 5798).
        pub version: Spanned<u8> = Spanned { value: 3, pos: Pos::default() },
        /// Advertisement interval: v3 in steps of 10ms up to 40.95s, v2 whole seconds.
        pub interval: Spanned<Duration> = Spanned { value: Duration::from_secs(1), pos: Pos::default() },
        /// Whether a higher priority takes over from a lower-priority Master.
        pub preempt: bool = true,
        /// With preemption: how long to keep accepting a lower-priority Master first.
        pub preempt_delay: Duration = Duration::ZERO,
        /// Virtual IPv4 addresses, `ip/prefix` (`/32` when left out).
        pub addresses: Vec<Spanned<Vip>>,
        /// v3 checksum: `pseudo_header` (RFC 5798, keepalived, FRR) or `message`
        /// (the message only, as some vendors send).
        pub checksum: Spanned<String> = Spanned { value: "pseudo_header".to_owned(), pos: Pos::default() },
        /// Send adverts to these peers instead of the multicast group 224.0.0.18.
        pub unicast_peers: Vec<Spanned<Ipv4Def>>,
        pub garp: Garp,
        /// Run as `<script> <instance> <state> <priority>` on each state change; relative
        /// to the configuration file's directory.
        pub notify: Option<Spanned<String>>,
        /// Objects whose failure lowers the priority (with a weight) or puts the instance
        /// in FAULT (without one).
        pub track: Vec<Track>,
    }
}

config_struct! {
    /// Gratuitous ARP on becoming Master.
    pub struct Garp {
        /// Gratuitous ARPs per address at once, and again after `delay`.
        pub repeat: u32 = 5,
        /// When to send the second burst; 0 for none.
        pub delay: Duration = Duration::from_secs(5),
        /// Repeat them this often while Master.
        pub refresh: Option<Duration>,
    }
}

config_struct! {
    /// A tracked object: exactly one of `backend`, `frontend`, `interface`.
    pub struct Track {
        /// Fails when the backend has no usable server.
        pub backend: Option<Spanned<String>>,
        /// Fails when the frontend listens on no address.
        pub frontend: Option<Spanned<String>>,
        /// Fails when the interface is down.
        pub interface: Option<Spanned<String>>,
        /// Negative: subtracted while the object is failed; positive: added while it is
        /// healthy. Without a weight a failure puts the instance in FAULT.
        pub weight: Option<Spanned<i64>>,
    }
}

impl Track {
    /// `kind:name` for messages.
    pub fn label(&self) -> String {
        match (&self.backend, &self.frontend, &self.interface) {
            (Some(b), _, _) => format!("backend:{}", b.value),
            (_, Some(f), _) => format!("frontend:{}", f.value),
            (_, _, Some(i)) => format!("interface:{}", i.value),
            _ => "nothing".to_owned(),
        }
    }
}

/// A virtual address with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vip {
    pub ip: Ipv4Addr,
    pub prefix: u8,
}

impl Decode for Vip {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        cx.parse_scalar(node, "an address", |s| {
            let (ip, prefix) = s.trim().split_once('/').unwrap_or((s.trim(), "32"));
            if ip.parse::<std::net::Ipv6Addr>().is_ok() {
                return Err(format!(
                    "{s:?}: IPv6 virtual addresses are not supported; VRRP here is IPv4"
                ));
            }
            let ip: Ipv4Addr = ip.parse().map_err(|_| {
                format!(
                    "invalid virtual address {s:?}: expected an IPv4 address like 10.0.0.100/24"
                )
            })?;
            let prefix: u8 = prefix
                .parse()
                .ok()
                .filter(|p| (1..=32).contains(p))
                .ok_or_else(|| format!("invalid prefix length in {s:?}: expected 1-32"))?;
            if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback() {
                return Err(format!("{s:?} cannot be a virtual address"));
            }
            Ok(Vip { ip, prefix })
        })
    }
}

/// An IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Def(pub Ipv4Addr);

impl Decode for Ipv4Def {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        cx.parse_scalar(node, "an address", |s| {
            s.trim()
                .parse()
                .map(Ipv4Def)
                .map_err(|_| format!("invalid IPv4 address {s:?}"))
        })
    }
}

impl Vrrp {
    /// Whether `ip` is a virtual address of some instance.
    pub fn is_virtual(&self, ip: std::net::IpAddr) -> bool {
        self.instances.iter().any(|(_, i)| {
            i.addresses
                .iter()
                .any(|a| std::net::IpAddr::V4(a.value.ip) == ip)
        })
    }
}
