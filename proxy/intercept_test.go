package proxy_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/dinie/dinie-auth-proxy/intercept"
	"github.com/dinie/dinie-auth-proxy/internal/h1"
	"github.com/dinie/dinie-auth-proxy/internal/testkit"
	"github.com/dinie/dinie-auth-proxy/proxy"
	"github.com/dinie/dinie-auth-proxy/tokencache"
)

// interceptEnv is a proxy with interception for the upstream host named
// "localhost" (the CA signs for names only), and a pool that trusts its CA.
type interceptEnv struct {
	*env
	caFile string
	roots  *x509.CertPool
	logs   *observer.ObservedLogs
}

func newInterceptEnv(t *testing.T, setup envOption) *interceptEnv {
	t.Helper()
	a, err := intercept.New(intercept.Config{Host: "localhost", CADir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	e := newEnv(t, false, setup, func(_ *env, p *proxy.Config, _ *tokencache.Config) {
		u := *p.Upstream
		u.Host = "localhost:" + u.Port()
		p.Upstream = &u
		if p.Transport == nil {
			h1t, err := h1.NewTransport(&u, h1.TransportConfig{ResponseHeaderTimeout: p.UpstreamTimeout})
			if err != nil {
				t.Fatal(err)
			}
			p.Transport, p.RecycleRequests = h1t, true
		}
		p.Intercept, p.InterceptCAFile = a.TLSConfig(), a.CAFile()
		p.Logger = zap.New(core)
	})
	pem, err := os.ReadFile(a.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	return &interceptEnv{env: e, caFile: a.CAFile(), roots: roots, logs: logs}
}

// client is an app with https:// URLs and HTTPS_PROXY set to the proxy.
func (e *interceptEnv) client(t *testing.T, roots *x509.CertPool, sessions tls.ClientSessionCache) *http.Client {
	proxyURL, _ := url.Parse(e.proxy.URL)
	tr := &http.Transport{
		Proxy: http.ProxyURL(proxyURL),
		// h2 offered too, to see the proxy choose http/1.1.
		TLSClientConfig: &tls.Config{RootCAs: roots, ClientSessionCache: sessions, NextProtos: []string{"h2", "http/1.1"}},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func TestInterceptedTunnel(t *testing.T) { forEachSetup(t, testInterceptedTunnel) }

func testInterceptedTunnel(t *testing.T, setup envOption) {
	e := newInterceptEnv(t, setup)
	sessions := tls.NewLRUClientSessionCache(4)
	c := e.client(t, e.roots, sessions)
	// Two requests, one tunnel: keep-alive inside it.
	for i, path := range []string{"/api/v3/customers", "/api/v3/invoices"} {
		resp, body := do(t, c, "GET", "https://localhost"+path, nil, "Authorization", "Bearer app-own")
		if resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
		if p := resp.TLS.NegotiatedProtocol; p != "http/1.1" {
			t.Errorf("ALPN = %q, want http/1.1", p)
		}
		if s := e.last(t); s.Path != path || s.Auth != "Bearer fake-token-1" {
			t.Errorf("upstream saw %s with the proxy's token %v; want %s with it", s.Path, s.Auth == "Bearer fake-token-1", path)
		}
	}
	if v := testkit.Value(t, e.reg, "dinie_proxy_tunnels_total", "result", "intercepted"); v != 1 {
		t.Errorf("intercepted tunnels = %v, want 1 (keep-alive inside)", v)
	}
	// A new tunnel resumes the TLS session of the first.
	c.Transport.(*http.Transport).CloseIdleConnections()
	resp, _ := do(t, c, "GET", "https://localhost/api/v3/x", nil)
	if resp.StatusCode != 200 || !resp.TLS.DidResume {
		t.Errorf("second tunnel: status %d, resumed %v; want 200, resumed", resp.StatusCode, resp.TLS.DidResume)
	}
	if v := testkit.Value(t, e.reg, "dinie_proxy_tunnels_total", "result", "intercepted"); v != 2 {
		t.Errorf("intercepted tunnels = %v, want 2", v)
	}
	// The app's token requests are answered inside too.
	resp, body := do(t, c, "POST", "https://localhost/api/v3/auth/token", strings.NewReader("grant_type=client_credentials"))
	if resp.StatusCode != 200 || !strings.Contains(body, proxy.StandInToken) {
		t.Errorf("token request in the tunnel: %d %q", resp.StatusCode, body)
	}
}

// tlsTunnel opens an intercepted tunnel by hand and completes the handshake
// with cfg.
func (e *interceptEnv) tlsTunnel(t *testing.T, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	conn, br, resp := connectTo(t, e.env, "localhost:443")
	if resp.StatusCode != 200 || br.Buffered() > 0 {
		t.Fatalf("CONNECT localhost:443: %d", resp.StatusCode)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(conn, cfg)
	return tc, tc.Handshake()
}

func TestInterceptedTunnelRefusesOtherHosts(t *testing.T) {
	forEachSetup(t, func(t *testing.T, setup envOption) {
		e := newInterceptEnv(t, setup)
		for _, host := range []string{"evil.example", "localhost:8443"} {
			// A tunnel each: net/http's server closes after a refusal.
			tc, err := e.tlsTunnel(t, &tls.Config{RootCAs: e.roots, ServerName: "localhost"})
			if err != nil {
				t.Fatal(err)
			}
			resp, body := roundTrip(t, tc, bufio.NewReader(tc), "GET /api/v3/x HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
			assertProblem(t, resp, body, 403, proxy.CodeHostNotAllowed)
		}
		if n := e.calls.Load(); n != 0 {
			t.Errorf("upstream called %d times for other hosts", n)
		}
		// The upstream with https's default port is the upstream: the
		// requests inside carry the TLS state, so the scheme is https.
		tc, err := e.tlsTunnel(t, &tls.Config{RootCAs: e.roots, ServerName: "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		if resp, body := roundTrip(t, tc, bufio.NewReader(tc), "GET /api/v3/x HTTP/1.1\r\nHost: localhost:443\r\n\r\n"); resp.StatusCode != 200 {
			t.Errorf("Host localhost:443 in the tunnel: %d %s", resp.StatusCode, body)
		}
		// Another host's name in the ClientHello: no handshake.
		if _, err := e.tlsTunnel(t, &tls.Config{RootCAs: e.roots, ServerName: "evil.example"}); err == nil {
			t.Error("handshake with SNI evil.example succeeded")
		}
		// Another port or host in the CONNECT: no tunnel.
		for _, target := range []string{"localhost:8443", "evil.example:443", "127.0.0.1:443"} {
			resp, body := rawExchange(t, e.env, "CONNECT", "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
			assertProblem(t, resp, body, 403, proxy.CodeHostNotAllowed)
		}
	})
}

func TestInterceptHandshakeFailureIsCountedWithAHint(t *testing.T) {
	forEachSetup(t, func(t *testing.T, setup envOption) {
		e := newInterceptEnv(t, setup)
		// An app that does not trust the CA: its handshake fails.
		if _, err := e.tlsTunnel(t, &tls.Config{ServerName: "localhost", RootCAs: x509.NewCertPool()}); err == nil {
			t.Fatal("handshake succeeded without trusting the CA")
		}
		testkit.Eventually(t, "handshake_failed counted", func() bool {
			v, _ := testkit.Lookup(t, e.reg, "dinie_proxy_tunnels_total", "result", "handshake_failed")
			return v == 1
		})
		lines := e.logs.FilterMessageSnippet("TLS handshake").All()
		if len(lines) != 1 {
			t.Fatalf("%d handshake warnings, want 1", len(lines))
		}
		hint, _ := lines[0].ContextMap()["hint"].(string)
		bundle := filepath.Join(filepath.Dir(e.caFile), "bundle.pem")
		for _, want := range []string{e.caFile, bundle, "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"} {
			if !strings.Contains(hint, want) {
				t.Errorf("hint %q does not name %s", hint, want)
			}
		}
		if v, _ := testkit.Lookup(t, e.reg, "dinie_proxy_tunnels_total", "result", "intercepted"); v != 0 {
			t.Errorf("intercepted = %v after a failed handshake", v)
		}
	})
}

func TestWithoutInterceptionTLSPortIsRefused(t *testing.T) {
	e := newEnv(t, false, func(_ *env, p *proxy.Config, _ *tokencache.Config) {
		u := *p.Upstream
		u.Host = "localhost:" + u.Port()
		p.Upstream = &u
	})
	resp, body := rawExchange(t, e, "CONNECT", "CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\n\r\n")
	assertProblem(t, resp, body, 405, proxy.CodeConnectNotSupported)
	if !strings.Contains(body, "intercept.enabled") {
		t.Errorf("405 body does not name intercept.enabled: %s", body)
	}
}
