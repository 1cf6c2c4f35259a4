//! Address ranges in CIDR notation (RFC 4632 for IPv4, RFC 4291 section 2.3 for IPv6), for
//! `--proxy-protocol-from`: `10.0.0.0/8`, `2001:db8::/32`, or a single address (`192.0.2.7`,
//! the same as `/32`; `::1`, the same as `/128`).
//!
//! An IPv4-mapped IPv6 address (`::ffff:192.0.2.7`, how a dual-stack listener sees an IPv4 peer)
//! is matched as the IPv4 address it stands for, so an IPv4 range covers its peers whichever way
//! sluice listens.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One address range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_matches(
                u128::from(u32::from(net)),
                u128::from(u32::from(ip)),
                32,
                self.prefix_len,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_matches(u128::from(net), u128::from(ip), 128, self.prefix_len)
            }
            _ => false,
        }
    }
}

/// Whether the first `len` of `bits` bits of `a` and `b` agree.
fn prefix_matches(a: u128, b: u128, bits: u32, len: u8) -> bool {
    let host_bits = bits - u32::from(len);
    host_bits >= bits || (a ^ b) >> host_bits == 0
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let bad = || {
            format!(
                "bad address range {text:?} (expected CIDR such as 10.0.0.0/8 or 2001:db8::/32)"
            )
        };
        let (ip_text, len_text) = match text.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (text, None),
        };
        let ip: IpAddr = ip_text.trim().parse().map_err(|_| bad())?;
        let bits: u8 = if ip.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len_text {
            None => bits,
            Some(len) => match len.trim().parse::<u8>() {
                Ok(n) if n <= bits && !len.trim().starts_with('+') => n,
                _ => return Err(bad()),
            },
        };
        // An IPv4-mapped range (within ::ffff:0:0/96) is the IPv4 range it maps.
        let (ip, prefix_len) = match ip {
            IpAddr::V6(v6) if prefix_len >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix_len - 96),
                None => (ip, prefix_len),
            },
            _ => (ip, prefix_len),
        };
        let cidr = Cidr {
            network: ip,
            prefix_len,
        };
        let network = cidr.network_address();
        if network != ip {
            return Err(format!(
                "address range {text:?} has bits set past its prefix length: did you mean \
                 {network}/{prefix_len}?"
            ));
        }
        Ok(cidr)
    }
}

impl Cidr {
    /// The range's first address: its address with every bit past the prefix cleared.
    fn network_address(&self) -> IpAddr {
        match self.network {
            IpAddr::V4(ip) => {
                let host_bits = 32 - u32::from(self.prefix_len);
                let mask = u32::MAX.checked_shl(host_bits).unwrap_or(0);
                IpAddr::V4((u32::from(ip) & mask).into())
            }
            IpAddr::V6(ip) => {
                let host_bits = 128 - u32::from(self.prefix_len);
                let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
                IpAddr::V6((u128::from(ip) & mask).into())
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// Whether any range of `list` holds `ip`.
pub(crate) fn any_contains(list: &[Cidr], ip: IpAddr) -> bool {
    list.iter().any(|c| c.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_range_holds_exactly_the_addresses_under_its_prefix() {
        let ten = cidr("10.0.0.0/8");
        assert!(ten.contains(ip("10.0.0.0")));
        assert!(ten.contains(ip("10.255.255.255")));
        assert!(!ten.contains(ip("11.0.0.0")));
        assert!(!ten.contains(ip("9.255.255.255")));
        let doc = cidr("2001:db8::/32");
        assert!(doc.contains(ip("2001:db8:ffff::1")));
        assert!(!doc.contains(ip("2001:db9::1")));
        let host = cidr("192.0.2.7");
        assert_eq!(host.to_string(), "192.0.2.7/32");
        assert!(host.contains(ip("192.0.2.7")));
        assert!(!host.contains(ip("192.0.2.8")));
        let odd = cidr("192.0.2.4/30");
        let inside: Vec<u8> = (0..=255u8)
            .filter(|&b| odd.contains(IpAddr::from([192, 0, 2, b])))
            .collect();
        assert_eq!(inside, vec![4, 5, 6, 7]);
    }

    #[test]
    fn zero_length_prefixes_hold_their_whole_family_only() {
        let all4 = cidr("0.0.0.0/0");
        let all6 = cidr("::/0");
        assert!(all4.contains(ip("255.255.255.255")));
        assert!(!all4.contains(ip("::1")));
        assert!(all6.contains(ip("::1")));
        assert!(!all6.contains(ip("127.0.0.1")));
        assert!(cidr("::1").contains(ip("::1")));
        assert!(!cidr("::1").contains(ip("::2")));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_ranges() {
        assert!(cidr("127.0.0.0/8").contains(ip("::ffff:127.0.0.9")));
        assert!(cidr("::ffff:0:0/96").contains(ip("127.0.0.1")));
        assert!(!cidr("::ffff:0:0/96").contains(ip("::1")));
        assert_eq!(cidr("::ffff:10.0.0.0/104"), cidr("10.0.0.0/8"));
    }

    #[test]
    fn malformed_ranges_are_refused_with_a_reason() {
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "host.example/8",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
        let e = "10.0.0.1/8".parse::<Cidr>().unwrap_err();
        assert!(e.contains("did you mean 10.0.0.0/8"), "{e}");
        let e = "2001:db8::1/32".parse::<Cidr>().unwrap_err();
        assert!(e.contains("2001:db8::/32"), "{e}");
    }

    #[test]
    fn a_list_matches_when_any_range_does() {
        let list = [cidr("10.0.0.0/8"), cidr("::1")];
        assert!(any_contains(&list, ip("10.1.2.3")));
        assert!(any_contains(&list, ip("::1")));
        assert!(!any_contains(&list, ip("127.0.0.1")));
        assert!(!any_contains(&[], ip("127.0.0.1")));
    }
}
