package proxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/dinie/dinie-auth-proxy/internal/h1"
	"github.com/dinie/dinie-auth-proxy/internal/testkit"
	"github.com/dinie/dinie-auth-proxy/proxy"
	"github.com/dinie/dinie-auth-proxy/tokencache"
)

// seen is what the fake upstream received.
type seen struct {
	Method, Path, RawPath, Query, Host, Auth, ProxyAuth, RequestID, Body string
	Header                                                               http.Header
}

// env is a proxy in front of a fake Dinie: a token endpoint and an API.
type env struct {
	proxy    served
	handler  *proxy.Handler
	upstream *httptest.Server
	tokenEP  *httptest.Server
	reg      *prometheus.Registry
	tokens   *tokencache.Cache
	roots    *x509.CertPool // trusts the TLS upstream
	fetches  atomic.Int64
	calls    atomic.Int64
	// netServer puts the proxy behind net/http's server instead of
	// h1.Server.
	netServer bool
	// discardBodies makes the fake upstream read request bodies without
	// keeping them (seen.Body is empty), so that a benchmark counts the
	// proxy's allocations, not the upstream's copy.
	discardBodies bool

	mu   sync.Mutex
	seen []seen
	// api answers upstream requests; the default echoes 200.
	api func(w http.ResponseWriter, r *http.Request, s seen)
}

type envOption func(*env, *proxy.Config, *tokencache.Config)

// Every behaviour is tested on both upstream transports (h1.Transport, the
// default, and net/http's, kept for HTTP/2 upstreams) behind both servers
// (h1.Server, the default, and net/http's).
var transports = []struct {
	name string
	opt  envOption
}{
	{"h1", func(*env, *proxy.Config, *tokencache.Config) {}},
	{"standard", func(e *env, p *proxy.Config, _ *tokencache.Config) {
		p.Transport = standardTransport(e.roots, p.UpstreamTimeout)
	}},
}

var servers = []struct {
	name string
	opt  envOption
}{
	{"h1server", func(*env, *proxy.Config, *tokencache.Config) {}},
	{"netserver", func(e *env, _ *proxy.Config, _ *tokencache.Config) { e.netServer = true }},
}

// forEachSetup runs test for every server and transport.
func forEachSetup(t *testing.T, test func(t *testing.T, setup envOption)) {
	for _, srv := range servers {
		for _, tr := range transports {
			t.Run(srv.name+"/"+tr.name, func(t *testing.T) {
				test(t, func(e *env, p *proxy.Config, c *tokencache.Config) {
					srv.opt(e, p, c)
					tr.opt(e, p, c)
				})
			})
		}
	}
}

func newEnv(t testing.TB, tls bool, opts ...envOption) *env {
	t.Helper()
	e := &env{reg: prometheus.NewRegistry()}
	e.api = func(w http.ResponseWriter, r *http.Request, s seen) { io.WriteString(w, "ok") }
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.calls.Add(1)
		var body []byte
		if e.discardBodies {
			io.Copy(io.Discard, r.Body)
		} else {
			body, _ = io.ReadAll(r.Body)
		}
		s := seen{r.Method, r.URL.Path, r.URL.RawPath, r.URL.RawQuery, r.Host, r.Header.Get("Authorization"),
			r.Header.Get("Proxy-Authorization"), r.Header.Get("X-Request-Id"), string(body), r.Header.Clone()}
		e.mu.Lock()
		e.seen = append(e.seen, s)
		handler := e.api
		e.mu.Unlock()
		handler(w, r, s)
	})
	if tls {
		e.upstream = httptest.NewTLSServer(api)
	} else {
		e.upstream = httptest.NewServer(api)
	}
	t.Cleanup(e.upstream.Close)
	e.tokenEP = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := e.fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"fake-token-%d","token_type":"bearer","expires_in":3600}`, n)
	}))
	t.Cleanup(e.tokenEP.Close)

	up, _ := url.Parse(e.upstream.URL + "/api/v3")
	pcfg := proxy.Config{Upstream: up, Registerer: e.reg, UpstreamTimeout: 5 * time.Second,
		MaxReplayBytes: 1 << 20, ReplayBudgetBytes: 32 << 20, Retries: 2, RetryMaxWait: 10 * time.Second} // the keys' defaults
	if tls {
		e.roots = x509.NewCertPool()
		e.roots.AddCert(e.upstream.Certificate())
	}
	tcfg := tokencache.Config{TokenURL: e.tokenEP.URL + "/auth/token", ClientID: "fake-id", ClientSecret: "fake-secret"}
	for _, o := range opts {
		o(e, &pcfg, &tcfg)
	}
	if pcfg.Transport == nil {
		h1t, err := h1.NewTransport(up, h1.TransportConfig{ResponseHeaderTimeout: pcfg.UpstreamTimeout, RootCAs: e.roots})
		if err != nil {
			t.Fatal(err)
		}
		pcfg.Transport, pcfg.RecycleRequests = h1t, true
	}
	cache, err := tokencache.New(tcfg)
	if err != nil {
		t.Fatal(err)
	}
	pcfg.Tokens, e.tokens = cache, cache
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pcfg.ListenAddr = ln.Addr().String()
	if pcfg.NewServer == nil {
		pcfg.NewServer = func(h http.Handler) proxy.Server { return newServer(h, e.netServer, pcfg.RecycleRequests) }
	}
	h, err := proxy.New(pcfg)
	if err != nil {
		t.Fatal(err)
	}
	e.handler = h
	runServer(t, h, ln)
	e.proxy = served{"http://" + ln.Addr().String()}
	return e
}

// tokenClock is the token cache's clock for tests that need 10 s to pass
// between two 401s, which may cause one token fetch per 10 s: the real
// time, plus an offset that advance moves on.
type tokenClock struct{ offset atomic.Int64 }

func (c *tokenClock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

func (c *tokenClock) NewTimer(d time.Duration) tokencache.Timer {
	return tokencache.RealClock{}.NewTimer(d)
}

func (c *tokenClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// withTokenClock gives the token cache c.
func withTokenClock(c *tokenClock) envOption {
	return func(_ *env, _ *proxy.Config, tc *tokencache.Config) { tc.Clock = c }
}

// newServer is h1.Server or net/http's, as the proxy's own tests set them
// up; h1.Server recycles requests when the handler's transport allows it
// (recycle: Config.RecycleRequests), as the app sets it up.
func newServer(h http.Handler, netServer, recycle bool) proxy.Server {
	if netServer {
		return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	}
	return &h1.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, RecycleRequests: recycle}
}

// served is the proxy as the tests reach it.
type served struct{ URL string }

// serve starts h on a loopback port, behind h1.Server or net/http's server
// (recycle as newServer's).
func serve(t testing.TB, h http.Handler, netServer, recycle bool) served {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, ln, h, netServer, recycle)
}

func serveOn(t testing.TB, ln net.Listener, h http.Handler, netServer, recycle bool) served {
	if netServer {
		srv := httptest.NewUnstartedServer(h)
		srv.Listener.Close()
		srv.Listener = ln
		srv.Start()
		t.Cleanup(srv.Close)
		return served{srv.URL}
	}
	runServer(t, newServer(h, false, recycle), ln)
	return served{"http://" + ln.Addr().String()}
}

// runServer serves ln with srv until the test ends, and then closes srv
// and waits for Serve to return.
func runServer(t testing.TB, srv proxy.Server, ln net.Listener) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
}

// standardTransport is net/http's transport as main sets it up for
// upstream.transport: standard.
func standardTransport(roots *x509.CertPool, timeout time.Duration) *http.Transport {
	return &http.Transport{
		ForceAttemptHTTP2:     true,
		DisableCompression:    true,
		ResponseHeaderTimeout: timeout,
		TLSClientConfig:       &tls.Config{RootCAs: roots},
	}
}

func (e *env) setAPI(f func(w http.ResponseWriter, r *http.Request, s seen)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.api = f
}

func (e *env) last(t testing.TB) seen {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.seen) == 0 {
		t.Fatal("the upstream received nothing")
	}
	return e.seen[len(e.seen)-1]
}

func do(t *testing.T, client *http.Client, method, target string, body io.Reader, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, target, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func noRedirects() *http.Client {
	return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func TestBaseURLMode(t *testing.T) { forEachSetup(t, testBaseURLMode) }

func testBaseURLMode(t *testing.T, setup envOption) {
	tests := []struct {
		target, wantPath, wantRawPath, wantQuery string
	}{
		{"/customers?limit=10", "/api/v3/customers", "", "limit=10"},
		{"/api/v3/customers?limit=10", "/api/v3/customers", "", "limit=10"},
		{"/api/v3", "/api/v3", "", ""},
		{"/", "/api/v3/", "", ""},
		{"/api/v3x/y", "/api/v3/api/v3x/y", "", ""},
		{"/files/a%2Fb", "/api/v3/files/a/b", "/api/v3/files/a%2Fb", ""},
	}
	e := newEnv(t, true, setup)
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			resp, _ := do(t, http.DefaultClient, "GET", e.proxy.URL+tt.target, nil)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			s := e.last(t)
			if s.Path != tt.wantPath || s.RawPath != tt.wantRawPath || s.Query != tt.wantQuery {
				t.Errorf("upstream saw path %q raw %q query %q, want %q %q %q", s.Path, s.RawPath, s.Query, tt.wantPath, tt.wantRawPath, tt.wantQuery)
			}
			if s.Auth != "Bearer fake-token-1" {
				t.Error("upstream did not get the Bearer token")
			}
			if s.Host != strings.TrimPrefix(e.upstream.URL, "https://") {
				t.Errorf("Host = %q, want the upstream's", s.Host)
			}
		})
	}
}

func TestInboundCredentialsAndHopByHopHeadersAreDropped(t *testing.T) {
	forEachSetup(t, testInboundCredentialsAndHopByHopHeadersAreDropped)
}

func testInboundCredentialsAndHopByHopHeadersAreDropped(t *testing.T, setup envOption) {
	e := newEnv(t, false, setup)
	do(t, http.DefaultClient, "GET", e.proxy.URL+"/customers", nil,
		"Authorization", "Bearer fake-app-token",
		"Proxy-Authorization", "Basic fake-proxy-credentials",
		"Connection", "X-Hop",
		"X-Hop", "1",
		"X-Kept", "1")
	s := e.last(t)
	if s.Auth != "Bearer fake-token-1" || s.ProxyAuth != "" {
		t.Error("inbound credentials reached the upstream")
	}
	if s.Header.Get("X-Hop") != "" || s.Header.Get("X-Kept") != "1" {
		t.Errorf("hop-by-hop handling wrong: X-Hop=%q X-Kept=%q", s.Header.Get("X-Hop"), s.Header.Get("X-Kept"))
	}
}

func TestHTTPProxyMode(t *testing.T) { forEachSetup(t, testHTTPProxyMode) }

func testHTTPProxyMode(t *testing.T, setup envOption) {
	e := newEnv(t, true, setup)
	up, _ := url.Parse(e.upstream.URL)
	proxyURL, _ := url.Parse(e.proxy.URL)
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}

	// The app keeps Dinie's URL with the http scheme; we forward over HTTPS
	// to the upstream's port.
	resp, _ := do(t, client, "GET", "http://"+strings.ToUpper(up.Hostname())+"/api/v3/customers?limit=1", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if s := e.last(t); s.Path != "/api/v3/customers" || s.Query != "limit=1" || s.Auth != "Bearer fake-token-1" {
		t.Errorf("upstream saw %s?%s", s.Path, s.Query)
	}

	// Any other host is refused, and nothing leaves.
	var stolen atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { stolen.Add(1) }))
	defer other.Close()
	before := e.calls.Load()
	resp, body := do(t, client, "GET", other.URL+"/api/v3/customers", nil)
	assertProblem(t, resp, body, 403, proxy.CodeHostNotAllowed)
	if stolen.Load() != 0 || e.calls.Load() != before {
		t.Error("a request for another host was forwarded")
	}
}

func TestCONNECTIsRefused(t *testing.T) { forEachSetup(t, testCONNECTIsRefused) }

func testCONNECTIsRefused(t *testing.T, setup envOption) {
	e := newEnv(t, false, setup)
	host := strings.Split(strings.TrimPrefix(e.upstream.URL, "http://"), ":")[0]
	// The upstream's TLS port: 405, and the status line says what to do.
	resp, body := rawExchange(t, e, "CONNECT", "CONNECT "+host+":443 HTTP/1.1\r\nHost: "+host+":443\r\n\r\n")
	assertProblem(t, resp, body, 405, proxy.CodeConnectNotSupported)
	if want := "405 Use http:// with HTTP_PROXY, or the proxy as base URL"; resp.Status != want {
		t.Errorf("status line %q, want %q", resp.Status, want)
	}
	// Any other host or port: 403, and no tunnel.
	for _, target := range []string{"api.dinie.com.br:443", "evil.example:80", host + ":8443"} {
		resp, body = rawExchange(t, e, "CONNECT", "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
		assertProblem(t, resp, body, 403, proxy.CodeHostNotAllowed)
		if !strings.HasPrefix(resp.Status, "403 Only "+host+" goes through this proxy") {
			t.Errorf("CONNECT %s: status line %q does not say what to do", target, resp.Status)
		}
	}
	if v := testkit.Value(t, e.reg, "dinie_proxy_tunnels_total", "result", "refused"); v != 4 {
		t.Errorf("refused tunnels = %v, want 4", v)
	}
}

// rawExchange sends a request written by hand, for what net/http's client
// will not send, and reads the answer.
func rawExchange(t *testing.T, e *env, method, request string) (*http.Response, string) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.proxy.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second)) // a wrong answer fails, not hangs
	fmt.Fprint(conn, request)
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func assertProblem(t *testing.T, resp *http.Response, body string, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("status = %d, want %d", resp.StatusCode, status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type = %q", ct)
	}
	var p struct {
		Type, Title, Detail, Code string
		Status                    int
	}
	if err := json.Unmarshal([]byte(body), &p); err != nil {
		t.Fatalf("body is not JSON: %v", err)
	}
	if p.Code != code || p.Status != status || p.Type == "" || p.Title == "" || p.Detail == "" {
		t.Errorf("problem = %+v, want code %s status %d with type, title, detail", p, code, status)
	}
}

func TestErrorsAreProblems(t *testing.T) { forEachSetup(t, testErrorsAreProblems) }

func testErrorsAreProblems(t *testing.T, setup envOption) {
	t.Run("502 upstream closed before answering", func(t *testing.T) {
		e := newEnv(t, false, setup)
		e.setAPI(func(w http.ResponseWriter, r *http.Request, s seen) {
			conn, _, _ := http.NewResponseController(w).Hijack()
			conn.Close()
		})
		resp, body := do(t, http.DefaultClient, "GET", e.proxy.URL+"/customers", nil)
		assertProblem(t, resp, body, 502, proxy.CodeUpstreamUnreachable)
	})
	t.Run("502 upstream refuses connections", func(t *testing.T) {
		e := newEnv(t, false, setup)
		e.upstream.Close()
		resp, body := do(t, http.DefaultClient, "GET", e.proxy.URL+"/customers", nil)
		assertProblem(t, resp, body, 502, proxy.CodeUpstreamUnreachable)
	})
	t.Run("503 credentials rejected", func(t *testing.T) {
		e := newEnv(t, false, setup)
		e.tokenEP.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(401)
			io.WriteString(w, `{"type":"about:blank","title":"Unauthorized","status":401,"detail":"fake","code":"invalid_client"}`)
		})
		resp, body := do(t, http.DefaultClient, "GET", e.proxy.URL+"/customers", nil)
		assertProblem(t, resp, body, 503, proxy.CodeTokenUnavailable)
		if !strings.Contains(body, "credentials rejected") {
			t.Errorf("detail does not say why: %s", body)
		}
		if e.calls.Load() != 0 {
			t.Error("the request went upstream without a token")
		}
	})
	t.Run("504 upstream too slow", func(t *testing.T) {
		release := make(chan struct{})
		e := newEnv(t, false, func(_ *env, p *proxy.Config, _ *tokencache.Config) { p.UpstreamTimeout = 50 * time.Millisecond }, setup)
		defer close(release)
		e.setAPI(func(w http.ResponseWriter, r *http.Request, s seen) { <-release })
		resp, body := do(t, http.DefaultClient, "GET", e.proxy.URL+"/customers", nil)
		assertProblem(t, resp, body, 504, proxy.CodeUpstreamTimeout)
	})
}

func TestUpstream401IsRetriedOnceWithAFreshToken(t *testing.T) {
	forEachSetup(t, testUpstream401IsRetriedOnceWithAFreshToken)
}

func testUpstream401IsRetriedOnceWithAFreshToken(t *testing.T, setup envOption) {
	tests := []struct {
		name   string
		method string
		body   string
	}{
		{"GET", "GET", ""},
		{"POST with body", "POST", `{"amount":1000}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, false, setup)
			e.setAPI(func(w http.ResponseWriter, r *http.Request, s seen) {
				if s.Auth == "Bearer fake-token-1" {
					w.WriteHeader(401)
					io.WriteString(w, `{"code":"token_expired"}`)
					return
				}
				io.WriteString(w, "ok:"+s.Body)
			})
			resp, body := do(t, http.DefaultClient, tt.method, e.proxy.URL+"/charges", strings.NewReader(tt.body))
			if resp.StatusCode != 200 || body != "ok:"+tt.body {
				t.Fatalf("app got %d %q, want 200 with the body replayed", resp.StatusCode, body)
			}
			if e.calls.Load() != 2 || e.fetches.Load() != 2 {
				t.Errorf("upstream calls = %d, token fetches = %d; want 2 and 2", e.calls.Load(), e.fetches.Load())
			}
			if v := testkit.Value(t, e.reg, "dinie_proxy_upstream_401_retries_total"); v != 1 {
				t.Errorf("retries metric = %v, want 1", v)
			}
		})
	}
}

func TestAccessLogLine(t *testing.T) { forEachSetup(t, testAccessLogLine) }

func testAccessLogLine(t *testing.T, setup envOption) {
	core, logs := observer.New(zap.InfoLevel)
	e := newEnv(t, false, setup, func(_ *env, p *proxy.Config, _ *tokencache.Config) { p.Logger = zap.New(core) })
	e.setAPI(func(w http.ResponseWriter, r *http.Request, s seen) {
		if s.Auth == "Bearer fake-token-1" {
			w.WriteHeader(401)
			return
		}
		io.WriteString(w, "ok")
	})
	do(t, http.DefaultClient, "GET", e.proxy.URL+"/customers?secret-looking=query", nil, "X-Request-Id", "req-log-1")
	lines := logs.FilterMessage("request").All()
	if len(lines) != 1 {
		t.Fatalf("%d access lines, want 1", len(lines))
	}
	got := lines[0].ContextMap()
	for key, want := range map[string]any{
		"method": "GET", "path": "/customers", "status": int64(200), "bytes": int64(2),
		"request_id": "req-log-1", "retried_401": true,
	} {
		if got[key] != want {
			t.Errorf("access line %s = %v, want %v", key, got[key], want)
		}
	}
	if _, ok := got["duration"]; !ok {
		t.Error("access line has no duration")
	}
}

func TestSecond401GoesToTheApp(t *testing.T) { forEachSetup(t, testSecond401GoesToTheApp) }

func testSecond401GoesToTheApp(t *testing.T, setup envOption) {
	e := newEnv(t, false, setup)
	e.setAPI(func(w http.ResponseWriter, r *http.Request, s seen) { w.WriteHeader(401) })
	resp, _ := do(t, http.DefaultClient, "POST", e.proxy.URL+"/charges", strings.NewReader("x"))
	if resp.StatusCode != 401 {
		t.Errorf("status = %d, want 401", resp.StatusCode)
	}
	if e.calls.Load() != 2 {
		t.Errorf("upstream calls = %d, want 2: one try and one retry, never a loop", e.calls.Load())
	}
}

func TestBodyOverReplayBoundStreamsAndIsNotRetried(t *testing.T) {
	forEachSetup(t, testBodyOverReplayBoundStreamsAndIsNotRetried)
}

func testBodyOverReplayBoundStreamsAndIsNotRetried(t *testing.T, setup envOption) {
	e := newEnv(t, false, setup, func(_ *env, p *proxy.Config, _ *tokencache.Config) { p.MaxReplayBytes = 1024 })
	e.setAPI(func(w http.ResponseWriter, r *http.Request, s seen) { w.WriteHeader(401) })
	big := strings.Repeat("x", 4096)
	resp, _ := do(t, http.DefaultClient, "POST", e.proxy.URL+"/uploads", io.MultiReader(strings.NewReader(big))) // unknown length
	if resp.StatusCode != 401 {
		t.Errorf("status = %d, want the upstream's 401", resp.StatusCode)
	}
	if e.calls.Load() != 1 {
		t.Errorf("upstream calls = %d, want 1", e.calls.Load())
	}
	if s := e.last(t); s.Body != big {
		t.Errorf("upstream got %d bytes, want %d", len(s.Body), len(big))
	}
}

func Test401StormCausesOneRefetch(t *testing.T) { forEachSetup(t, test401StormCausesOneRefetch) }

func test401StormCausesOneRefetch(t *testing.T, setup envOption) {
	e := newEnv(t, false, setup)
	var gate sync.WaitGroup
	gate.Add(1)
	// Every request holds token 1 before any of the 401s lands.
	e.setAPI(func(w http.ResponseWriter, r *http.Request, s seen) {
		if s.Auth == "Bearer fake-token-1" {
			gate.Wait()
			w.WriteHeader(401)
		}
	})
	const n = 100
	var wg sync.WaitGroup
	var bad atomic.Int64
	for range n {
		wg.Go(func() {
			resp, err := http.Get(e.proxy.URL + "/customers")
			if err != nil || resp.StatusCode != 200 {
				bad.Add(1)
			}
			if resp != nil {
				resp.Body.Close()
			}
		})
	}
	testkit.Eventually(t, "all requests upstream", func() bool { return e.calls.Load() >= n })
	gate.Done()
	wg.Wait()
	if bad.Load() != 0 {
		t.Errorf("%d requests failed", bad.Load())
	}
	if f := e.fetches.Load(); f != 2 {
		t.Errorf("token fetches = %d, want 2: one at start, one after the storm", f)
	}
}

func TestClientGoneWhileWaitingForATokenIsNotA503(t *testing.T) {
	forEachSetup(t, testClientGoneWhileWaitingForATokenIsNotA503)
}

func testClientGoneWhileWaitingForATokenIsNotA503(t *testing.T, setup envOption) {
	e := newEnv(t, false, setup)
	release := make(chan struct{})
	defer close(release)
	e.tokenEP.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release })
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, "GET", e.proxy.URL+"/customers", nil)
	go func() {
		testkit.Eventually(t, "the request to wait for a token", func() bool {
			return testkit.Value(t, e.reg, "dinie_proxy_requests_in_flight") == 1
		})
		cancel()
	}()
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("the cancelled request succeeded")
	}
	testkit.Eventually(t, "the request to be counted", func() bool {
		v, _ := testkit.Lookup(t, e.reg, "dinie_proxy_requests_total", "code", "499")
		return v == 1
	})
}

func TestAppHangingUpEndsTheUpstreamRequest(t *testing.T) {
	forEachSetup(t, testAppHangingUpEndsTheUpstreamRequest)
}

func testAppHangingUpEndsTheUpstreamRequest(t *testing.T, setup envOption) {
	// Longer than the test waits: only the hang-up may end the wait.
	patient := func(_ *env, p *proxy.Config, _ *tokencache.Config) { p.UpstreamTimeout = time.Minute }
	e := newEnv(t, false, patient, setup)
	entered, upstreamGone, release := make(chan struct{}), make(chan struct{}), make(chan struct{})
	defer close(release)
	e.setAPI(func(w http.ResponseWriter, r *http.Request, s seen) {
		close(entered)
		select {
		case <-r.Context().Done(): // the proxy dropped the upstream connection
			close(upstreamGone)
		case <-release:
		}
	})
	app, err := net.Dial("tcp", strings.TrimPrefix(e.proxy.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(app, "GET /customers HTTP/1.1\r\nHost: x\r\n\r\n")
	<-entered
	app.Close()
	select {
	case <-upstreamGone:
	case <-time.After(10 * time.Second):
		t.Fatal("the proxy still waits for the upstream's answer to an app that hung up")
	}
}

func TestBrokenRequestBodyIsTheClientsFault(t *testing.T) {
	forEachSetup(t, testBrokenRequestBodyIsTheClientsFault)
}

func testBrokenRequestBodyIsTheClientsFault(t *testing.T, setup envOption) {
	e := newEnv(t, false, setup)
	resp, body := rawExchange(t, e, "POST", "POST /charges HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\nzz\r\n")
	assertProblem(t, resp, body, 400, proxy.CodeBadRequestBody)
}

func TestResponseCutMidBodyIsStillCounted(t *testing.T) {
	forEachSetup(t, testResponseCutMidBodyIsStillCounted)
}

func testResponseCutMidBodyIsStillCounted(t *testing.T, setup envOption) {
	e := newEnv(t, false, setup)
	e.setAPI(func(w http.ResponseWriter, r *http.Request, s seen) {
		w.Header().Set("Content-Length", "1000")
		io.WriteString(w, "partial")
		http.NewResponseController(w).Flush()
		conn, _, _ := http.NewResponseController(w).Hijack()
		conn.Close()
	})
	// The app sees the connection close, before or after the headers
	// depending on buffering, but never a complete answer.
	if resp, err := http.Get(e.proxy.URL + "/cut"); err == nil {
		if _, err := io.ReadAll(resp.Body); err == nil {
			t.Error("the app read a cut response as complete")
		}
		resp.Body.Close()
	}
	testkit.Eventually(t, "the cut request to be counted", func() bool {
		v, _ := testkit.Lookup(t, e.reg, "dinie_proxy_requests_total", "code", "200")
		return v == 1
	})
}

// Per-request state is recycled: nothing of one request may reach the
// next one's upstream request.
func TestNothingCarriesOverToTheNextRequest(t *testing.T) {
	forEachSetup(t, testNothingCarriesOverToTheNextRequest)
}

func testNothingCarriesOverToTheNextRequest(t *testing.T, setup envOption) {
	e := newEnv(t, false, setup)
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	for i := range 3 {
		do(t, client, "POST", e.proxy.URL+"/first", strings.NewReader("a body"), "X-First", "1", "X-Request-Id", "app-chosen-id")
		do(t, client, "GET", e.proxy.URL+"/second", nil)
		s := e.last(t)
		if len(s.Header["X-First"]) > 0 || s.RequestID == "app-chosen-id" || s.RequestID == "" || s.Body != "" || s.Method != "GET" {
			t.Fatalf("round %d: the second request went up as %s with X-First %q, X-Request-Id %q, body %q",
				i, s.Method, s.Header["X-First"], s.RequestID, s.Body)
		}
	}
}

func TestRedirectsArePassedBack(t *testing.T) { forEachSetup(t, testRedirectsArePassedBack) }

func testRedirectsArePassedBack(t *testing.T, setup envOption) {
	e := newEnv(t, false, setup)
	e.setAPI(func(w http.ResponseWriter, r *http.Request, s seen) {
		if s.Path == "/api/v3/old" {
			http.Redirect(w, r, "https://elsewhere.example/new", http.StatusFound)
		}
	})
	resp, _ := do(t, noRedirects(), "GET", e.proxy.URL+"/old", nil)
	if resp.StatusCode != 302 || resp.Header.Get("Location") != "https://elsewhere.example/new" {
		t.Errorf("got %d Location %q, want the 302 passed back", resp.StatusCode, resp.Header.Get("Location"))
	}
	if e.calls.Load() != 1 {
		t.Errorf("upstream calls = %d, want 1: redirects are not followed", e.calls.Load())
	}
}

func TestRequestIDIsPassedOrGenerated(t *testing.T) {
	forEachSetup(t, testRequestIDIsPassedOrGenerated)
}

func testRequestIDIsPassedOrGenerated(t *testing.T, setup envOption) {
	e := newEnv(t, false, setup)
	do(t, http.DefaultClient, "GET", e.proxy.URL+"/a", nil, "X-Request-Id", "req-123")
	if id := e.last(t).RequestID; id != "req-123" {
		t.Errorf("X-Request-Id = %q, want it passed on", id)
	}
	do(t, http.DefaultClient, "GET", e.proxy.URL+"/b", nil)
	generated := e.last(t).RequestID
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(generated) {
		t.Errorf("generated X-Request-Id = %q, want 16 hex digits", generated)
	}
	do(t, http.DefaultClient, "GET", e.proxy.URL+"/c", nil, "X-Request-Id", "")
	if id := e.last(t).RequestID; id == "" || id == generated {
		t.Errorf("an empty X-Request-Id went upstream as %q, not as a new one", id)
	}
}

func TestServerSentEventsAreFlushedAsTheyArrive(t *testing.T) {
	forEachSetup(t, testServerSentEventsAreFlushedAsTheyArrive)
}

func testServerSentEventsAreFlushedAsTheyArrive(t *testing.T, setup envOption) {
	e := newEnv(t, false, setup)
	release := make(chan struct{})
	e.setAPI(func(w http.ResponseWriter, r *http.Request, s seen) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: first\n\n")
		http.NewResponseController(w).Flush()
		<-release
		io.WriteString(w, "data: second\n\n")
	})
	resp, err := http.Get(e.proxy.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(resp.Body).ReadString('\n')
		first <- line
	}()
	select {
	case line := <-first:
		if line != "data: first\n" {
			t.Errorf("first line = %q", line)
		}
	case <-time.After(10 * time.Second):
		t.Error("the first event was held back until the stream ended")
	}
	close(release)
}

func TestRateLimitGauges(t *testing.T) { forEachSetup(t, testRateLimitGauges) }

func testRateLimitGauges(t *testing.T, setup envOption) {
	e := newEnv(t, false, setup)
	headers := map[string]string{}
	var mu sync.Mutex
	e.setAPI(func(w http.ResponseWriter, r *http.Request, s seen) {
		mu.Lock()
		defer mu.Unlock()
		for k, v := range headers {
			w.Header().Set(k, v)
		}
	})
	send := func(h map[string]string) {
		mu.Lock()
		headers = h
		mu.Unlock()
		do(t, http.DefaultClient, "GET", e.proxy.URL+"/x", nil)
	}
	check := func(step string, limit, remaining, reset float64) {
		t.Helper()
		for name, want := range map[string]float64{
			"dinie_proxy_upstream_ratelimit_limit":                   limit,
			"dinie_proxy_upstream_ratelimit_remaining":               remaining,
			"dinie_proxy_upstream_ratelimit_reset_timestamp_seconds": reset,
		} {
			if got := testkit.Value(t, e.reg, name); got != want {
				t.Errorf("%s: %s = %v, want %v", step, name, got, want)
			}
		}
	}
	send(map[string]string{"X-RateLimit-Limit": "1000", "X-RateLimit-Remaining": "999", "X-RateLimit-Reset": "1772366400"})
	check("present", 1000, 999, 1772366400)
	send(map[string]string{})
	check("absent", 1000, 999, 1772366400)
	send(map[string]string{"X-RateLimit-Limit": "lots", "X-RateLimit-Remaining": "-1", "X-RateLimit-Reset": "NaN"})
	check("malformed", 1000, 999, 1772366400)
	send(map[string]string{"X-RateLimit-Remaining": "998"})
	check("partial", 1000, 998, 1772366400)
}

func TestRequestMetrics(t *testing.T) { forEachSetup(t, testRequestMetrics) }

func testRequestMetrics(t *testing.T, setup envOption) {
	e := newEnv(t, false, setup)
	do(t, http.DefaultClient, "GET", e.proxy.URL+"/a", nil)
	proxyURL, _ := url.Parse(e.proxy.URL)
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	do(t, client, "GET", "http://forbidden.example/api/v3/a", nil)
	want := `
# HELP dinie_proxy_requests_total Proxied requests by method and status, the proxy's own error answers included.
# TYPE dinie_proxy_requests_total counter
dinie_proxy_requests_total{code="200",method="get"} 1
dinie_proxy_requests_total{code="403",method="get"} 1
`
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(want), "dinie_proxy_requests_total"); err != nil {
		t.Error(err)
	}
	if n, _ := testutil.GatherAndCount(e.reg, "dinie_proxy_request_duration_seconds"); n != 2 {
		t.Errorf("duration series = %d, want 2", n)
	}
}

func TestForwardingRulesOfAReverseProxy(t *testing.T) {
	forEachSetup(t, testForwardingRulesOfAReverseProxy)
}

func testForwardingRulesOfAReverseProxy(t *testing.T, setup envOption) {
	e := newEnv(t, false, setup)
	e.setAPI(func(w http.ResponseWriter, r *http.Request, s seen) {
		w.Header().Set("Trailer", "X-Checksum")
		w.Header().Set("Connection", "X-Resp-Hop")
		w.Header().Set("X-Resp-Hop", "1")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-End", "1")
		io.WriteString(w, "ok")
		w.Header().Set("X-Checksum", "fake-sum")
	})
	req, _ := http.NewRequestWithContext(t.Context(), "GET", e.proxy.URL+"/customers", nil)
	req.Header["User-Agent"] = []string{""} // Go's client then sends none
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
	req.Header.Set("Forwarded", "for=203.0.113.7")
	req.Header.Set("Te", "trailers")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()

	s := e.last(t)
	if ua, ok := s.Header["User-Agent"]; ok {
		t.Errorf("upstream got User-Agent %q, want none as the app sent", ua)
	}
	if s.Header.Get("X-Forwarded-For") != "" || s.Header.Get("Forwarded") != "" {
		t.Error("the app's forwarding headers reached the upstream")
	}
	if s.Header.Get("Te") != "trailers" {
		t.Errorf("Te = %q, want the app's trailers", s.Header.Get("Te"))
	}
	if s.RequestID == "" {
		t.Error("no X-Request-Id upstream")
	}
	if string(body) != "ok" || resp.Header.Get("X-End") != "1" {
		t.Errorf("answer %q X-End=%q", body, resp.Header.Get("X-End"))
	}
	if resp.Header.Get("X-Resp-Hop") != "" || resp.Header.Get("Keep-Alive") != "" {
		t.Error("the upstream's hop-by-hop headers reached the app")
	}
	if got := resp.Trailer.Get("X-Checksum"); got != "fake-sum" {
		t.Errorf("trailer X-Checksum = %q, want it passed on", got)
	}

}

// A client that sends "Expect: 100-continue" waits for the go-ahead before
// the body. A request refused before its body is read must be answered, not
// left waiting for a body nobody asked for.
func TestRefusedExpectContinueRequestIsAnswered(t *testing.T) {
	forEachSetup(t, testRefusedExpectContinueRequestIsAnswered)
}

func testRefusedExpectContinueRequestIsAnswered(t *testing.T, setup envOption) {
	e := newEnv(t, false, setup)
	e.tokenEP.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(401)
	})
	client := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: time.Hour}}
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", e.proxy.URL+"/customers", strings.NewReader(`{"name":"fake"}`))
	req.Header.Set("Expect", "100-continue")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503", resp.StatusCode)
	}
}

// Trailers the upstream did not announce are only known at the end of the
// body, after the app's headers went out: the answer must be chunked for
// them to reach the app.
func TestUnannouncedTrailersArePassedOn(t *testing.T) {
	forEachSetup(t, testUnannouncedTrailersArePassedOn)
}

func testUnannouncedTrailersArePassedOn(t *testing.T, setup envOption) {
	for _, body := range []string{"ok", ""} {
		e := newEnv(t, false, setup)
		e.setAPI(func(w http.ResponseWriter, r *http.Request, s seen) {
			io.WriteString(w, body)
			// Flushed, or the test server itself would drop the trailer.
			http.NewResponseController(w).Flush()
			w.Header().Set(http.TrailerPrefix+"X-Late", "fake-late")
		})
		resp, err := http.Get(e.proxy.URL + "/customers")
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := resp.Trailer.Get("X-Late"); got != "fake-late" {
			t.Errorf("body %q: trailer X-Late = %q, want it passed on", body, got)
		}
	}
}

// An event stream's status line must reach the app before its first event,
// which may take long: EventSource's onopen and clients with a header
// timeout wait for it.
func TestEventStreamHeadersArriveBeforeTheFirstEvent(t *testing.T) {
	forEachSetup(t, testEventStreamHeadersArriveBeforeTheFirstEvent)
}

func testEventStreamHeadersArriveBeforeTheFirstEvent(t *testing.T, setup envOption) {
	e := newEnv(t, false, setup)
	release := make(chan struct{})
	defer close(release)
	e.setAPI(func(w http.ResponseWriter, r *http.Request, s seen) {
		w.Header().Set("Content-Type", "text/event-stream")
		http.NewResponseController(w).Flush()
		<-release
	})
	client := &http.Client{Transport: &http.Transport{ResponseHeaderTimeout: 5 * time.Second}}
	defer client.CloseIdleConnections()
	resp, err := client.Get(e.proxy.URL + "/events")
	if err != nil {
		t.Fatalf("no headers before the first event: %v", err)
	}
	resp.Body.Close()
}

// The handler leaves the app's request as it came: the token it injects
// must never be readable from it, by a logging middleware for one.
func TestTheAppsRequestIsLeftUnchanged(t *testing.T) {
	e := newEnv(t, false)
	req := httptest.NewRequest("GET", "/customers", nil)
	req.Header.Set("Authorization", "Bearer fake-app-token")
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "1")
	before := req.Header.Clone()
	e.handler.ServeHTTP(httptest.NewRecorder(), req)
	if e.last(t).Auth != "Bearer fake-token-1" {
		t.Fatal("the upstream did not get the token")
	}
	if !reflect.DeepEqual(req.Header, before) {
		// Names only: the values may hold the token.
		t.Errorf("the app's request headers changed: %v, were %v", slices.Sorted(maps.Keys(req.Header)), slices.Sorted(maps.Keys(before)))
	}
}

func TestUnrequested101IsA502ThatSaysSo(t *testing.T) {
	forEachSetup(t, testUnrequested101IsA502ThatSaysSo)
}

func testUnrequested101IsA502ThatSaysSo(t *testing.T, setup envOption) {
	e := newEnv(t, false, setup)
	e.setAPI(func(w http.ResponseWriter, r *http.Request, s seen) {
		conn, brw, _ := http.NewResponseController(w).Hijack()
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		brw.Flush()
	})
	resp, body := do(t, http.DefaultClient, "GET", e.proxy.URL+"/customers", nil)
	assertProblem(t, resp, body, 502, proxy.CodeUpstreamUnreachable)
	if !strings.Contains(body, "101 Switching Protocols") || strings.Contains(body, "closed the connection") {
		t.Errorf("problem %s does not say that the upstream switched protocols", body)
	}
}
