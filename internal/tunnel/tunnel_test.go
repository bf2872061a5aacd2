package tunnel

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dinie/dinie-auth-proxy/internal/testkit"
)

func TestPatterns(t *testing.T) {
	for _, bad := range []string{"", "*.x*", "a*.example", "host:0", "host:http", "ex ample", "http://x"} {
		if _, err := parsePatterns([]string{bad}); err == nil {
			t.Errorf("pattern %q accepted", bad)
		}
	}
	for _, good := range []string{"api.stripe.com", "*.amazonaws.com", "*", "10.0.0.5:5432", "[::1]:443", "::1", "*:8443", "Host.Example."} {
		if _, err := parsePatterns([]string{good}); err != nil {
			t.Errorf("pattern %q: %v", good, err)
		}
	}
}

// The addresses a wildcard never reaches, in every form they can take.
func TestWildcardMayReach(t *testing.T) {
	own := []netip.Addr{netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("2001:db8::7")}
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"93.184.215.14", true},
		{"2606:2800:21f:cb07:6820:80da:af6b:8b2c", true},
		{"127.0.0.1", false},
		{"127.9.9.9", false},
		{"::1", false},
		{"0.0.0.0", false},
		{"0.1.2.3", false},
		{"::", false},
		{"169.254.169.254", false}, // a cloud's metadata service
		{"fe80::1", false},
		{"fd00:ec2::254", false}, // the same, over IPv6 (ULA)
		{"fc00::1", false},
		{"10.1.2.3", false},
		{"172.16.0.1", false},
		{"172.31.255.255", false},
		{"172.32.0.1", true},
		{"192.168.1.1", false},
		{"100.64.0.1", false},
		{"100.127.255.254", false},
		{"100.128.0.1", true},
		{"224.0.0.1", false},
		{"ff02::1", false},
		{"255.255.255.255", false},
		{"::ffff:127.0.0.1", false},
		{"::127.0.0.1", false}, // IPv4-compatible
		{"::10.0.0.1", false},
		{"64:ff9b::7f00:1", false}, // NAT64 of 127.0.0.1
		{"64:ff9b::a9fe:a9fe", false},
		{"64:ff9b::5db8:d70e", true}, // NAT64 of a public address
		{"64:ff9b:1::5db8:d70e", false},
		{"2002:7f00:1::", false}, // 6to4 of 127.0.0.1
		{"203.0.113.7", false},   // the machine's own
		{"::ffff:203.0.113.7", false},
		{"2001:db8::7", false},
		{"2001:db8::7%eth0", false},
	} {
		if got := wildcardMayReach(netip.MustParseAddr(tc.addr), own); got != tc.ok {
			t.Errorf("wildcardMayReach(%s) = %v, want %v", tc.addr, got, tc.ok)
		}
	}
}

// A wildcard's target is decided on the resolved addresses before any dial
// (the addresses refused here would not answer a dial in a test); a name
// with one allowed address keeps only that one; a named host is not
// resolved here at all.
func TestResolveDecidesBeforeAnyDial(t *testing.T) {
	answers := map[string][]netip.Addr{
		"metadata.example": {netip.MustParseAddr("169.254.169.254"), netip.MustParseAddr("fd00:ec2::254")},
		"self.example":     {netip.MustParseAddr("203.0.113.7")},
		"nat64.example":    {netip.MustParseAddr("64:ff9b::a00:1")},
		"mixed.example":    {netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("93.184.215.14")},
	}
	tun, err := New(Config{
		Passthrough:    []string{"*.example", "named.internal"},
		Lookup:         func(_ context.Context, host string) ([]netip.Addr, error) { return answers[host], nil },
		InterfaceAddrs: func() ([]netip.Addr, error) { return []netip.Addr{netip.MustParseAddr("203.0.113.7")}, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"metadata.example", "self.example", "nat64.example", "unlisted.test"} {
		if _, err := tun.resolve(t.Context(), host+":443"); !errors.Is(err, ErrNotAllowed) {
			t.Errorf("%s: %v, want ErrNotAllowed", host, err)
		}
	}
	got, err := tun.resolve(t.Context(), "mixed.example:443")
	if err != nil || len(got) != 1 || got[0].String() != "93.184.215.14:443" {
		t.Errorf("mixed.example: %v %v, want only its public address", got, err)
	}
	if got, err := tun.resolve(t.Context(), "named.internal:443"); err != nil || got != nil {
		t.Errorf("named host: %v %v, want it dialled by name", got, err)
	}
}

// The bound counts tunnels from Open to Release; a host refusal comes
// before it; the gauge follows.
func TestOpenIsBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	tun, err := New(Config{Max: 2, Passthrough: []string{"*.example"}, Registerer: reg,
		Lookup: func(context.Context, string) ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("10.0.0.1")}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	a, err := tun.Open(t.Context(), Plain, "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := tun.Open(t.Context(), Intercepted, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tun.Open(t.Context(), Plain, ""); !errors.Is(err, ErrFull) {
		t.Errorf("third tunnel: %v, want ErrFull", err)
	}
	if _, err := tun.Open(t.Context(), Passthrough, "x.example:443"); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("forbidden passthrough beyond the bound: %v, want ErrNotAllowed first", err)
	}
	if v := testutil.ToFloat64(tun.gauge.WithLabelValues("intercepted")); v != 1 {
		t.Errorf("intercepted gauge %v", v)
	}
	a.Release()
	a.Release() // once only
	if _, err := tun.Open(t.Context(), Plain, ""); err != nil {
		t.Errorf("after a release: %v", err)
	}
	b.Release()
	if v := testutil.ToFloat64(tun.gauge.WithLabelValues("plain")) + testutil.ToFloat64(tun.gauge.WithLabelValues("intercepted")); v != 1 {
		t.Errorf("gauges sum to %v, want 1", v)
	}
	tun.Close()
	if _, err := tun.Open(t.Context(), Plain, ""); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
}

// A tunnel being prepared for the server ends at Close, and gives its
// place back.
func TestCloseEndsTunnelsBeingPrepared(t *testing.T) {
	tun, _ := New(Config{})
	s, _ := tun.Open(t.Context(), Intercepted, "")
	app, proxySide := net.Pipe()
	defer app.Close()
	ended := make(chan error, 1)
	s.Serve(proxySide, func(c net.Conn) (net.Conn, error) {
		_, err := c.Read(make([]byte, 1)) // a handshake that never gets its hello
		ended <- err
		return nil, err
	})
	tun.Close()
	if err := <-ended; err == nil {
		t.Error("setup read something")
	}
	testkit.Eventually(t, "place given back", func() bool {
		tun.mu.Lock()
		defer tun.mu.Unlock()
		return tun.count == 0
	})
}
