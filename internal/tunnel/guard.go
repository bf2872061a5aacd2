package tunnel

import "net/netip"

// forbidden are the ranges a wildcard pattern never leads to, besides what
// netip classifies (loopback, link-local, multicast, unspecified, private):
// "this network", which Linux connects to the machine itself, the shared
// address space of carrier-grade NAT and of some clouds' internal services,
// the local-use NAT64 prefix, and broadcast.
var forbidden = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("255.255.255.255/32"),
	netip.MustParsePrefix("64:ff9b:1::/48"),
}

// Prefixes whose addresses carry an IPv4 address that a network on the way
// may turn into a connection to it (RFC 4291's IPv4-compatible form, RFC
// 6052's well-known NAT64 prefix, RFC 3056's 6to4): such an address is
// judged by the IPv4 address inside.
var (
	ipv4Compatible = netip.MustParsePrefix("::/96")
	nat64          = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour      = netip.MustParsePrefix("2002::/16")
)

// wildcardMayReach reports whether a wildcard pattern may lead to ip
// (docs/security.md, "Tunnels: bounds and edges"): never to the proxy's
// own machine (its admin port, the app's other ports), nor to the network
// it sits in (a cloud's metadata service, the cluster's services),
// whatever form the address takes. own are the machine's interface addresses. A pattern that
// names a host or address reaches it whatever it is: the operator named it.
func wildcardMayReach(ip netip.Addr, own []netip.Addr) bool {
	ip = ip.WithZone("").Unmap()
	if !ip.IsValid() {
		return false
	}
	if inner, ok := embeddedIPv4(ip); ok && !wildcardMayReach(inner, own) {
		return false
	}
	if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast() ||
		ip.IsMulticast() || ip.IsUnspecified() || ip.IsPrivate() {
		return false
	}
	for _, p := range forbidden {
		if p.Contains(ip) {
			return false
		}
	}
	for _, a := range own {
		if a.WithZone("").Unmap() == ip {
			return false
		}
	}
	return true
}

// embeddedIPv4 is the IPv4 address inside an IPv4-compatible, NAT64 or
// 6to4 address.
func embeddedIPv4(ip netip.Addr) (netip.Addr, bool) {
	if !ip.Is6() {
		return netip.Addr{}, false
	}
	b := ip.As16()
	switch {
	case ipv4Compatible.Contains(ip), nat64.Contains(ip):
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case sixToFour.Contains(ip):
		return netip.AddrFrom4([4]byte(b[2:6])), true
	}
	return netip.Addr{}, false
}
