//! Which peer addresses a relay may talk to.
//!
//! A TURN relay is a proxy: left open, it lets anyone on the internet reach the
//! server's own network (the cloud metadata service at 169.254.169.254, an admin
//! panel on 127.0.0.1, a database on 10.0.0.5). Every special-purpose range is
//! denied unless the operator allows it explicitly with a CIDR.
//!
//! Owns the decision only; no sockets.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An address block such as `10.0.0.0/8` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a string is not a CIDR block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an address block like 10.0.0.0/8 or fd00::/8")]
pub struct CidrError(String);

impl Cidr {
    pub fn new(network: IpAddr, prefix: u8) -> Option<Self> {
        let max = if network.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Self { network, prefix })
    }

    /// True if `address` lies in this block (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.network, canonical(address)) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || CidrError(text.to_owned());
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.trim().parse().map_err(|_| error())?;
        let prefix = match prefix {
            Some(prefix) => prefix.trim().parse::<u8>().map_err(|_| error())?,
            None if network.is_ipv4() => 32,
            None => 128,
        };
        Cidr::new(network, prefix).ok_or_else(error)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.network, self.prefix)
    }
}

/// The decision for one peer address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerDecision {
    Allowed,
    /// Denied, with the class of address it fell in.
    Denied(DeniedClass),
}

/// Classes of address denied by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeniedClass {
    Unspecified,
    Loopback,
    Private,
    SharedAddressSpace,
    LinkLocal,
    UniqueLocal,
    Multicast,
    Broadcast,
    Reserved,
    ServerOwn,
    /// A tunnel or translation form whose embedded IPv4 cannot be read
    /// reliably (Teredo, the local-use NAT64 prefix 64:ff9b:1::/48).
    Tunnel,
}

/// The peer address policy: deny special ranges and the server's own
/// addresses, except where an allow-list entry says otherwise.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    pub allowed: Vec<Cidr>,
    pub server_addresses: Vec<IpAddr>,
}

impl PeerPolicy {
    /// True when an allow-list entry covers `address`.
    pub fn explicitly_allowed(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.allowed.iter().any(|cidr| cidr.contains(address))
    }

    pub fn check(&self, address: IpAddr) -> PeerDecision {
        let address = canonical(address);
        if self.allowed.iter().any(|cidr| cidr.contains(address)) {
            return PeerDecision::Allowed;
        }
        if self
            .server_addresses
            .iter()
            .any(|own| canonical(*own) == address)
        {
            return PeerDecision::Denied(DeniedClass::ServerOwn);
        }
        match classify(address) {
            Some(class) => PeerDecision::Denied(class),
            None => PeerDecision::Allowed,
        }
    }
}

/// IPv6 forms that carry an IPv4 address are that IPv4 address, so they
/// cannot slip past the rules: IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`), NAT64 with the well-known prefix (`64:ff9b::a.b.c.d`, RFC
/// 6052; a NAT64 gateway would carry the packet to the IPv4 address) and 6to4
/// (`2002:AABB:CCDD::/48`, RFC 3056). Teredo and the local-use NAT64 prefix are
/// denied outright (see [`DeniedClass::Tunnel`]).
pub fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let segments = v6.segments();
            let embedded = |high: u16, low: u16| {
                let [a, b] = high.to_be_bytes();
                let [c, d] = low.to_be_bytes();
                IpAddr::V4(Ipv4Addr::new(a, b, c, d))
            };
            match segments {
                [0x64, 0xff9b, 0, 0, 0, 0, high, low] => return embedded(high, low),
                [0x2002, high, low, ..] => return embedded(high, low),
                _ => {}
            }
            let compatible = segments.iter().take(6).all(|segment| *segment == 0)
                && !v6.is_unspecified()
                && v6 != Ipv6Addr::LOCALHOST;
            if compatible {
                let [_, _, _, _, _, _, high, low] = segments;
                return embedded(high, low);
            }
            address
        }
        IpAddr::V4(_) => address,
    }
}

fn classify(address: IpAddr) -> Option<DeniedClass> {
    match address {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(address: Ipv4Addr) -> Option<DeniedClass> {
    let [a, b, c, _] = address.octets();
    if address.is_unspecified() || a == 0 {
        Some(DeniedClass::Unspecified)
    } else if address.is_loopback() {
        Some(DeniedClass::Loopback)
    } else if address.is_private() {
        Some(DeniedClass::Private)
    } else if a == 100 && (64..128).contains(&b) {
        Some(DeniedClass::SharedAddressSpace)
    } else if address.is_link_local() {
        Some(DeniedClass::LinkLocal)
    } else if address.is_broadcast() {
        Some(DeniedClass::Broadcast)
    } else if address.is_multicast() {
        Some(DeniedClass::Multicast)
    } else if a >= 240 || (a == 192 && b == 0 && c == 0) {
        // 240/4 is reserved; 192.0.0/24 is IETF protocol assignments.
        Some(DeniedClass::Reserved)
    } else {
        None
    }
}

fn classify_v6(address: Ipv6Addr) -> Option<DeniedClass> {
    let [first, ..] = address.segments();
    if address.is_unspecified() {
        Some(DeniedClass::Unspecified)
    } else if address.is_loopback() {
        Some(DeniedClass::Loopback)
    } else if first & 0xffc0 == 0xfe80 {
        Some(DeniedClass::LinkLocal)
    } else if first & 0xfe00 == 0xfc00 {
        Some(DeniedClass::UniqueLocal)
    } else if first & 0xff00 == 0xff00 {
        Some(DeniedClass::Multicast)
    } else if first & 0xffc0 == 0xfec0 {
        // Deprecated site-local.
        Some(DeniedClass::Reserved)
    } else if matches!(
        address.segments(),
        [0x2001, 0, ..] | [0x64, 0xff9b, 0x1, ..]
    ) {
        // Teredo (2001::/32) and local-use NAT64 (64:ff9b:1::/48).
        Some(DeniedClass::Tunnel)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(policy: &PeerPolicy, address: &str) -> PeerDecision {
        policy.check(address.parse().unwrap())
    }

    #[test]
    fn ipv4_carried_in_ipv6_is_judged_as_that_ipv4() {
        let policy = PeerPolicy::default();
        for (address, class) in [
            // NAT64 (well-known prefix): the cloud metadata address, loopback, RFC 1918.
            ("64:ff9b::a9fe:a9fe", DeniedClass::LinkLocal),
            ("64:ff9b::7f00:1", DeniedClass::Loopback),
            ("64:ff9b::a00:5", DeniedClass::Private),
            // 6to4 with a denied IPv4 inside.
            ("2002:a9fe:a9fe::1", DeniedClass::LinkLocal),
            ("2002:c0a8:101::", DeniedClass::Private),
            // Forms whose IPv4 cannot be read reliably are denied outright.
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", DeniedClass::Tunnel),
            ("64:ff9b:1::a9fe:a9fe", DeniedClass::Tunnel),
        ] {
            assert_eq!(
                decide(&policy, address),
                PeerDecision::Denied(class),
                "{address}"
            );
        }
        // The same forms around a public IPv4 are allowed, as that IPv4 is.
        for address in ["64:ff9b::c633:6437", "2002:c633:6437::1"] {
            assert_eq!(decide(&policy, address), PeerDecision::Allowed, "{address}");
        }
        // And the server's own IPv4 inside NAT64 is the server's own.
        let own = PeerPolicy {
            allowed: Vec::new(),
            server_addresses: vec!["198.51.100.55".parse().unwrap()],
        };
        assert_eq!(
            decide(&own, "64:ff9b::c633:6437"),
            PeerDecision::Denied(DeniedClass::ServerOwn)
        );
    }

    #[test]
    fn every_special_class_is_denied_by_default() {
        let policy = PeerPolicy {
            allowed: Vec::new(),
            server_addresses: vec!["203.0.113.7".parse().unwrap()],
        };
        let cases = [
            ("0.0.0.0", DeniedClass::Unspecified),
            ("0.1.2.3", DeniedClass::Unspecified),
            ("::", DeniedClass::Unspecified),
            ("127.0.0.1", DeniedClass::Loopback),
            ("127.255.1.2", DeniedClass::Loopback),
            ("::1", DeniedClass::Loopback),
            ("::ffff:127.0.0.1", DeniedClass::Loopback),
            ("::127.0.0.1", DeniedClass::Loopback),
            ("10.1.2.3", DeniedClass::Private),
            ("172.16.0.1", DeniedClass::Private),
            ("172.31.255.255", DeniedClass::Private),
            ("192.168.1.1", DeniedClass::Private),
            ("::ffff:192.168.1.1", DeniedClass::Private),
            ("100.64.0.1", DeniedClass::SharedAddressSpace),
            ("100.127.255.254", DeniedClass::SharedAddressSpace),
            ("169.254.169.254", DeniedClass::LinkLocal),
            ("::ffff:169.254.169.254", DeniedClass::LinkLocal),
            ("fe80::1", DeniedClass::LinkLocal),
            ("fc00::1", DeniedClass::UniqueLocal),
            ("fd12:3456::1", DeniedClass::UniqueLocal),
            ("224.0.0.1", DeniedClass::Multicast),
            ("239.255.255.250", DeniedClass::Multicast),
            ("ff02::1", DeniedClass::Multicast),
            ("255.255.255.255", DeniedClass::Broadcast),
            ("240.0.0.1", DeniedClass::Reserved),
            ("203.0.113.7", DeniedClass::ServerOwn),
            ("::ffff:203.0.113.7", DeniedClass::ServerOwn),
        ];
        for (address, class) in cases {
            assert_eq!(
                decide(&policy, address),
                PeerDecision::Denied(class),
                "{address}"
            );
        }
        for address in [
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "2001:4860::8888",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(decide(&policy, address), PeerDecision::Allowed, "{address}");
        }
    }

    #[test]
    fn the_allow_list_opens_a_range() {
        let policy = PeerPolicy {
            allowed: vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()],
            server_addresses: Vec::new(),
        };
        assert_eq!(decide(&policy, "10.9.8.7"), PeerDecision::Allowed);
        assert_eq!(decide(&policy, "::ffff:10.9.8.7"), PeerDecision::Allowed);
        assert_eq!(decide(&policy, "::1"), PeerDecision::Allowed);
        assert_eq!(
            decide(&policy, "192.168.0.1"),
            PeerDecision::Denied(DeniedClass::Private)
        );
    }

    #[test]
    fn cidrs_parse_and_reject_nonsense() {
        assert!("10.0.0.0/8".parse::<Cidr>().is_ok());
        assert!("0.0.0.0/0".parse::<Cidr>().is_ok());
        assert!("fd00::/8".parse::<Cidr>().is_ok());
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("ten/8".parse::<Cidr>().is_err());
        let everything: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(everything.contains("1.2.3.4".parse().unwrap()));
    }
}
