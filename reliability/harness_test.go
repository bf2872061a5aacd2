//go:build reliability

package reliability

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dinie/dinie-auth-proxy/internal/testkit"
)

// Every token and secret in this suite starts with one of these stems, so
// that one substring search finds a leak anywhere. Failure messages never
// quote what they found.
const (
	tokenStem  = "fake-token-"
	secretStem = "fake-secret-"
	secret1    = secretStem + "one"
	secret2    = secretStem + "two"
)

var proxyBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dinie-reliability-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	proxyBin = filepath.Join(dir, "dinie-auth-proxy")
	build := exec.Command("go", "build", "-o", proxyBin, "..")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build the proxy:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	// Every fake server, client and process watcher of the suite must be
	// gone once its test has ended.
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines leaked by the test process:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// noSecrets fails t if text holds a token or the client secret; it names
// where, never what.
func noSecrets(t testing.TB, where string, text []byte) {
	t.Helper()
	if bytes.Contains(text, []byte(tokenStem)) || bytes.Contains(text, []byte(secretStem)) {
		t.Errorf("%s holds a token or the client secret", where)
	}
}

// --- the fake Dinie ------------------------------------------------------

// tokenMode is what the token endpoint does with the next request.
type tokenMode int32

const (
	tokenOK      tokenMode = iota
	token500               // 500 problem+json
	tokenHang              // never answers; the proxy's fetch timeout ends it
	token429               // 429 with Retry-After
	tokenRefused           // the listener is closed: connection refused
)

func (m tokenMode) String() string {
	return [...]string{"ok", "500", "hang", "429", "refused"}[m]
}

// fakeDinie is a token endpoint and an API, both over TLS with one test
// certificate. The token endpoint listens on its own port so that a test
// can close it (connection refused) and reopen it.
type fakeDinie struct {
	api    *httptest.Server
	caFile string

	tokenMu   sync.Mutex
	tokenAddr string
	tokenSrv  *http.Server
	tokenDone chan struct{}

	mode       atomic.Int32
	tokenLife  atomic.Int64 // seconds
	retryAfter atomic.Int64 // seconds, for token429
	secret     atomic.Pointer[string]
	release    chan struct{} // closed at cleanup: ends every hang

	mu       sync.Mutex
	expiry   map[string]time.Time // issued token -> when it expires
	revoked  map[string]bool
	used     map[string]bool // tokens seen by the API
	seenIDs  map[string]bool // X-Request-Id seen by the API
	attempts map[tokenMode]int

	issuedCount  atomic.Int64
	rejected     atomic.Int64
	apiRequests  atomic.Int64
	apiActive    atomic.Int64
	apiConns     atomic.Int64 // connections open to the API
	expiredUses  atomic.Int64 // requests that reached the API with an expired token
	unknownUses  atomic.Int64 // requests with a token the endpoint never issued
	revokedUses  atomic.Int64
	uploadErrors atomic.Int64
	// flaky is the API's /flaky: Dinie failing transiently.
	flaky flakyAPI
	// downHits counts the requests to /down, a Dinie that always answers
	// 503 with Retry-After: 0.
	downHits atomic.Int64
	// truncatedAccepted counts uploads that the API read to a clean end
	// with fewer bytes than the client announced in X-Expect-Length: a
	// truncated payload passed off as whole.
	truncatedAccepted atomic.Int64
}

func newFakeDinie(t *testing.T, lifeSeconds int64) *fakeDinie {
	t.Helper()
	d := &fakeDinie{
		release:  make(chan struct{}),
		expiry:   map[string]time.Time{},
		revoked:  map[string]bool{},
		used:     map[string]bool{},
		seenIDs:  map[string]bool{},
		attempts: map[tokenMode]int{},
	}
	d.tokenLife.Store(lifeSeconds)
	d.retryAfter.Store(2)
	s := secret1
	d.secret.Store(&s)
	d.api = httptest.NewUnstartedServer(http.HandlerFunc(d.serveAPI))
	d.api.Config.ErrorLog = quietLog()
	d.api.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		switch state {
		case http.StateNew:
			d.apiConns.Add(1)
		case http.StateClosed, http.StateHijacked:
			d.apiConns.Add(-1)
		}
	}
	d.api.StartTLS()
	d.caFile = filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d.api.Certificate().Raw})
	if err := os.WriteFile(d.caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	d.tokenAddr = "127.0.0.1:0"
	if err := d.startTokenServer(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		close(d.release)
		d.stopTokenServer()
		d.api.CloseClientConnections()
		d.api.Close()
	})
	return d
}

func (d *fakeDinie) startTokenServer() error {
	d.tokenMu.Lock()
	defer d.tokenMu.Unlock()
	if d.tokenSrv != nil {
		return nil
	}
	ln, err := net.Listen("tcp", d.tokenAddr)
	if err != nil {
		return err
	}
	d.tokenAddr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(d.serveToken), ErrorLog: quietLog()}
	tl := tls.NewListener(ln, &tls.Config{Certificates: d.api.TLS.Certificates})
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(tl) }()
	d.tokenSrv, d.tokenDone = srv, done
	return nil
}

func (d *fakeDinie) stopTokenServer() {
	d.tokenMu.Lock()
	defer d.tokenMu.Unlock()
	if d.tokenSrv == nil {
		return
	}
	d.tokenSrv.Close()
	<-d.tokenDone
	d.tokenSrv = nil
}

// setMode switches the token endpoint's behaviour; tokenRefused closes
// its listener and any other mode reopens it on the same port.
func (d *fakeDinie) setMode(t *testing.T, m tokenMode) {
	t.Helper()
	d.mode.Store(int32(m))
	if m == tokenRefused {
		d.stopTokenServer()
		return
	}
	if err := d.startTokenServer(); err != nil {
		t.Fatalf("reopen the token endpoint: %v", err)
	}
}

func (d *fakeDinie) tokenURL() string {
	d.tokenMu.Lock()
	defer d.tokenMu.Unlock()
	return "https://" + d.tokenAddr + "/api/v3/auth/token"
}

func writeProblemJSON(w http.ResponseWriter, status int, code, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"type":"https://docs.dinie.com.br/errors/%s","title":%q,"status":%d,"detail":%q,"code":%q}`,
		code, http.StatusText(status), status, detail, code)
}

func (d *fakeDinie) serveToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/api/v3/auth/token" {
		http.NotFound(w, r)
		return
	}
	mode := tokenMode(d.mode.Load())
	d.mu.Lock()
	d.attempts[mode]++
	d.mu.Unlock()
	switch mode {
	case token500:
		writeProblemJSON(w, 500, "internal_error", "fake outage")
		return
	case tokenHang:
		select {
		case <-r.Context().Done():
		case <-d.release:
		}
		return
	case token429:
		w.Header().Set("Retry-After", strconv.FormatInt(d.retryAfter.Load(), 10))
		writeProblemJSON(w, 429, "rate_limited", "fake rate limit")
		return
	}
	id, secret, ok := r.BasicAuth()
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "client_credentials" || !ok || id != "fake-client" {
		writeProblemJSON(w, 400, "invalid_request", "fake: malformed token request")
		return
	}
	if secret != *d.secret.Load() {
		d.rejected.Add(1)
		writeProblemJSON(w, 401, "invalid_client", "fake: client secret revoked")
		return
	}
	n := d.issuedCount.Add(1)
	tok := fmt.Sprintf("%s%d", tokenStem, n)
	life := d.tokenLife.Load()
	d.mu.Lock()
	d.expiry[tok] = time.Now().Add(time.Duration(life) * time.Second)
	d.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"access_token":%q,"token_type":"bearer","expires_in":%d}`, tok, life)
}

// revokeAll makes the API answer 401 to every token issued so far.
func (d *fakeDinie) revokeAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for tok := range d.expiry {
		d.revoked[tok] = true
	}
}

func (d *fakeDinie) tokensUsed() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.used)
}

func (d *fakeDinie) sawRequest(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.seenIDs[id]
}

func (d *fakeDinie) attemptCount(m tokenMode) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.attempts[m]
}

func (d *fakeDinie) serveAPI(w http.ResponseWriter, r *http.Request) {
	d.apiRequests.Add(1)
	d.apiActive.Add(1)
	defer d.apiActive.Add(-1)
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	now := time.Now()
	d.mu.Lock()
	if id := r.Header.Get("X-Request-Id"); id != "" {
		d.seenIDs[id] = true
	}
	exp, issued := d.expiry[tok]
	revoked := d.revoked[tok]
	if issued {
		d.used[tok] = true
	}
	d.mu.Unlock()
	switch {
	case !issued:
		d.unknownUses.Add(1)
		writeProblemJSON(w, 401, "invalid_token", "fake: unknown token")
		return
	case now.After(exp):
		d.expiredUses.Add(1)
		writeProblemJSON(w, 401, "token_expired", "fake: token expired")
		return
	case revoked:
		d.revokedUses.Add(1)
		writeProblemJSON(w, 401, "token_expired", "fake: token revoked")
		return
	}
	q := r.URL.Query()
	switch strings.TrimPrefix(r.URL.Path, "/api/v3/") {
	case "ok":
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	case "slow":
		ms, _ := strconv.Atoi(q.Get("ms"))
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
			io.WriteString(w, "ok")
		case <-r.Context().Done():
		case <-d.release:
		}
	case "slow-upload":
		// A slow Dinie behind an upload: the body is read, the answer waits.
		n, _ := io.Copy(io.Discard, r.Body)
		ms, _ := strconv.Atoi(q.Get("ms"))
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
			fmt.Fprint(w, n)
		case <-r.Context().Done():
		case <-d.release:
		}
	case "hang":
		select {
		case <-r.Context().Done():
		case <-d.release:
		}
	case "reset-before":
		resetConn(w)
	case "reset-mid":
		w.Header().Set("Content-Length", strconv.Itoa(1<<20))
		w.WriteHeader(200)
		w.Write(bytes.Repeat([]byte("x"), 64<<10))
		http.NewResponseController(w).Flush()
		resetConn(w)
	case "drip":
		n, _ := strconv.Atoi(q.Get("n"))
		every, _ := time.ParseDuration(q.Get("every"))
		rc := http.NewResponseController(w)
		for range n {
			if _, err := w.Write([]byte("d")); err != nil {
				return
			}
			rc.Flush()
			select {
			case <-time.After(every):
			case <-r.Context().Done():
				return
			}
		}
	case "upload":
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			d.uploadErrors.Add(1)
			return
		}
		if want := r.Header.Get("X-Expect-Length"); want != "" && want != strconv.FormatInt(n, 10) {
			d.truncatedAccepted.Add(1)
		}
		fmt.Fprint(w, n)
	case "flaky":
		d.flaky.serve(w, r)
	case "down":
		d.downHits.Add(1)
		w.Header().Set("Retry-After", "0")
		writeProblemJSON(w, 503, "service_unavailable", "fake: down")
	case "download":
		n, _ := strconv.ParseInt(q.Get("n"), 10, 64)
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		io.CopyN(w, zeros{}, n)
	default:
		writeProblemJSON(w, 404, "not_found", "fake: no such path")
	}
}

// resetConn ends the connection with a TCP RST, not a FIN.
func resetConn(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	raw := conn
	if tc, ok := conn.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	if tcp, ok := raw.(*net.TCPConn); ok {
		tcp.SetLinger(0)
	}
	raw.Close()
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// quietLog keeps the fake servers' complaints about the faults they
// inject out of the test output.
func quietLog() *log.Logger { return log.New(io.Discard, "", 0) }

// --- the proxy process ---------------------------------------------------

// proxyProc is the built binary, running.
type proxyProc struct {
	cmd             *exec.Cmd
	proxyAddr       string
	proxyURL, admin string
	stdout, stderr  testkit.SyncBuffer
	exited          chan struct{}
	exitErr         error
	exitedAt        time.Time
	client          *http.Client
}

// env is what every proxy of the suite runs with: the fake Dinie, debug
// logs, and the overrides a test passes as key, value pairs.
func (d *fakeDinie) env(kv ...string) map[string]string {
	m := map[string]string{
		"DINIE_PROXY_UPSTREAM_URL":       d.api.URL + "/api/v3",
		"DINIE_PROXY_UPSTREAM_CA_FILE":   d.caFile,
		"DINIE_PROXY_AUTH_TOKEN_URL":     d.tokenURL(),
		"DINIE_PROXY_AUTH_CLIENT_ID":     "fake-client",
		"DINIE_PROXY_AUTH_CLIENT_SECRET": secret1,
		"DINIE_PROXY_LOG_LEVEL":          "debug",
		"DINIE_PROXY_SHUTDOWN_TIMEOUT":   "10s",
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(m, kv[i])
		} else {
			m[kv[i]] = kv[i+1]
		}
	}
	return m
}

func startProxy(t *testing.T, env map[string]string) *proxyProc {
	t.Helper()
	p := &proxyProc{exited: make(chan struct{})}
	p.cmd = exec.Command(proxyBin, "--listen.proxy", "127.0.0.1:0", "--listen.admin", "127.0.0.1:0")
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exitErr = p.cmd.Wait(); p.exitedAt = time.Now(); close(p.exited) }()
	p.client = &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		MaxIdleConnsPerHost: 1024,
		DisableCompression:  true,
	}}
	t.Cleanup(func() {
		p.client.CloseIdleConnections()
		p.stop(t, 30*time.Second)
		noSecrets(t, "the proxy's stdout", p.stdout.Bytes())
		noSecrets(t, "the proxy's stderr", p.stderr.Bytes())
	})
	deadline := time.Now().Add(15 * time.Second)
	for p.proxyAddr == "" {
		for _, e := range p.logs() {
			if e["msg"] == "listening" {
				p.proxyAddr, _ = e["proxy_addr"].(string)
				admin, _ := e["admin_addr"].(string)
				p.proxyURL, p.admin = "http://"+p.proxyAddr, "http://"+admin
			}
		}
		select {
		case <-p.exited:
			t.Fatalf("the proxy exited at start: %v", p.exitErr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the proxy did not log its addresses within 15 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return p
}

// stop sends SIGTERM and waits; past wait it kills the process.
func (p *proxyProc) stop(t *testing.T, wait time.Duration) {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(wait):
		t.Errorf("the proxy did not exit within %v of SIGTERM", wait)
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// readyBaseline waits for readiness, sends one request through, and returns
// the proxy's goroutine count with no client connection open: what a leak
// check compares with.
func (p *proxyProc) readyBaseline(t *testing.T) int {
	t.Helper()
	p.waitReady(t, 10*time.Second)
	if err := expectOK(p.do(t, context.Background(), "GET", "/ok", nil)); err != nil {
		t.Fatal(err)
	}
	p.client.CloseIdleConnections()
	return p.goroutines(t)
}

// logFlush is how long the proxy may hold a log line in its buffer.
const logFlush = 1200 * time.Millisecond

// flushedLogs waits for the proxy's log buffer to be flushed, then parses
// every line.
func (p *proxyProc) flushedLogs() []map[string]any {
	time.Sleep(logFlush)
	return p.logs()
}

// logs parses the JSON log lines written so far.
func (p *proxyProc) logs() []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(p.stderr.Bytes()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

func (p *proxyProc) waitReady(t *testing.T, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		status, _ := p.adminGet("/readyz")
		if status == 200 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready within %v", within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// adminGet uses a fresh connection each time, so that it never holds one
// of the proxy's goroutines between calls.
func (p *proxyProc) adminGet(path string) (int, string) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(p.admin + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// scrape returns /metrics and checks that it leaks nothing.
func (p *proxyProc) scrape(t *testing.T) string {
	t.Helper()
	status, body := p.adminGet("/metrics")
	if status != 200 {
		t.Fatalf("GET /metrics: %d", status)
	}
	noSecrets(t, "/metrics", []byte(body))
	return body
}

// metric sums the samples of name whose labels contain every one of
// labels (e.g. `result="error"`).
func metric(text, name string, labels ...string) float64 {
	var sum float64
	for line := range strings.Lines(text) {
		if strings.HasPrefix(line, "#") {
			continue
		}
		series, value, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		n, _, _ := strings.Cut(series, "{")
		if n != name {
			continue
		}
		match := true
		for _, l := range labels {
			match = match && strings.Contains(series, l)
		}
		if f, err := strconv.ParseFloat(value, 64); err == nil && match {
			sum += f
		}
	}
	return sum
}

func (p *proxyProc) goroutines(t *testing.T) int {
	return int(metric(p.scrape(t), "go_goroutines"))
}

// settleGoroutines waits until the proxy's goroutines are back within
// margin of baseline, and fails if they do not come back within 15 s.
// margin is called each time: it may allow for pooled connections.
func (p *proxyProc) settleGoroutines(t *testing.T, baseline int, margin func() int) int {
	t.Helper()
	p.client.CloseIdleConnections()
	deadline := time.Now().Add(15 * time.Second)
	for {
		n := p.goroutines(t)
		if n <= baseline+margin() {
			return n
		}
		if time.Now().After(deadline) {
			t.Errorf("proxy goroutines: %d, baseline %d, allowed %d more: a leak", n, baseline, margin())
			return n
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// fixed is a constant margin for settleGoroutines.
func fixed(n int) func() int { return func() int { return n } }

// rss returns the process's VmRSS and VmHWM in KiB.
func (p *proxyProc) rss(t *testing.T) (rss, hwm int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) >= 2 {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			switch f[0] {
			case "VmRSS:":
				rss = n
			case "VmHWM:":
				hwm = n
			}
		}
	}
	return rss, hwm
}

// --- requests ------------------------------------------------------------

type problem struct {
	Type, Title, Detail, Code string
	Status                    int
}

// result is one answer as the app sees it.
type result struct {
	status int
	body   []byte
	ctype  string
	err    error
}

func (r result) problem() (problem, bool) {
	var p problem
	if !strings.HasPrefix(r.ctype, "application/problem+json") || json.Unmarshal(r.body, &p) != nil {
		return p, false
	}
	return p, p.Status == r.status && p.Code != "" && p.Title != "" && p.Type != ""
}

// do sends one request through the proxy and reads the whole answer; any
// non-2xx body is checked for leaks.
func (p *proxyProc) do(t testing.TB, ctx context.Context, method, path string, body io.Reader, hdr ...string) result {
	req, err := http.NewRequestWithContext(ctx, method, p.proxyURL+path, body)
	if err != nil {
		return result{err: err}
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	r := result{status: resp.StatusCode, body: b, ctype: resp.Header.Get("Content-Type"), err: err}
	if resp.StatusCode >= 300 {
		noSecrets(t, fmt.Sprintf("a %d answer", resp.StatusCode), b)
	}
	return r
}

// loadStats counts what a load run saw.
type loadStats struct {
	requests, failures atomic.Int64
	mu                 sync.Mutex
	samples            []string // the first few failures, never a body
	elapsed            time.Duration
}

func (s *loadStats) fail(format string, args ...any) {
	s.failures.Add(1)
	s.mu.Lock()
	if len(s.samples) < 5 {
		s.samples = append(s.samples, fmt.Sprintf(format, args...))
	}
	s.mu.Unlock()
}

func (s *loadStats) String() string {
	return fmt.Sprintf("%d requests, %d failed in %v (%.0f req/s) %v", s.requests.Load(), s.failures.Load(),
		s.elapsed.Round(time.Millisecond), float64(s.requests.Load())/s.elapsed.Seconds(), s.samples)
}

// runLoad runs workers goroutines that call one until maxRequests have
// been sent or d has passed, whichever comes first. one returns an error
// for a failed request.
func runLoad(workers int, maxRequests int64, d time.Duration, one func(ctx context.Context, worker int, i int64) error) *loadStats {
	s := &loadStats{}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := s.requests.Add(1)
				if i > maxRequests {
					s.requests.Add(-1)
					return
				}
				// The request itself is not bound by the load's deadline: a
				// request that has started must be allowed to finish.
				if err := one(context.Background(), w, i); err != nil {
					s.fail("%v", err)
				}
			}
		})
	}
	wg.Wait()
	s.elapsed = time.Since(start)
	return s
}

// expectOK is the check of an ordinary request: 200 and the fake's body.
func expectOK(r result) error {
	switch {
	case r.err != nil:
		return r.err
	case r.status != 200:
		if p, ok := r.problem(); ok {
			return fmt.Errorf("status %d code %s", r.status, p.Code)
		}
		return fmt.Errorf("status %d", r.status)
	case string(r.body) != "ok":
		return errors.New("unexpected body")
	}
	return nil
}

// okRequest is the load of most tests: a GET, or a small POST that the
// proxy can replay, half of them carrying an Authorization header of the
// app's own that the proxy must replace.
func (p *proxyProc) okRequest(t testing.TB) func(ctx context.Context, w int, i int64) error {
	return func(ctx context.Context, w int, i int64) error {
		var hdr []string
		if i%2 == 0 {
			hdr = []string{"Authorization", "Bearer app-supplied-bogus"}
		}
		if i%3 == 0 {
			return expectOK(p.do(t, ctx, "POST", "/ok", strings.NewReader(`{"amount":100}`), hdr...))
		}
		return expectOK(p.do(t, ctx, "GET", "/ok", nil, hdr...))
	}
}
