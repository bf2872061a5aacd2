package proxy

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/dinie/dinie-auth-proxy/internal/tunnel"
)

func TestRoute(t *testing.T) {
	upstream, _ := url.Parse("https://api.dinie.com.br/api/v3")
	rt := newRouter(upstream, "127.0.0.1:8080", false, nil)
	tests := []struct {
		method, target string
		inTunnel       bool
		want           routing
	}{
		{"GET", "/customers", false, routeBaseURL},
		{"GET", "http://api.dinie.com.br/api/v3/customers", false, routeAbsolute},
		{"GET", "http://API.Dinie.com.br/api/v3/customers", false, routeAbsolute},
		{"GET", "http://api.dinie.com.br:80/api/v3/customers", false, routeAbsolute},
		{"GET", "http://api.dinie.com.br:443/api/v3/customers", false, routeAbsolute},
		{"GET", "https://api.dinie.com.br:443/api/v3/customers", false, routeAbsolute},
		{"GET", "http://api.dinie.com.br:8443/api/v3/customers", false, refuseHost},
		{"GET", "http://api.dinie.com.br.evil.example/api/v3", false, refuseHost},
		{"GET", "http://evil.example/api/v3/customers", false, refuseHost},
		{"GET", "http://user:pw@api.dinie.com.br/api/v3", false, refuseHost},

		// The proxy itself in absolute form: an app whose NO_PROXY lacks it.
		{"GET", "http://127.0.0.1:8080/customers", false, routeBaseURL},
		{"GET", "http://localhost:8080/customers", false, routeBaseURL},
		{"GET", "http://127.0.0.2:8080/customers", false, routeBaseURL},
		{"GET", "http://[::1]:8080/customers", false, routeBaseURL},
		{"GET", "http://127.0.0.1:8081/customers", false, refuseHost},
		{"GET", "http://127.0.0.1/customers", false, refuseHost},
		{"GET", "http://10.1.2.3:8080/customers", false, refuseHost},
		{"GET", "http://user:pw@127.0.0.1:8080/customers", false, refuseHost},
		{"GET", "http://127.0.0.1:8080/customers", true, refuseHost},

		// The app's own token requests, wherever it sends them.
		{"POST", "/auth/token", false, routeTokenRequest},
		{"POST", "/api/v3/auth/token", false, routeTokenRequest},
		{"POST", "http://api.dinie.com.br/api/v3/auth/token", false, routeTokenRequest},
		{"POST", "http://api.dinie.com.br/auth/token", true, routeTokenRequest},
		{"POST", "http://localhost:8080/auth/token", false, routeTokenRequest},
		{"POST", "http://evil.example/auth/token", false, refuseHost},
		{"GET", "/auth/token", false, routeBaseURL},
		{"POST", "/auth/tokens", false, routeBaseURL},
		{"POST", "/v3/auth/token", false, routeBaseURL},

		// TRACE and TRACK in any case, the Kelvin sign (U+212A) for a K
		// included: it folds to one.
		{"TRACE", "/customers", false, refuseMethod},
		{"trace", "/customers", false, refuseMethod},
		{"TrAcK", "/customers", false, refuseMethod},
		{"TRAC\u212a", "/customers", false, refuseMethod},
		{"TRACES", "/customers", false, routeBaseURL},
		{"TRAC", "/customers", false, routeBaseURL},

		// CONNECT: a plain tunnel to the upstream's HTTP port only.
		{"CONNECT", "api.dinie.com.br:80", false, routePlainTunnel},
		{"CONNECT", "API.DINIE.COM.BR:80", false, routePlainTunnel},
		{"CONNECT", "api.dinie.com.br:443", false, refuseConnect},
		{"CONNECT", "api.dinie.com.br:8080", false, refuseHost},
		{"CONNECT", "api.dinie.com.br", false, refuseHost},
		{"CONNECT", "evil.example:80", false, refuseHost},
		{"CONNECT", "127.0.0.1:8080", false, refuseHost},
		{"CONNECT", "api.dinie.com.br:80", true, refuseConnect},
		{"CONNECT", "evil.example:443", true, refuseHost},
	}
	for _, tt := range tests {
		r := &http.Request{Method: tt.method, URL: mustParseRequestURI(t, tt.method, tt.target)}
		if got := rt.route(r, tt.inTunnel); got != tt.want {
			t.Errorf("route(%s %s, tunnel %v) = %d, want %d", tt.method, tt.target, tt.inTunnel, got, tt.want)
		}
	}
}

func TestRouteTunnelPortsFollowTheUpstreamsScheme(t *testing.T) {
	for _, tt := range []struct {
		upstream, connect string
		want              routing
	}{
		{"http://dinie.test:8081/api/v3", "dinie.test:8081", routePlainTunnel},
		{"http://dinie.test:8081/api/v3", "dinie.test:80", refuseHost},
		{"http://dinie.test:8081/api/v3", "dinie.test:443", refuseConnect},
		{"https://dinie.test:8443/api/v3", "dinie.test:8443", refuseConnect},
		{"https://dinie.test:8443/api/v3", "dinie.test:80", routePlainTunnel},
		{"https://dinie.test:8443/api/v3", "dinie.test:443", refuseHost},
	} {
		up, _ := url.Parse(tt.upstream)
		r := &http.Request{Method: "CONNECT", URL: &url.URL{Host: tt.connect}}
		if got := newRouter(up, "", false, nil).route(r, false); got != tt.want {
			t.Errorf("upstream %s: CONNECT %s = %d, want %d", tt.upstream, tt.connect, got, tt.want)
		}
	}
}

func mustParseRequestURI(t *testing.T, method, target string) *url.URL {
	if method == "CONNECT" {
		return &url.URL{Host: target}
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// FuzzRoute checks the one property that matters most: the token only goes
// to the upstream. Whatever the request target, an absolute-form request is
// forwarded as such only when its host is the upstream's, and a tunnel opens
// only to the upstream host.
func FuzzRoute(f *testing.F) {
	for _, seed := range []string{
		"/customers?limit=10", "http://api.dinie.com.br/api/v3/x", "http://api.dinie.com.br:80/x",
		"http://evil.example/x", "http://api.dinie.com.br@evil.example/x", "http://[::1]:80/x",
		"http://api.dinie.com.br%2eevil.example/x", "//api.dinie.com.br/x", "*",
		"http://127.0.0.1:8080/x", "/auth/token",
	} {
		f.Add("GET", seed, false)
		f.Add("POST", seed, true)
	}
	f.Add("CONNECT", "api.dinie.com.br:443", false)
	f.Add("CONNECT", "api.dinie.com.br:80", false)
	f.Add("CONNECT", "x.example.com:443", false)
	f.Add("CONNECT", "10.0.0.1:443", false)
	f.Add("TRACE", "/customers", false)
	f.Add("track", "http://api.dinie.com.br/api/v3/x", true)
	upstream, _ := url.Parse("https://api.dinie.com.br/api/v3")
	// With interception and a passthrough pattern: the properties hold
	// with both, and each opens only what it should.
	rt := newRouter(upstream, "127.0.0.1:8080", true, passes(f, "*.example.com"))
	f.Fuzz(func(t *testing.T, method, target string, inTunnel bool) {
		var u *url.URL
		if method == http.MethodConnect {
			u = &url.URL{Host: target}
		} else {
			var err error
			if u, err = url.ParseRequestURI(target); err != nil {
				return
			}
		}
		r := &http.Request{Method: method, URL: u}
		got := rt.route(r, inTunnel)
		if (strings.EqualFold(method, "TRACE") || strings.EqualFold(method, "TRACK")) && got != refuseMethod {
			t.Errorf("routed %s %q as %v, not refused", method, target, got)
		}
		switch got {
		case routeAbsolute:
			if !strings.EqualFold(u.Hostname(), "api.dinie.com.br") || u.User != nil {
				t.Errorf("forwarded %q to the upstream", target)
			}
		case routeBaseURL:
			if u.IsAbs() && (inTunnel || u.Port() != "8080") {
				t.Errorf("treated absolute %q as base-URL", target)
			}
			path, _ := upstreamPath("/api/v3", "/api/v3", u)
			if !strings.HasPrefix(path, "/api/v3") {
				t.Errorf("path %q of %q escaped the prefix", path, target)
			}
		case routePlainTunnel:
			if method != http.MethodConnect || inTunnel || !strings.EqualFold(target, "api.dinie.com.br:80") {
				t.Errorf("opened a tunnel for %s %q", method, target)
			}
		case routeInterceptTunnel:
			if method != http.MethodConnect || inTunnel || !strings.EqualFold(target, "api.dinie.com.br:443") {
				t.Errorf("intercepted %s %q", method, target)
			}
		case routePassthrough:
			host, port, _ := net.SplitHostPort(target)
			if method != http.MethodConnect || inTunnel || port != "443" || net.ParseIP(host) != nil ||
				!strings.HasSuffix(strings.ToLower(strings.TrimSuffix(host, ".")), ".example.com") {
				t.Errorf("relayed %s %q untouched", method, target)
			}
		case routeTokenRequest:
			if method != http.MethodPost {
				t.Errorf("answered %s %q as a token request", method, target)
			}
		}
	})
}

func TestRouteInterceptAndPassthrough(t *testing.T) {
	upstream, _ := url.Parse("https://api.dinie.com.br/api/v3")
	hosts := passes(t, "*", "10.0.0.5:5432", "*.example.com:8443", "[::1]:443")
	exact := passes(t, "api.stripe.com", "*.amazonaws.com")
	for _, tt := range []struct {
		intercept bool
		hosts     func(host, port string) bool
		connect   string
		want      routing
	}{
		{true, nil, "api.dinie.com.br:443", routeInterceptTunnel},
		{true, nil, "API.dinie.com.br:443", routeInterceptTunnel},
		{true, nil, "api.dinie.com.br:80", routePlainTunnel},
		{true, nil, "api.dinie.com.br:8443", refuseHost},
		{true, nil, "evil.example:443", refuseHost},
		{false, nil, "api.dinie.com.br:443", refuseConnect},
		// The upstream host is never relayed untouched, even by "*".
		{true, hosts, "api.dinie.com.br:443", routeInterceptTunnel},
		{false, hosts, "api.dinie.com.br:443", refuseConnect},
		{false, hosts, "api.dinie.com.br:8443", refuseHost},
		// Nor when written as a fully qualified name.
		{true, hosts, "api.dinie.com.br.:443", routeInterceptTunnel},
		{false, hosts, "API.DINIE.COM.BR.:443", refuseConnect},
		{false, exact, "api.dinie.com.br.:443", refuseConnect},
		// A zoned IPv6 literal is a literal: "*" is for names.
		{false, hosts, "[::1%25lo]:443", routePassthrough},
		{false, hosts, "[fe80::1%25eth0]:443", refuseHost},
		// "*" covers names on 443, not IP literals or other ports.
		{false, hosts, "anything.example:443", routePassthrough},
		{false, hosts, "anything.example:80", refuseHost},
		{false, hosts, "10.0.0.6:443", refuseHost},
		{false, hosts, "10.0.0.5:5432", routePassthrough},
		{false, hosts, "10.0.0.5:443", refuseHost},
		{false, hosts, "[::1]:443", routePassthrough},
		{false, hosts, "a.b.example.com:8443", routePassthrough},
		{false, exact, "api.stripe.com:443", routePassthrough},
		{false, exact, "API.STRIPE.COM.:443", routePassthrough},
		{false, exact, "x.api.stripe.com:443", refuseHost},
		{false, exact, "s3.amazonaws.com:443", routePassthrough},
		{false, exact, "amazonaws.com:443", refuseHost},
		{false, exact, "evilamazonaws.com:443", refuseHost},
		{false, exact, "api.stripe.com:8443", refuseHost},
	} {
		r := &http.Request{Method: "CONNECT", URL: &url.URL{Host: tt.connect}}
		if got := newRouter(upstream, "", tt.intercept, tt.hosts).route(r, false); got != tt.want {
			t.Errorf("intercept %v, patterns %v: CONNECT %s = %d, want %d", tt.intercept, tt.hosts != nil, tt.connect, got, tt.want)
		}
	}
}

// Inside a tunnel requests come in origin form: their Host decides, with
// the scheme of the tunnel.
func TestRouteOriginFormInsideATunnel(t *testing.T) {
	upstream, _ := url.Parse("https://api.dinie.com.br/api/v3")
	rt := newRouter(upstream, "127.0.0.1:8080", true, nil)
	for _, tt := range []struct {
		host string
		tls  bool
		want routing
	}{
		{"api.dinie.com.br", false, routeAbsolute},
		{"API.Dinie.com.br:80", false, routeAbsolute},
		{"api.dinie.com.br", true, routeAbsolute},
		{"api.dinie.com.br:443", true, routeAbsolute},
		{"api.dinie.com.br:8443", true, refuseHost},
		{"evil.example", true, refuseHost},
		{"api.dinie.com.br.evil.example", false, refuseHost},
		{"127.0.0.1:8080", false, refuseHost}, // the proxy itself: not inside a tunnel
		{"", true, refuseHost},
	} {
		r := &http.Request{Method: "GET", URL: &url.URL{Path: "/api/v3/customers"}, Host: tt.host}
		if tt.tls {
			r.TLS = &tls.ConnectionState{}
		}
		if got := rt.route(r, true); got != tt.want {
			t.Errorf("Host %q (TLS %v) in a tunnel: %d, want %d", tt.host, tt.tls, got, tt.want)
		}
	}
}

// passes is the pattern match of internal/tunnel, as New gives it to the
// router.
func passes(t testing.TB, patterns ...string) func(host, port string) bool {
	t.Helper()
	tun, err := tunnel.New(tunnel.Config{Passthrough: patterns})
	if err != nil {
		t.Fatal(err)
	}
	return tun.Passes
}

func TestUpstreamPathPrependsThePrefixUnlessSent(t *testing.T) {
	tests := []struct {
		prefix, path, rawPath, wantPath, wantRawPath string
	}{
		{"/api/v3", "/customers", "", "/api/v3/customers", ""},
		{"/api/v3", "/api/v3", "", "/api/v3", ""},
		{"/api/v3", "/api/v3/", "", "/api/v3/", ""},
		{"/api/v3", "/api/v3/customers", "", "/api/v3/customers", ""},
		{"/api/v3", "/api/v3x", "", "/api/v3/api/v3x", ""},
		{"/api/v3", "/api/v", "", "/api/v3/api/v", ""},
		{"/api/v3", "/API/v3/x", "", "/api/v3/API/v3/x", ""},
		{"/api/v3", "", "", "/api/v3", ""},
		{"/api/v3", "/files/a/b", "/files/a%2Fb", "/api/v3/files/a/b", "/api/v3/files/a%2Fb"},
		{"/api/v3", "/api/v3/a/b", "/api/v3/a%2Fb", "/api/v3/a/b", "/api/v3/a%2Fb"},
		{"", "/customers", "", "/customers", ""},
	}
	for _, tt := range tests {
		path, rawPath := upstreamPath(tt.prefix, tt.prefix, &url.URL{Path: tt.path, RawPath: tt.rawPath})
		if path != tt.wantPath || rawPath != tt.wantRawPath {
			t.Errorf("upstreamPath(%q, %q, %q) = %q, %q; want %q, %q", tt.prefix, tt.path, tt.rawPath, path, rawPath, tt.wantPath, tt.wantRawPath)
		}
	}
}
