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
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dinie/dinie-auth-proxy/internal/config"
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

// port is the fake's TCP port.
func (d *fakeDinie) port() string { return d.URL[strings.LastIndex(d.URL, ":")+1:] }

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
	go func() { r.done <- run(ctx, args, environ(env), r.stdout, r.stderr) }()
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
			r.done <- err // for the cleanup, which waits for it
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
	code, body, err := get(url)
	if code == 0 {
		t.Fatal(err)
	}
	return code, body // what came of a body cut short
}

// get is httpGet for goroutines other than the test's, where t.Fatal
// would end only the goroutine. code is 0 when no answer came; a body cut
// short comes with its error.
func get(url string) (code int, body string, err error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		err = fmt.Errorf("%w after %q", err, b)
	}
	return resp.StatusCode, string(b), err
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
			"dinie_proxy_build_info", "go_goroutines", "process_resident_memory_bytes",
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
	// No ready line while no token is held: the rejection is logged, and
	// nothing claims the proxy ready.
	testkit.Eventually(t, "the rejection in the log", func() bool {
		return len(logLines(t, r.stderr.String(), "token endpoint rejected the credentials")) > 0
	})
	if n := len(logLines(t, r.stderr.String(), "ready")); n != 0 {
		t.Errorf("%d ready lines before a token was held", n)
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
	testkit.Eventually(t, "the ready line", func() bool { return len(logLines(t, r.stderr.String(), "ready")) == 1 })
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
			// Not httpGet: its t.Fatal would end this goroutine, not the
			// test, which would then wait here for ever.
			_, body, err := get(r.proxy + "/slow")
			if err != nil {
				body = err.Error()
			}
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
	listSecret := write("list-secret.yaml", "auth:\n  client_secret: ["+testSecret+"]\n")
	mappingSecret := write("mapping-secret.yaml", "auth:\n  client_secret:\n    "+testSecret+": x\n")
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
		{"bad replay budget", nil, []string{"--upstream.replay_budget_bytes", "32MiB"}, "upstream.replay_budget_bytes"},
		{"negative retries", nil, []string{"--upstream.retries", "-1"}, "upstream.retries"},
		{"retries not a number", map[string]string{"DINIE_PROXY_UPSTREAM_RETRIES": "two"}, nil, "upstream.retries"},
		{"zero retry wait", nil, []string{"--upstream.retry_max_wait", "0s"}, "upstream.retry_max_wait"},
		{"bad idempotency keys", nil, []string{"--upstream.idempotency_keys", "on"}, "upstream.idempotency_keys"},
		{"unknown flag", nil, []string{"--upstream.uri", "x"}, "--upstream.uri: no such flag; did you mean --upstream.url?"},
		{"unknown variable", map[string]string{"DINIE_PROXY_UPSTREAM_URI": "https://sandbox.api.dinie.com.br/api/v3"}, nil,
			"DINIE_PROXY_UPSTREAM_URI: no such setting; did you mean DINIE_PROXY_UPSTREAM_URL (upstream.url)?"},
		{"unknown key in file, did you mean", nil, []string{"--config", unknown}, "did you mean upstream.url?"},
		{"every interface", nil, []string{"--listen.proxy", ":8080"}, "listen.proxy: :8080 is every interface"},
		{"not loopback", map[string]string{"DINIE_PROXY_LISTEN_PROXY": "10.1.2.3:8080"}, nil, "listen.proxy: 10.1.2.3:8080 is not a loopback address"},
		{"bad allow_remote", map[string]string{"DINIE_PROXY_LISTEN_ALLOW_REMOTE": "yes please"}, nil, "listen.allow_remote"},
		{"bad pass_bearer", nil, []string{"--auth.pass_bearer", "all"}, "auth.pass_bearer"},
		{"bad session tokens max", nil, []string{"--auth.session_tokens_max", "0"}, "auth.session_tokens_max"},
		{"bad max tunnels", map[string]string{"DINIE_PROXY_LIMITS_MAX_TUNNELS": "none"}, nil, "limits.max_tunnels"},
		{"demo with an upstream", nil, []string{"--demo", "--upstream.url", "https://sandbox.api.dinie.com.br/api/v3"}, "upstream.url: --demo"},
		{"demo with credentials", nil, []string{"--demo"}, "auth.client_id: --demo"},
		{"boolean flag with a word", nil, []string{"--intercept.enabled=yes please"}, "intercept.enabled"},
		// A Kubernetes args: list that quotes a flag and its value as one.
		{"flag and secret in one argument", nil, []string{"--check", "--auth.client_secret " + testSecret},
			"--auth.client_secret: a flag and its value in one argument (argument 2"},
		{"stray argument", nil, []string{"--log.level", "debug", testSecret}, "command line: argument 3 is not a flag"},
		{"lower-case variable", map[string]string{"dinie_proxy_upstream_url": "https://sandbox.api.dinie.com.br/api/v3"}, nil,
			"dinie_proxy_upstream_url: names are upper-case; did you mean DINIE_PROXY_UPSTREAM_URL (upstream.url)?"},
		{"list as the secret", nil, []string{"--config", listSecret}, "auth.client_secret: a list in "},
		{"mapping under the secret", nil, []string{"--config", mappingSecret}, "auth.client_secret: a mapping in "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := maps(base, tt.env)
			var stdout, stderr bytes.Buffer
			// A case that wrongly starts the proxy stops here and fails.
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			err := run(ctx, tt.args, environ(env), &stdout, &stderr)
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

// listen.allow_remote is decided on the address bound, not only on the
// text: localhost passes the configuration's check by name and resolves
// through /etc/hosts or DNS, which may point it anywhere. The settings are
// made here as such a name would resolve, since the configuration refuses
// 0.0.0.0 by its text.
func TestBoundProxyAddressMustBeLoopback(t *testing.T) {
	for _, tt := range []struct {
		addr        string
		allowRemote bool
		refused     bool
	}{
		{"0.0.0.0:0", false, true},
		{"localhost:0", false, false},
		{"127.0.0.1:0", false, false},
		{"0.0.0.0:0", true, false},
	} {
		a := &app{cfg: &config.Settings{ListenProxy: tt.addr, ListenAdmin: "127.0.0.1:0", AllowRemote: tt.allowRemote}}
		_, _, err := a.bind()
		a.close()
		if !tt.refused {
			if err != nil {
				t.Errorf("%s, allow_remote %v: %v", tt.addr, tt.allowRemote, err)
			}
			continue
		}
		if exitCode(err) != 2 || !strings.HasPrefix(err.Error(), "listen.proxy: "+tt.addr+" was bound to ") ||
			!strings.Contains(err.Error(), "listen.allow_remote") {
			t.Errorf("%s: %v, want exit 2 naming listen.proxy and listen.allow_remote", tt.addr, err)
		}
	}
}

// environ is env as os.Environ gives it.
func environ(env map[string]string) []string {
	var list []string
	for k, v := range env {
		list = append(list, k+"="+v)
	}
	return list
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
	if err := run(t.Context(), []string{"--version"}, nil, &stdout, io.Discard); err != nil {
		t.Fatal(err)
	}
	// A test binary carries no VCS stamp; TestBinary checks the revision.
	want := "dinie-auth-proxy dev\nrevision unknown\n" + runtime.Version() + "\n"
	if stdout.String() != want {
		t.Errorf("--version printed %q, want %q", stdout.String(), want)
	}
}

// --help goes to stdout, lists every key with its default, and needs no
// valid configuration.
func TestHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"--help"}, []string{"DINIE_PROXY_UPSTREAM_URI=x"}, &stdout, &stderr)
	if err != nil {
		t.Errorf("--help: %v", err)
	}
	for _, want := range []string{"--auth.client_secret_file (default none; env DINIE_PROXY_AUTH_CLIENT_SECRET_FILE)",
		"--upstream.url (default https://api.dinie.com.br/api/v3; env DINIE_PROXY_UPSTREAM_URL)", "--demo", "--check", "--print-config"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
	if stderr.Len() != 0 {
		t.Errorf("--help wrote to stderr: %q", stderr.String())
	}
}

// TestCheck runs --check: one line on stdout with the token's expiry and
// exit 0; exit 1 with the reason when no token comes; 2 when the
// configuration is invalid.
func TestCheck(t *testing.T) {
	d := newFakeDinie(t)
	check := func(env map[string]string) (string, string, error) {
		var stdout, stderr bytes.Buffer
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		err := run(ctx, []string{"--check"}, environ(env), &stdout, &stderr)
		assertNoSecrets(t, "--check's output", stdout.String()+stderr.String())
		if err != nil {
			assertNoSecrets(t, "--check's error", err.Error())
		}
		return stdout.String(), stderr.String(), err
	}

	before := time.Now()
	out, _, err := check(d.env())
	if err != nil {
		t.Fatalf("--check = %v", err)
	}
	const prefix = "ok: a token from "
	if strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, prefix+d.URL+"/api/v3/auth/token, valid until ") {
		t.Fatalf("--check printed %q", out)
	}
	stamp, _, _ := strings.Cut(strings.TrimPrefix(out, prefix+d.URL+"/api/v3/auth/token, valid until "), " ")
	expiry, err := time.Parse(time.RFC3339, stamp)
	if err != nil || expiry.Before(before.Add(59*time.Minute)) || expiry.After(time.Now().Add(time.Hour)) {
		t.Errorf("expiry %q (%v), want an hour from now", stamp, err)
	}
	if d.fetches.Load() != 1 || d.apiCalls.Load() != 0 {
		t.Errorf("%d fetches and %d API calls, want one fetch only", d.fetches.Load(), d.apiCalls.Load())
	}

	d.reject.Store(true)
	out, _, err = check(d.env())
	if exitCode(err) != 1 || out != "" || !strings.Contains(err.Error(), "fake rejection") {
		t.Errorf("--check with rejected credentials = %v, stdout %q; want exit 1 with Dinie's reason", err, out)
	}

	_, _, err = check(d.env("DINIE_PROXY_UPSTREAM_TIMEOUT", "soon"))
	if exitCode(err) != 2 || !strings.HasPrefix(err.Error(), "upstream.timeout: ") {
		t.Errorf("--check with an invalid key = %v, want exit 2", err)
	}
	_, _, err = check(d.env("DINIE_PROXY_INTERCEPT_PASSTHROUGH", "bad host:1"))
	if exitCode(err) != 2 || !strings.HasPrefix(err.Error(), "intercept.passthrough: ") {
		t.Errorf("--check with a bad passthrough pattern = %v, want exit 2", err)
	}
}

// TestPrintConfig runs --print-config: the effective values with their
// sources, the secret redacted, nothing started.
func TestPrintConfig(t *testing.T) {
	var stdout, stderr bytes.Buffer
	env := map[string]string{"DINIE_PROXY_AUTH_CLIENT_ID": "fake-id", "DINIE_PROXY_AUTH_CLIENT_SECRET": testSecret}
	if err := run(t.Context(), []string{"--print-config", "--upstream.timeout", "3s"}, environ(env), &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	assertNoSecrets(t, "--print-config", stdout.String()+stderr.String())
	for _, want := range []string{
		"\nupstream:\n  url: \"https://api.dinie.com.br/api/v3\"  # default\n  timeout: \"3s\"  # flag --upstream.timeout\n",
		"\n  client_secret: \"<redacted>\"  # environment DINIE_PROXY_AUTH_CLIENT_SECRET\n",
		"\n  allow_remote: \"false\"  # default\n",
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("--print-config lacks %q:\n%s", want, stdout.String())
		}
	}
	if stderr.Len() != 0 {
		t.Errorf("--print-config wrote to stderr: %q", stderr.String())
	}
}

// logLines returns the JSON log lines whose msg is msg.
func logLines(t *testing.T, log, msg string) []map[string]any {
	t.Helper()
	var found []map[string]any
	for line := range strings.Lines(log) {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
			found = append(found, m)
		}
	}
	return found
}

// Once the first token is held, one ready line says what runs: the
// upstream, the ways in, where the credentials come from; no secret.
func TestReadyLine(t *testing.T) {
	d := newFakeDinie(t)
	dir := t.TempDir()
	idFile := filepath.Join(dir, "client_id")
	os.WriteFile(idFile, []byte("fake-e2e-client\n"), 0o600)
	env := interceptEnv(d, t.TempDir(), t.TempDir(), "DINIE_PROXY_AUTH_CLIENT_ID", "", "DINIE_PROXY_AUTH_CLIENT_ID_FILE", idFile)
	r := start(t, env, "--intercept.passthrough", "api.stripe.com")
	waitReady(t, r)
	var lines []map[string]any
	testkit.Eventually(t, "the ready line", func() bool {
		lines = logLines(t, r.stderr.String(), "ready")
		return len(lines) > 0
	})
	if len(lines) != 1 {
		t.Fatalf("%d ready lines, want 1:\n%s", len(lines), r.stderr.String())
	}
	l := lines[0]
	if l["upstream"] != "localhost:"+d.port() {
		t.Errorf("upstream %v, want localhost:%s", l["upstream"], d.port())
	}
	if fmt.Sprint(l["ways_in"]) != "[base_url http_proxy https_proxy passthrough]" {
		t.Errorf("ways_in %v", l["ways_in"])
	}
	want := "[auth.client_id_file " + idFile + " (environment DINIE_PROXY_AUTH_CLIENT_ID_FILE) auth.client_secret (environment DINIE_PROXY_AUTH_CLIENT_SECRET)]"
	if fmt.Sprint(l["credentials"]) != want {
		t.Errorf("credentials %v, want %s", l["credentials"], want)
	}
}

// An upstream.url without a path is valid (a proxy in front of Dinie may
// need it) but most likely forgot /api/v3: a warning says so at start.
func TestUpstreamWithoutPathWarns(t *testing.T) {
	d := newFakeDinie(t)
	r := start(t, d.env("DINIE_PROXY_UPSTREAM_URL", d.URL, "DINIE_PROXY_AUTH_TOKEN_URL", d.URL+"/api/v3/auth/token"))
	waitReady(t, r)
	testkit.Eventually(t, "the warning", func() bool {
		for _, l := range logLines(t, r.stderr.String(), "upstream.url "+d.URL+" has no path: Dinie's API is under /api/v3 (e.g. https://api.dinie.com.br/api/v3)") {
			return l["level"] == "warn"
		}
		return false
	})
}

// TestBuildFrom reads what Go records: a go install's module version,
// the git revision of a build in a checkout (not a worktree: Go looks for
// a .git directory), and what the linker was told first.
func TestBuildFrom(t *testing.T) {
	info := &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"}, {Key: "vcs.modified", Value: "true"}}}
	for _, tt := range []struct {
		version, revision string
		info              *debug.BuildInfo
		want              string
	}{
		{"dev", "", info, "dinie-auth-proxy v1.2.3\nrevision 0123456789abcdef0123456789abcdef01234567 (modified)\n"},
		{"v9", "cafe", info, "dinie-auth-proxy v9\nrevision cafe (modified)\n"},
		{"dev", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "dinie-auth-proxy dev\nrevision unknown\n"},
		{"dev", "", nil, "dinie-auth-proxy dev\nrevision unknown\n"},
	} {
		if got := buildFrom(tt.version, tt.revision, tt.info).String(); got != tt.want+runtime.Version() {
			t.Errorf("%s %s: %q, want %q", tt.version, tt.revision, got, tt.want+runtime.Version())
		}
	}
}

// TestBuildInfo reads dinie_proxy_build_info from /metrics.
func TestBuildInfo(t *testing.T) {
	d := newFakeDinie(t)
	r := start(t, d.env())
	_, metrics := httpGet(t, r.admin+"/metrics")
	want := `dinie_proxy_build_info{go_version="` + runtime.Version() + `",revision="unknown",version="dev"} 1` + "\n"
	if !strings.Contains(metrics, want) {
		t.Errorf("/metrics lacks %q", want)
	}
}

// TestBinary checks what only a real process shows: the exit statuses and
// SIGTERM.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "dinie-auth-proxy")
	build := exec.Command("go", "build", "-ldflags", "-X main.revision=fake-revision-1", "-o", bin, ".")
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
	t.Run("version", func(t *testing.T) {
		out, err := exec.Command(bin, "--version").Output()
		if err != nil || !strings.Contains(string(out), "\nrevision fake-revision-1\n") {
			t.Errorf("--version = %q, %v; want the revision the linker was given", out, err)
		}
	})
	t.Run("unknown variable exits 2", func(t *testing.T) {
		cmd := exec.Command(bin)
		cmd.Env = []string{"DINIE_PROXY_AUTH_CLIENT_ID=fake-id", "DINIE_PROXY_AUTH_CLIENT_SECRET=" + testSecret, "DINIE_PROXY_UPSTREAM_URI=https://sandbox.api.dinie.com.br/api/v3"}
		out, err := cmd.CombinedOutput()
		if ee, ok := errors.AsType[*exec.ExitError](err); !ok || ee.ExitCode() != 2 ||
			string(out) != "dinie-auth-proxy: DINIE_PROXY_UPSTREAM_URI: no such setting; did you mean DINIE_PROXY_UPSTREAM_URL (upstream.url)?\n" {
			t.Errorf("exit %v, output %q", err, out)
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
