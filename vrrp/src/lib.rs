//! rampart-vrrp: a VRRP speaker, so that two rampart nodes share floating addresses
//! without keepalived beside them.
//!
//! It owns the VRRPv2 (RFC 3768) and VRRPv3 (RFC 5798) packet codec, the router state
//! machine (Initialize, Backup, Master) written as pure code driven by an injected clock,
//! and, in one module, the operating-system side: raw IP protocol 112 sockets, multicast
//! membership, virtual address changes through netlink and gratuitous ARP.
//!
//! It depends on no other rampart crate; rampart tells it about tracked backends and
//! frontends through its public interface.
//!
//! It holds no code yet: the crate fixes the boundary and the dependency rules above.
