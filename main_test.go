package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dinie/dinie-auth-proxy/internal/testkit"
)

const (
	testSecret = "fake-e2e-secret"
	tokenStem  = "fake-e2e-token-"
)

var update = flag.Bool("update", false, "rewrite deploy/metrics.txt from a real scrape")

// fakeDinie is a token endpoint and an API behind TLS, as in production.
type fakeDinie struct {
	*httptest.Server
	caFile   string
	fetches  atomic.Int64
	reject   atomic.Bool
	apiCalls atomic.Int64
	api      atomic.Pointer[http.HandlerFunc]
}

func newFakeDinie(t *testing.T) *fakeDinie {
	t.Helper()
	d := &fakeDinie{}
	d.setAPI(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-RateLimit-Limit", "100")
		w.Header().Set("X-RateLimit-Remaining", "42")
		w.Header().Set("X-RateLimit-Reset", "1772366400")
		fmt.Fprintf(w, "%s %s auth=%s", r.Method, r.URL.RequestURI(), r.Header.Get("Authorization"))
	})
	d.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v3/auth/token" {
			if _, secret, _ := r.BasicAuth(); d.reject.Load() || secret != testSecret {
				w.Header().Set("Content-Type", "application/problem+json")
				w.WriteHeader(401)
				io.WriteString(w, `{"type":"about:blank","title":"Unauthorized","status":401,"detail":"fake rejection","code":"invalid_client"}`)
				return
			}
			n := d.fetches.Add(1)
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"access_token":"%s%d","token_type":"bearer","expires_in":3600}`, tokenStem, n)
			return
		}
		d.apiCalls.Add(1)
		(*d.api.Load())(w, r)
	}))
	t.Cleanup(d.Close)
	d.caFile = filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d.Certificate().Raw})
	if err := os.WriteFile(d.caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return d
}

func (d *fakeDinie) setAPI(h http.HandlerFunc) { d.api.Store(&h) }

// env returns the environment a test run gets: the fake Dinie, trusted
// through upstream.ca_file, and free ports.
func (d *fakeDinie) env(extra ...string) map[string]string {
	m := map[string]string{
		"DINIE_PROXY_UPSTREAM_URL":       d.URL + "/api/v3",
		"DINIE_PROXY_UPSTREAM_CA_FILE":   d.caFile,
		"DINIE_PROXY_AUTH_CLIENT_ID":     "fake-e2e-client",
		"DINIE_PROXY_AUTH_CLIENT_SECRET": testSecret,
		"DINIE_PROXY_LISTEN_PROXY":       "127.0.0.1:0",
		"DINIE_PROXY_LISTEN_ADMIN":       "127.0.0.1:0",
		"DINIE_PROXY_LOG_LEVEL":          "debug",
		"DINIE_PROXY_SHUTDOWN_TIMEOUT":   "10s",
	}
	for i := 0; i+1 < len(extra); i += 2 {
		m[extra[i]] = extra[i+1]
	}
	return m
}

// running is a run(...) in progress.
type running struct {
	proxy, admin string // base URLs
	stdout       *testkit.SyncBuffer
	stderr       *testkit.SyncBuffer
	stop         context.CancelFunc
	done         chan error
}

func start(t *testing.T, env map[string]string, args ...string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	r := &running{stdout: &testkit.SyncBuffer{}, stderr: &testkit.SyncBuffer{}, stop: cancel, done: make(chan error, 1)}
	go func() { r.done <- run(ctx, args, func(k string) string { return env[k] }, r.stdout, r.stderr) }()
	t.Cleanup(func() {
		cancel()
		<-r.done
		assertNoSecrets(t, "logs", r.stderr.String()+r.stdout.String())
	})
	testkit.Eventually(t, "the listening log line", func() bool {
		for line := range strings.Lines(r.stderr.String()) {
			var entry struct{ Msg, ProxyAddr, AdminAddr string }
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "listening" {
				entry.ProxyAddr, entry.AdminAddr = m["proxy_addr"].(string), m["admin_addr"].(string)
				r.proxy, r.admin = "http://"+entry.ProxyAddr, "http://"+entry.AdminAddr
				return true
			}
		}
		select {
		case err := <-r.done:
			t.Fatalf("run ended early: %v\n%s", err, r.stderr.String())
		default:
		}
		return false
	})
	return r
}

func assertNoSecrets(t *testing.T, where, text string) {
	t.Helper()
	if strings.Contains(text, testSecret) || strings.Contains(text, tokenStem) {
		t.Errorf("%s hold the client secret or a token", where)
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitReady(t *testing.T, r *running) {
	t.Helper()
	testkit.Eventually(t, "readiness", func() bool { code, _ := httpGet(t, r.admin+"/readyz"); return code == 200 })
}

// TestEndToEnd runs the defaults, and each of net/http's server and
// transport in place of ours.
func TestEndToEnd(t *testing.T) {
	for _, c := range []struct{ server, transport string }{{"http1", "http1"}, {"http1", "standard"}, {"standard", "http1"}} {
		t.Run("server="+c.server+"/transport="+c.transport, func(t *testing.T) { testEndToEnd(t, c.server, c.transport) })
	}
}

func testEndToEnd(t *testing.T, server, transport string) {
	d := newFakeDinie(t)
	r := start(t, d.env("DINIE_PROXY_LISTEN_PROXY_SERVER", server, "DINIE_PROXY_UPSTREAM_TRANSPORT", transport))
	waitReady(t, r)

	t.Run("base URL", func(t *testing.T) {
		code, body := httpGet(t, r.proxy+"/customers?limit=10")
		if code != 200 || body != "GET /api/v3/customers?limit=10 auth=Bearer "+tokenStem+"1" {
			t.Errorf("got %d: the upstream did not see the prefixed path with the token", code)
		}
	})
	t.Run("HTTP_PROXY over https to the upstream", func(t *testing.T) {
		proxyURL, _ := http.NewRequest("GET", r.proxy, nil)
		client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL.URL)}}
		host := strings.TrimPrefix(d.URL, "https://")
		resp, err := client.Get("http://" + host + "/api/v3/customers")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.HasPrefix(string(b), "GET /api/v3/customers auth=Bearer ") {
			t.Errorf("got %d", resp.StatusCode)
		}
		resp2, err := client.Get("http://elsewhere.example/api/v3/customers")
		if err != nil {
			t.Fatal(err)
		}
		resp2.Body.Close()
		if resp2.StatusCode != 403 {
			t.Errorf("another host: status %d, want 403", resp2.StatusCode)
		}
	})
	t.Run("health", func(t *testing.T) {
		if code, _ := httpGet(t, r.admin+"/healthz"); code != 200 {
			t.Errorf("/healthz = %d", code)
		}
	})
	t.Run("every documented metric is exported", func(t *testing.T) {
		_, metrics := httpGet(t, r.admin+"/metrics")
		for _, name := range []string{
			"dinie_proxy_requests_total", "dinie_proxy_request_duration_seconds", "dinie_proxy_requests_in_flight",
			"dinie_proxy_token_fetches_total", "dinie_proxy_token_fetch_duration_seconds",
			"dinie_proxy_token_expiry_timestamp_seconds", "dinie_proxy_upstream_401_retries_total",
			"dinie_proxy_upstream_ratelimit_limit", "dinie_proxy_upstream_ratelimit_remaining",
			"dinie_proxy_upstream_ratelimit_reset_timestamp_seconds", "dinie_proxy_overloaded_total",
			"dinie_proxy_upstream_retries_total", "dinie_proxy_retry_budget_exhausted_total", "dinie_proxy_session_tokens",
			"go_goroutines", "process_resident_memory_bytes",
		} {
			if !strings.Contains(metrics, "\n# TYPE "+name+" ") {
				t.Errorf("/metrics lacks %s", name)
			}
		}
		if !strings.Contains(metrics, "dinie_proxy_upstream_ratelimit_remaining 42\n") {
			t.Error("rate-limit headroom not exported")
		}
		assertNoSecrets(t, "metrics", metrics)
	})
}

// TestMetricsListMatchesDeploy keeps deploy/metrics.txt, which the alert and
// dashboard checks read, equal to what the proxy really exports. Run with
// -update to rewrite it.
func TestMetricsListMatchesDeploy(t *testing.T) {
	d := newFakeDinie(t)
	// Interception on, so that its gauge is scraped too: it needs the
	// upstream by name (the fake's certificate does not name localhost, so
	// /customers gets a 502; the token comes from the fake by address).
	env := d.env(
		"DINIE_PROXY_UPSTREAM_URL", "https://localhost"+strings.TrimPrefix(d.URL, "https://127.0.0.1")+"/api/v3",
		"DINIE_PROXY_AUTH_TOKEN_URL", d.URL+"/api/v3/auth/token",
		"DINIE_PROXY_INTERCEPT_ENABLED", "true",
		"DINIE_PROXY_INTERCEPT_CA_DIR", t.TempDir())
	r := start(t, env)
	waitReady(t, r)
	httpGet(t, r.proxy+"/customers")
	resp, _ := rawCONNECT(t, r, "evil.example:443")
	if resp.StatusCode != 403 {
		t.Fatalf("CONNECT evil.example:443: %d", resp.StatusCode)
	}
	_, metrics := httpGet(t, r.admin+"/metrics")
	var names []string
	for line := range strings.Lines(metrics) {
		if !strings.HasPrefix(line, "dinie_proxy_") {
			continue
		}
		name, _, _ := strings.Cut(line, " ")
		name, _, _ = strings.Cut(name, "{")
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	got := strings.Join(names, "\n") + "\n"
	const path = "deploy/metrics.txt"
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != got {
		t.Errorf("%s is out of date (go test -run TestMetricsListMatchesDeploy -update .):\ngot\n%s\nwant\n%s", path, got, want)
	}
}

func TestReadinessSaysWhyAndRecovers(t *testing.T) {
	d := newFakeDinie(t)
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "client_secret")
	if err := os.WriteFile(secretFile, []byte("fake-wrong-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := start(t, d.env("DINIE_PROXY_AUTH_CLIENT_SECRET", "", "DINIE_PROXY_AUTH_CLIENT_SECRET_FILE", secretFile))
	testkit.Eventually(t, "a rejection", func() bool {
		code, body := httpGet(t, r.admin+"/readyz")
		return code == 503 && strings.Contains(body, "credentials rejected")
	})
	code, body := httpGet(t, r.proxy+"/customers")
	if code != 503 || !strings.Contains(body, `"code":"token_unavailable"`) || !strings.Contains(body, "credentials rejected") {
		t.Errorf("request without a token: %d %s", code, body)
	}
	// Rotate the secret the way an editor or a Secret update would.
	if err := os.WriteFile(secretFile+".new", []byte(testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(secretFile+".new", secretFile); err != nil {
		t.Fatal(err)
	}
	waitReady(t, r)
	if code, _ := httpGet(t, r.proxy+"/customers"); code != 200 {
		t.Errorf("after rotation: %d", code)
	}
}

func TestShutdownLetsRequestsInFlightFinish(t *testing.T) {
	d := newFakeDinie(t)
	release := make(chan struct{})
	var arrived atomic.Int64
	d.setAPI(func(w http.ResponseWriter, r *http.Request) {
		arrived.Add(1)
		<-release
		io.WriteString(w, "finished")
	})
	r := start(t, d.env())
	waitReady(t, r)

	const slow = 5
	results := make(chan string, slow)
	for range slow {
		go func() {
			_, body := httpGet(t, r.proxy+"/slow")
			results <- body
		}()
	}
	testkit.Eventually(t, "the slow requests to reach the upstream", func() bool { return arrived.Load() == slow })
	r.stop() // what SIGTERM does through signal.NotifyContext
	testkit.Eventually(t, "readiness to drop while draining", func() bool {
		code, _ := httpGet(t, r.admin+"/readyz")
		return code == 503
	})
	if _, err := http.Get(r.proxy + "/new"); err == nil {
		t.Error("a new connection was accepted after shutdown began")
	}
	close(release)
	for range slow {
		if body := <-results; body != "finished" {
			t.Errorf("an in-flight request got %q", body)
		}
	}
	if err := <-r.done; err != nil {
		t.Errorf("run = %v, want nil", err)
	}
	r.done <- nil // for the cleanup
}

func TestConfigPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(file, []byte(`
upstream:
  timeout: 11s
listen:
  proxy: 127.0.0.1:1111
  admin: 127.0.0.1:2222
log:
  level: warn
  format: ""
auth:
  client_id: from-file
  client_secret: fake-file-secret
`), 0o600)
	env := map[string]string{
		"DINIE_PROXY_CONFIG":       file,
		"DINIE_PROXY_LISTEN_PROXY": "127.0.0.1:3333",
		"DINIE_PROXY_LISTEN_ADMIN": "127.0.0.1:4444",
		"DINIE_PROXY_LOG_LEVEL":    "", // empty counts as unset
	}
	cfg, _, err := loadConfig([]string{"--listen.admin", "127.0.0.1:5555"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ key, got, want string }{
		{"upstream.timeout (file over default)", cfg.upstreamTimeout.String(), "11s"},
		{"listen.proxy (env over file)", cfg.listenProxy, "127.0.0.1:3333"},
		{"listen.admin (flag over env)", cfg.listenAdmin, "127.0.0.1:5555"},
		{"log.level (empty env ignored)", cfg.logLevel, "warn"},
		{"log.format (empty file value is the default)", cfg.logFormat, "json"},
		{"upstream.url (default)", cfg.upstreamURL.String(), "https://api.dinie.com.br/api/v3"},
		{"auth.token_url (derived)", cfg.tokenURL, "https://api.dinie.com.br/api/v3/auth/token"},
		{"auth.refresh_before (default)", cfg.refreshBefore.String(), "5m0s"},
		{"shutdown.timeout (default)", cfg.shutdownTimeout.String(), "25s"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.key, c.got, c.want)
		}
	}
}

func TestInvalidConfigExits2NamingTheKey(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o600)
		return p
	}
	unknown := write("unknown.yaml", "upstream:\n  ur1: https://typo.example\n")
	malformed := write("malformed.yaml", "upstream: [\n")
	empty := write("empty-secret", "\n")
	notPEM := write("not.pem", "fake\n")
	base := map[string]string{
		"DINIE_PROXY_AUTH_CLIENT_ID": "fake-id", "DINIE_PROXY_AUTH_CLIENT_SECRET": testSecret,
		"DINIE_PROXY_LISTEN_PROXY": "127.0.0.1:0", "DINIE_PROXY_LISTEN_ADMIN": "127.0.0.1:0",
	}
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		wantKey string
	}{
		{"no client id", map[string]string{"DINIE_PROXY_AUTH_CLIENT_ID": ""}, nil, "auth.client_id"},
		{"no client secret", map[string]string{"DINIE_PROXY_AUTH_CLIENT_SECRET": ""}, nil, "auth.client_secret"},
		{"both secret and file", map[string]string{"DINIE_PROXY_AUTH_CLIENT_SECRET_FILE": empty}, nil, "auth.client_secret"},
		{"unreadable secret file", map[string]string{"DINIE_PROXY_AUTH_CLIENT_SECRET": "", "DINIE_PROXY_AUTH_CLIENT_SECRET_FILE": "/nonexistent/secret"}, nil, "auth.client_secret_file"},
		{"empty secret file", map[string]string{"DINIE_PROXY_AUTH_CLIENT_SECRET": "", "DINIE_PROXY_AUTH_CLIENT_SECRET_FILE": empty}, nil, "auth.client_secret_file"},
		{"ftp upstream", nil, []string{"--upstream.url", "ftp://api.dinie.com.br"}, "upstream.url"},
		{"relative token url", nil, []string{"--auth.token_url", "/auth/token"}, "auth.token_url"},
		{"bad duration", map[string]string{"DINIE_PROXY_UPSTREAM_TIMEOUT": "30"}, nil, "upstream.timeout"},
		{"bad refresh", nil, []string{"--auth.refresh_before", "soon"}, "auth.refresh_before"},
		{"bad shutdown", nil, []string{"--shutdown.timeout", "-1s"}, "shutdown.timeout"},
		{"bad transport", nil, []string{"--upstream.transport", "h3"}, "upstream.transport"},
		{"bad proxy server", nil, []string{"--listen.proxy_server", "h2c"}, "listen.proxy_server"},
		{"bad level", nil, []string{"--log.level", "verbose"}, "log.level"},
		{"bad format", nil, []string{"--log.format", "xml"}, "log.format"},
		{"bad listen", nil, []string{"--listen.proxy", "8080"}, "listen.proxy"},
		{"bad admin listen", nil, []string{"--listen.admin", "127.0.0.1:99999"}, "listen.admin"},
		{"unreadable ca", nil, []string{"--upstream.ca_file", "/nonexistent/ca.pem"}, "upstream.ca_file"},
		{"ca without certificates", nil, []string{"--upstream.ca_file", notPEM}, "upstream.ca_file"},
		{"unknown key in file", nil, []string{"--config", unknown}, "upstream.ur1"},
		{"malformed file", nil, []string{"--config", malformed}, "config file"},
		{"missing file", map[string]string{"DINIE_PROXY_CONFIG": "/nonexistent/config.yaml"}, nil, "config file"},
		{"bad max in flight", map[string]string{"DINIE_PROXY_LIMITS_MAX_IN_FLIGHT": "0"}, nil, "limits.max_in_flight"},
		{"bad max tunnels", map[string]string{"DINIE_PROXY_LIMITS_MAX_TUNNELS": "none"}, nil, "limits.max_tunnels"},
		{"bad replay budget", nil, []string{"--upstream.replay_budget_bytes", "32MiB"}, "upstream.replay_budget_bytes"},
		{"negative retries", nil, []string{"--upstream.retries", "-1"}, "upstream.retries"},
		{"retries not a number", map[string]string{"DINIE_PROXY_UPSTREAM_RETRIES": "two"}, nil, "upstream.retries"},
		{"zero retry wait", nil, []string{"--upstream.retry_max_wait", "0s"}, "upstream.retry_max_wait"},
		{"bad idempotency keys", nil, []string{"--upstream.idempotency_keys", "on"}, "upstream.idempotency_keys"},
		{"bad pass bearer", nil, []string{"--auth.pass_bearer", "all"}, "auth.pass_bearer"},
		{"no session tokens", map[string]string{"DINIE_PROXY_AUTH_SESSION_TOKENS_MAX": "0"}, nil, "auth.session_tokens_max"},
		{"unknown flag", nil, []string{"--upstream.uri", "x"}, "upstream.uri"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := maps(base, tt.env)
			var stdout, stderr bytes.Buffer
			// A case that wrongly starts the proxy stops here and fails.
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			err := run(ctx, tt.args, func(k string) string { return env[k] }, &stdout, &stderr)
			if exitCode(err) != 2 {
				t.Fatalf("run = %v, want a configuration error (exit 2)", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.wantKey) || strings.Contains(msg, "\n") {
				t.Errorf("message %q does not name %s on one line", msg, tt.wantKey)
			}
			assertNoSecrets(t, "the message", msg+stderr.String())
		})
	}
}

func maps(a, b map[string]string) map[string]string {
	m := map[string]string{}
	for k, v := range a {
		m[k] = v
	}
	for k, v := range b {
		m[k] = v
	}
	return m
}

func TestVersion(t *testing.T) {
	var stdout bytes.Buffer
	if err := run(t.Context(), []string{"--version"}, func(string) string { return "" }, &stdout, io.Discard); err != nil {
		t.Fatal(err)
	}
	if stdout.String() != "dinie-auth-proxy dev\n" {
		t.Errorf("--version printed %q", stdout.String())
	}
}

func TestHelpExits0(t *testing.T) {
	var stderr bytes.Buffer
	if err := run(t.Context(), []string{"--help"}, func(string) string { return "" }, io.Discard, &stderr); err != nil {
		t.Errorf("--help: %v", err)
	}
	if !strings.Contains(stderr.String(), "-auth.client_secret_file") {
		t.Error("--help does not list the keys")
	}
}

func TestDemo(t *testing.T) {
	r := start(t, map[string]string{}, "--demo", "--listen.proxy", "127.0.0.1:0", "--listen.admin", "127.0.0.1:0")
	waitReady(t, r)
	if !strings.Contains(r.stdout.String(), "curl -s http://127.0.0.1:") {
		t.Errorf("no curl line printed:\n%s", r.stdout.String())
	}
	code, body := httpGet(t, r.proxy+"/customers?limit=10")
	var echo struct{ Path, Authorization string }
	if err := json.Unmarshal([]byte(body), &echo); err != nil || code != 200 {
		t.Fatalf("demo answered %d: %v", code, err)
	}
	if echo.Path != "/api/v3/customers" || !strings.HasPrefix(echo.Authorization, "Bearer demo_at_") || !strings.HasSuffix(echo.Authorization, "…") {
		t.Errorf("echo = %v, want the prefixed path and a shortened token", echo)
	}
	// The session mode of Dinie's SDKs: the customer token the mock issues
	// reaches it as the app sends it.
	resp, err := http.Post(r.proxy+"/biometrics/session-exchange", "application/json", strings.NewReader(`{"code":"dinie_bsc_demo"}`))
	if err != nil {
		t.Fatal(err)
	}
	var session struct {
		AccessToken string `json:"access_token"`
	}
	json.NewDecoder(resp.Body).Decode(&session)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(session.AccessToken, "demo_st_") {
		t.Fatalf("session exchange: %d, token %q…", resp.StatusCode, session.AccessToken[:min(len(session.AccessToken), 8)])
	}
	req, _ := http.NewRequest("GET", r.proxy+"/customers/cus_demo", nil)
	req.Header.Set("Authorization", "Bearer "+session.AccessToken)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&echo)
	resp.Body.Close()
	if !strings.HasPrefix(echo.Authorization, "Bearer demo_st_") {
		t.Errorf("the mock saw %.15s…, want the session token", echo.Authorization)
	}
}

// TestBinary checks what only a real process shows: the exit statuses and
// SIGTERM.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "dinie-auth-proxy")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}

	t.Run("invalid config exits 2", func(t *testing.T) {
		cmd := exec.Command(bin, "--log.level", "loud")
		cmd.Env = []string{"DINIE_PROXY_AUTH_CLIENT_ID=fake-id", "DINIE_PROXY_AUTH_CLIENT_SECRET=" + testSecret}
		out, err := cmd.CombinedOutput()
		if ee, ok := errors.AsType[*exec.ExitError](err); !ok || ee.ExitCode() != 2 {
			t.Errorf("exit = %v, want 2", err)
		}
		if lines := strings.Count(string(out), "\n"); lines != 1 || !strings.Contains(string(out), "log.level") {
			t.Errorf("output %q is not one line naming log.level", out)
		}
	})
	t.Run("busy port exits 1", func(t *testing.T) {
		busy := httptest.NewServer(http.NotFoundHandler())
		defer busy.Close()
		cmd := exec.Command(bin, "--demo", "--listen.proxy", strings.TrimPrefix(busy.URL, "http://"))
		if err := cmd.Run(); err == nil || cmd.ProcessState.ExitCode() != 1 {
			t.Errorf("exit = %v, want 1", err)
		}
	})
	t.Run("SIGTERM exits 0", func(t *testing.T) {
		cmd := exec.Command(bin, "--demo", "--listen.proxy", "127.0.0.1:0", "--listen.admin", "127.0.0.1:0")
		stderr, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stderr)
		for sc.Scan() && !strings.Contains(sc.Text(), `"listening"`) {
		}
		go io.Copy(io.Discard, stderr)
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Errorf("exit after SIGTERM = %v, want 0", err)
		}
	})
}

// TestRetryKeys reads the retry keys, whose zero and "off" (which YAML
// may take for false) mean "never".
func TestRetryKeys(t *testing.T) {
	env := map[string]string{"DINIE_PROXY_AUTH_CLIENT_ID": "fake-id", "DINIE_PROXY_AUTH_CLIENT_SECRET": testSecret}
	getenv := func(k string) string { return env[k] }
	cfg, _, err := loadConfig(nil, getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.retries != 2 || cfg.retryMaxWait != 10*time.Second || cfg.idempotencyKeys {
		t.Errorf("defaults: retries %d, max wait %v, auto keys %v; want 2, 10s, false", cfg.retries, cfg.retryMaxWait, cfg.idempotencyKeys)
	}
	for _, tt := range []struct {
		yaml    string
		retries int
		wait    time.Duration
		auto    bool
	}{
		{"upstream:\n  retries: 0\n  retry_max_wait: 3s\n  idempotency_keys: auto\n", 0, 3 * time.Second, true},
		{"upstream:\n  retries: 5\n  idempotency_keys: off\n", 5, 10 * time.Second, false},
	} {
		file := filepath.Join(t.TempDir(), "config.yaml")
		os.WriteFile(file, []byte(tt.yaml), 0o600)
		cfg, _, err := loadConfig([]string{"--config", file}, getenv, io.Discard)
		if err != nil {
			t.Fatalf("%q: %v", tt.yaml, err)
		}
		if cfg.retries != tt.retries || cfg.retryMaxWait != tt.wait || cfg.idempotencyKeys != tt.auto {
			t.Errorf("%q: retries %d, max wait %v, auto keys %v; want %d, %v, %v", tt.yaml, cfg.retries, cfg.retryMaxWait, cfg.idempotencyKeys, tt.retries, tt.wait, tt.auto)
		}
	}
}

// TestConfigExampleIsCompleteAndValid keeps config.yaml.example in step with
// the keys the program knows.
func TestConfigExampleIsCompleteAndValid(t *testing.T) {
	b, err := os.ReadFile("config.yaml.example")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		section, leaf, _ := strings.Cut(k.name, ".")
		if !strings.Contains(string(b), "\n"+section+":\n") || !strings.Contains(string(b), "\n  "+leaf+":") {
			t.Errorf("config.yaml.example does not show %s", k.name)
		}
	}
	env := map[string]string{"DINIE_PROXY_AUTH_CLIENT_ID": "fake-id", "DINIE_PROXY_AUTH_CLIENT_SECRET": testSecret}
	cfg, _, err := loadConfig([]string{"--config", "config.yaml.example"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatalf("config.yaml.example does not load: %v", err)
	}
	if cfg.listenProxy != "127.0.0.1:8080" || cfg.upstreamTimeout != 30*time.Second || cfg.maxReplayBytes != 1<<20 ||
		cfg.replayBudget != 32<<20 || cfg.maxInFlight != 1024 || cfg.retries != 2 || cfg.retryMaxWait != 10*time.Second || cfg.idempotencyKeys {
		t.Error("config.yaml.example does not show the defaults")
	}
}
