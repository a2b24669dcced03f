//! The operating-system side, in one place: the raw IP protocol 112 socket with its
//! multicast membership and TTL 255, virtual addresses added and removed through
//! rtnetlink, and gratuitous ARP on a packet socket.

use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

use futures_util::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use crate::packet::{GROUP, PROTO};

/// A network interface: name, index and hardware address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}

/// Looks `name` up in sysfs.
pub fn iface(name: &str) -> io::Result<Iface> {
    if name.is_empty() || name.contains(['/', '.']) && name.starts_with('.') {
        return Err(bad(format!("invalid interface name {name:?}")));
    }
    let dir = std::path::Path::new("/sys/class/net").join(name);
    let index = std::fs::read_to_string(dir.join("ifindex"))
        .map_err(|e| io::Error::new(e.kind(), format!("interface {name}: {e}")))?
        .trim()
        .parse()
        .map_err(|_| bad(format!("interface {name}: unreadable index")))?;
    let mac_text = std::fs::read_to_string(dir.join("address"))?;
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = mac_text.trim().split(':').collect();
    if parts.len() == 6 {
        for (m, p) in mac.iter_mut().zip(parts) {
            *m = u8::from_str_radix(p, 16).map_err(|_| bad("unreadable MAC address"))?;
        }
    }
    Ok(Iface {
        name: name.to_owned(),
        index,
        mac,
    })
}

/// Whether the interface's link is up (operstate up or unknown, as for veth peers in
/// some namespaces).
pub fn link_up(name: &str) -> bool {
    std::fs::read_to_string(
        std::path::Path::new("/sys/class/net")
            .join(name)
            .join("operstate"),
    )
    .map(|s| matches!(s.trim(), "up" | "unknown"))
    .unwrap_or(false)
}

/// Virtual address changes through rtnetlink.
#[derive(Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
}

fn nl_err(e: rtnetlink::Error) -> io::Error {
    io::Error::other(e.to_string())
}

impl Netlink {
    /// Opens a netlink connection; its driver runs on the current Tokio runtime.
    pub fn new() -> io::Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// The IPv4 addresses on interface `index`, with prefix lengths, primary first.
    pub async fn addresses(&self, index: u32) -> io::Result<Vec<(Ipv4Addr, u8)>> {
        let mut out = Vec::new();
        let mut s = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(m) = s.try_next().await.map_err(nl_err)? {
            for a in &m.attributes {
                if let AddressAttribute::Local(IpAddr::V4(ip)) = a {
                    out.push((*ip, m.header.prefix_len));
                }
            }
        }
        Ok(out)
    }

    /// Adds `ip/prefix` to interface `index`; already present is fine.
    pub async fn add(&self, index: u32, ip: Ipv4Addr, prefix: u8) -> io::Result<()> {
        if self.addresses(index).await?.iter().any(|(a, _)| *a == ip) {
            return Ok(());
        }
        self.handle
            .address()
            .add(index, IpAddr::V4(ip), prefix)
            .execute()
            .await
            .map_err(nl_err)
    }

    /// Removes `ip` from interface `index`; already absent is fine.
    pub async fn del(&self, index: u32, ip: Ipv4Addr) -> io::Result<()> {
        let mut s = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(IpAddr::V4(ip))
            .execute();
        while let Some(m) = s.try_next().await.map_err(nl_err)? {
            self.handle
                .address()
                .del(m)
                .execute()
                .await
                .map_err(nl_err)?;
        }
        Ok(())
    }
}

/// A raw socket for IP protocol 112 on one interface.
pub struct VrrpSocket {
    fd: AsyncFd<Socket>,
}

impl VrrpSocket {
    /// Opens the socket on `iface`, sending from `src`: bound to the device, multicast
    /// group joined (unless unicast only), TTL 255, no loopback of our own adverts.
    pub fn open(iface: &Iface, src: Ipv4Addr, multicast: bool) -> io::Result<Self> {
        let s = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(PROTO))),
        )?;
        s.set_nonblocking(true)?;
        s.bind_device(Some(iface.name.as_bytes()))?;
        s.set_ttl_v4(255)?;
        s.set_multicast_ttl_v4(255)?;
        s.set_multicast_loop_v4(false)?;
        if multicast {
            s.set_multicast_if_v4(&src)?;
            s.join_multicast_v4_n(&GROUP, &InterfaceIndexOrAddress::Index(iface.index))?;
        }
        #[allow(unsafe_code)]
        // SAFETY: `Socket` owns a valid descriptor, which stays open and is not replaced
        // while the `AsyncFd` owns it.
        let fd = unsafe { AsyncFd::register(s) }.map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Self { fd })
    }

    /// Receives one IPv4 datagram, header included.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            let r = guard.try_io(|inner| {
                // SAFETY-free: socket2 reads into MaybeUninit; a u8 slice is valid as such.
                let uninit: &mut [MaybeUninit<u8>] = as_uninit(buf);
                inner.get_ref().recv(uninit)
            });
            match r {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends a VRRP message to `dst` (the kernel adds the IP header).
    pub async fn send_to(&self, msg: &[u8], dst: Ipv4Addr) -> io::Result<()> {
        let addr = SockAddr::from(SocketAddrV4::new(dst, 0));
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|inner| inner.get_ref().send_to(msg, &addr)) {
                Ok(r) => return r.map(|_| ()),
                Err(_would_block) => continue,
            }
        }
    }
}

fn as_uninit(buf: &mut [u8]) -> &mut [MaybeUninit<u8>] {
    // An initialised byte is a valid MaybeUninit<u8>; the socket only writes bytes.
    let len = buf.len();
    let ptr = buf.as_mut_ptr().cast::<MaybeUninit<u8>>();
    #[allow(unsafe_code)]
    // SAFETY: same pointer, length and alignment; MaybeUninit<u8> has u8's layout, and
    // the callee (recv) never writes uninitialised memory into it.
    unsafe {
        std::slice::from_raw_parts_mut(ptr, len)
    }
}

/// A gratuitous ARP request announcing `ip` at `iface`'s MAC: Ethernet broadcast, sender
/// and target protocol address both `ip` (what keepalived sends).
pub fn garp_frame(iface: &Iface, ip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&iface.mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&iface.mac);
    f[28..32].copy_from_slice(&ip.octets());
    // Target hardware address stays zero.
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// Link-layer destination of a frame on `index` (a `sockaddr_ll`).
#[allow(unsafe_code)]
fn link_addr(index: u32) -> io::Result<SockAddr> {
    let mut ll: libc::sockaddr_ll = {
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        unsafe { std::mem::zeroed() }
    };
    ll.sll_family = libc::AF_PACKET as u16;
    ll.sll_protocol = 0x0806u16.to_be();
    ll.sll_ifindex = i32::try_from(index).map_err(|_| bad("interface index out of range"))?;
    ll.sll_halen = 6;
    ll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `init` is given storage at least as large as sockaddr_storage; we copy a
    // fully initialised sockaddr_ll into its start and report its exact length.
    let ((), addr) = unsafe {
        SockAddr::try_init(|storage, out_len| {
            std::ptr::copy_nonoverlapping(
                (&raw const ll).cast::<u8>(),
                storage.cast::<u8>(),
                len as usize,
            );
            *out_len = len;
            Ok(())
        })
    }?;
    Ok(addr)
}

/// Sends `count` gratuitous ARPs for each address.
pub fn send_garp(iface: &Iface, ips: &[Ipv4Addr], count: u32) -> io::Result<()> {
    let s = Socket::new(
        Domain::PACKET,
        Type::RAW,
        Some(Protocol::from(i32::from(0x0806u16.to_be()))),
    )?;
    let to = link_addr(iface.index)?;
    for _ in 0..count.max(1) {
        for ip in ips {
            s.send_to(&garp_frame(iface, *ip), &to)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garp_layout() {
        let i = Iface {
            name: "eth0".into(),
            index: 2,
            mac: [2, 0, 0, 0, 0, 1],
        };
        let f = garp_frame(&i, "10.0.0.100".parse().unwrap());
        assert_eq!(&f[..6], &[0xff; 6]);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1], "an ARP request");
        assert_eq!(&f[28..32], &[10, 0, 0, 100]);
        assert_eq!(&f[32..38], &[0; 6]);
        assert_eq!(&f[38..42], &[10, 0, 0, 100]);
    }

    #[test]
    fn loopback_interface_is_found() {
        let lo = iface("lo").unwrap();
        assert!(lo.index >= 1);
        assert!(iface("no-such-if0").is_err());
    }
}
