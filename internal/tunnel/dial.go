package tunnel

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
)

// unreachable is ErrUnreachable for one host: its message names the host
// and port only, never the resolver's or the dialler's internals, which
// stay wrapped for the logs.
type unreachable struct {
	authority string
	cause     error
}

func (e *unreachable) Error() string   { return "cannot connect to " + e.authority }
func (e *unreachable) Unwrap() []error { return []error{ErrUnreachable, e.cause} }

// resolve decides, before any dial, where a passthrough tunnel to
// authority may go. A host a pattern names is dialled as it is (nil); a
// name a wildcard matched is resolved, and only the addresses a wildcard
// may reach are kept.
func (t *Tunnels) resolve(ctx context.Context, authority string) ([]netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(authority)
	if err != nil {
		return nil, fmt.Errorf("%w: %q is not host:port", ErrNotAllowed, authority)
	}
	ok, wildcard := t.hosts.match(host, port)
	if !ok {
		return nil, fmt.Errorf("%w: %s matches no passthrough pattern", ErrNotAllowed, authority)
	}
	if !wildcard {
		return nil, nil
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("%w: %q is not a port", ErrNotAllowed, port)
	}
	ctx, cancel := context.WithTimeout(ctx, t.dialer.Timeout)
	defer cancel()
	ips, err := t.lookup(ctx, host)
	if err != nil {
		return nil, &unreachable{authority, err}
	}
	own, err := t.ownAddrs()
	if err != nil {
		// Without the list, no address can be told apart from the machine's.
		return nil, &unreachable{authority, err}
	}
	var allowed []netip.AddrPort
	for _, ip := range ips {
		if wildcardMayReach(ip, own) {
			allowed = append(allowed, netip.AddrPortFrom(ip.WithZone("").Unmap(), uint16(n)))
		}
	}
	if len(allowed) == 0 {
		return nil, fmt.Errorf("%w: %s resolves to no address a wildcard pattern may reach", ErrNotAllowed, host)
	}
	return allowed, nil
}

// dial connects to authority, or to the addresses resolve kept for it.
func (t *Tunnels) dial(ctx context.Context, authority string, target []netip.AddrPort) (net.Conn, error) {
	if target == nil {
		addr := authority
		if host, port, err := net.SplitHostPort(authority); err == nil {
			if ip, err := netip.ParseAddr(host); err == nil {
				// A literal, matched only by a pattern that names it; dialled
				// without its zone, which names an interface of the app's,
				// not ours.
				addr = net.JoinHostPort(ip.WithZone("").String(), port)
			}
		}
		conn, err := t.dialer.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, &unreachable{authority, err}
		}
		return conn, nil
	}
	var last error
	for _, ap := range target {
		conn, err := t.dialer.DialContext(ctx, "tcp", ap.String())
		if err == nil {
			return conn, nil
		}
		last = err
	}
	return nil, &unreachable{authority, last}
}
