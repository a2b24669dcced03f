//! rampart-vrrp: a VRRP speaker, so that two rampart nodes share floating addresses
//! without keepalived beside them.
//!
//! It owns the VRRPv2 (RFC 3768) and VRRPv3 (RFC 5798) packet codec ([`packet`]) and the
//! router state machine (Initialize, Backup, Master, and FAULT for tracked failures),
//! written as pure code driven by an injected clock ([`machine`]). The operating-system
//! side (raw IP protocol 112 sockets, multicast membership, virtual addresses through
//! netlink, gratuitous ARP) goes in one module beside them.
//!
//! It depends on no other rampart crate; rampart tells it about tracked backends and
//! frontends through its public interface.

pub mod group;
pub mod machine;
pub mod os;
pub mod packet;
pub mod speaker;
