package tokencache_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/dinie/dinie-auth-proxy/internal/testkit"
	"github.com/dinie/dinie-auth-proxy/tokencache"
)

const (
	testClientID = "fake-client-id"
	// testSecret has every character that form-encoding before base64
	// would mangle.
	testSecret = "fake+secret%2F: with space"
)

// tokenEndpoint is a fake Dinie POST /auth/token whose behaviour a test
// swaps at will.
type tokenEndpoint struct {
	*httptest.Server
	fetches atomic.Int64
	handler atomic.Pointer[http.HandlerFunc]
}

func newTokenEndpoint(t *testing.T) *tokenEndpoint {
	t.Helper()
	ep := &tokenEndpoint{}
	ep.set(issue(3600))
	ep.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ep.fetches.Add(1)
		(*ep.handler.Load())(w, r)
	}))
	t.Cleanup(ep.Close)
	return ep
}

func (ep *tokenEndpoint) set(h http.HandlerFunc) { ep.handler.Store(&h) }

func (ep *tokenEndpoint) url() string { return ep.URL + "/api/v3/auth/token" }

// fakeToken is the n-th token the fake endpoint issues.
func fakeToken(n int64) string { return fmt.Sprintf("fake-token-%d", n) }

// issue answers like Dinie's 200, numbering the tokens it hands out. It
// needs the endpoint's fetch count, which it reads from the request context
// set by counted.
func issue(expiresIn int) http.HandlerFunc {
	var n atomic.Int64
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":%q,"token_type":"bearer","expires_in":%d}`, fakeToken(n.Add(1)), expiresIn)
	}
}

func problem(status int, code string, header ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]any{
			"type": "https://docs.dinie.com.br/errors/" + code, "title": http.StatusText(status),
			"status": status, "detail": "fake detail for " + code, "code": code,
			"errors": []map[string]string{{"param": "grant_type", "detail": "fake", "code": code}},
		})
	}
}

func raw(status int, contentType, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

type fixture struct {
	cache *tokencache.Cache
	ep    *tokenEndpoint
	clock *fakeClock
	reg   *prometheus.Registry
	logs  *observer.ObservedLogs
}

func newFixture(t *testing.T, mod func(*tokencache.Config)) *fixture {
	t.Helper()
	f := &fixture{ep: newTokenEndpoint(t), clock: newFakeClock(), reg: prometheus.NewRegistry()}
	core, logs := observer.New(zap.DebugLevel)
	f.logs = logs
	cfg := tokencache.Config{
		TokenURL:     f.ep.url(),
		ClientID:     testClientID,
		ClientSecret: testSecret,
		Clock:        f.clock,
		Logger:       zap.New(core),
		Registerer:   f.reg,
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := tokencache.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	f.cache = c
	t.Cleanup(func() { f.assertNoSecretsLogged(t) })
	return f
}

// run starts the background refresher and stops it when the test ends.
func (f *fixture) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.cache.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// settle waits until the refresher has made fetches in all and parked on
// its timer (plus the credential watcher's, when files are used).
func (f *fixture) settle(t *testing.T, fetches int64, timers int) {
	t.Helper()
	testkit.Eventually(t, fmt.Sprintf("%d fetches and %d timers", fetches, timers), func() bool {
		return f.ep.fetches.Load() == fetches && f.clock.Pending() == timers
	})
}

func (f *fixture) assertNoSecretsLogged(t *testing.T) {
	t.Helper()
	for _, e := range f.logs.All() {
		line := fmt.Sprint(e.Message, e.ContextMap())
		if strings.Contains(line, testSecret) || strings.Contains(line, "fake-token-") || strings.Contains(line, "fake-leaky") {
			t.Errorf("a log line holds a secret or a token (message %q)", e.Message)
		}
	}
}

func TestFetchSendsWhatDinieDocuments(t *testing.T) {
	f := newFixture(t, nil)
	var got *http.Request
	var body string
	f.ep.set(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got, body = r, string(b)
		issue(3600)(w, r)
	})
	if _, err := f.cache.Token(t.Context()); err != nil {
		t.Fatalf("Token: %v", err)
	}
	if got.Method != http.MethodPost || got.URL.Path != "/api/v3/auth/token" {
		t.Errorf("request = %s %s, want POST /api/v3/auth/token", got.Method, got.URL.Path)
	}
	auth, ok := strings.CutPrefix(got.Header.Get("Authorization"), "Basic ")
	if !ok {
		t.Fatal("Authorization is not Basic")
	}
	decoded, err := base64.StdEncoding.DecodeString(auth)
	if err != nil {
		t.Fatalf("Basic credentials are not base64: %v", err)
	}
	id, secret, _ := strings.Cut(string(decoded), ":")
	if id != testClientID || secret != testSecret {
		t.Error("Basic credentials do not carry the raw client id and secret byte for byte")
	}
	if ct := got.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
		t.Errorf("Content-Type = %q", ct)
	}
	if a := got.Header.Get("Accept"); a != "application/json" {
		t.Errorf("Accept = %q", a)
	}
	if body != "grant_type=client_credentials" {
		t.Errorf("body = %q", body)
	}
}

func TestFetchFailuresAreTypedAndStoreNothing(t *testing.T) {
	huge := `{"access_token":"fake-leaky-token","token_type":"bearer","expires_in":3600,"pad":"` + strings.Repeat("x", 2<<20) + `"}`
	tests := []struct {
		name       string
		handler    http.HandlerFunc
		wantStatus int
		wantResult string
		wantCode   string // problem code, when the body is a problem
	}{
		{"400 problem", problem(400, "invalid_request"), 400, "rejected", "invalid_request"},
		{"401 problem", problem(401, "invalid_client"), 401, "rejected", "invalid_client"},
		{"403 plain", raw(403, "text/plain", "forbidden"), 403, "error", ""},
		{"404 html", raw(404, "text/html", "<h1>nope</h1>"), 404, "error", ""},
		{"429 problem", problem(429, "rate_limited"), 429, "rate_limited", "rate_limited"},
		{"500 problem", problem(500, "internal"), 500, "error", "internal"},
		{"502 empty", raw(502, "", ""), 502, "error", ""},
		{"503 problem as json", raw(503, "application/json", `{"title":"down","detail":"fake","code":"maintenance"}`), 503, "error", "maintenance"},
		{"200 not json", raw(200, "application/json", `fake-leaky-token`), 200, "error", ""},
		{"200 array", raw(200, "application/json", `["fake-leaky-token"]`), 200, "error", ""},
		{"200 no access_token", raw(200, "application/json", `{"token_type":"bearer","expires_in":3600}`), 200, "error", ""},
		{"200 empty access_token", raw(200, "application/json", `{"access_token":"","token_type":"bearer","expires_in":3600}`), 200, "error", ""},
		{"200 wrong token_type", raw(200, "application/json", `{"access_token":"fake-leaky-token","token_type":"mac","expires_in":3600}`), 200, "error", ""},
		{"200 no token_type", raw(200, "application/json", `{"access_token":"fake-leaky-token","expires_in":3600}`), 200, "error", ""},
		{"200 expires_in 0", raw(200, "application/json", `{"access_token":"fake-leaky-token","token_type":"bearer","expires_in":0}`), 200, "error", ""},
		{"200 expires_in negative", raw(200, "application/json", `{"access_token":"fake-leaky-token","token_type":"bearer","expires_in":-5}`), 200, "error", ""},
		{"200 no expires_in", raw(200, "application/json", `{"access_token":"fake-leaky-token","token_type":"bearer"}`), 200, "error", ""},
		{"200 expires_in string", raw(200, "application/json", `{"access_token":"fake-leaky-token","token_type":"bearer","expires_in":"3600"}`), 200, "error", ""},
		{"200 of 2 MiB", raw(200, "application/json", huge), 200, "error", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, nil)
			f.ep.set(tt.handler)

			tok, err := f.cache.Token(t.Context())
			if err == nil || tok != "" {
				t.Fatal("Token succeeded, want an error")
			}
			ue, ok := errors.AsType[*tokencache.UnavailableError](err)
			if !ok {
				t.Fatalf("error %T is not an *UnavailableError", err)
			}
			fe, ok := errors.AsType[*tokencache.FetchError](err)
			if !ok {
				t.Fatalf("error does not wrap a *FetchError: %v", err)
			}
			if fe.StatusCode != tt.wantStatus {
				t.Errorf("StatusCode = %d, want %d", fe.StatusCode, tt.wantStatus)
			}
			if string(fe.Result()) != tt.wantResult {
				t.Errorf("Result = %s, want %s", fe.Result(), tt.wantResult)
			}
			if tt.wantCode != "" {
				if fe.Problem == nil || fe.Problem.Code != tt.wantCode || fe.Problem.Title == "" || fe.Problem.Detail == "" {
					t.Errorf("Problem = %+v, want code %s with title and detail", fe.Problem, tt.wantCode)
				}
			} else if tt.wantStatus == 200 && fe.Problem != nil {
				t.Errorf("Problem = %+v for a 200", fe.Problem)
			}
			if msg := err.Error(); strings.Contains(msg, testSecret) || strings.Contains(msg, "fake-leaky") {
				t.Error("error message holds the secret or a token")
			}
			if ue.RetryAt.IsZero() || !ue.RetryAt.After(f.clock.Now()) {
				t.Errorf("RetryAt = %v, want a pause after the failure", ue.RetryAt)
			}
			if f.cache.Ready() == nil {
				t.Error("Ready() = nil after a failed fetch")
			}
			// During the pause a caller fails at once without a fetch.
			if _, err := f.cache.Token(t.Context()); err == nil {
				t.Error("second Token succeeded")
			}
			if n := f.ep.fetches.Load(); n != 1 {
				t.Errorf("fetches = %d, want 1", n)
			}
			if v := testkit.Value(t, f.reg, "dinie_proxy_token_fetches_total", "result", tt.wantResult); v != 1 {
				t.Errorf("dinie_proxy_token_fetches_total{result=%q} = %v, want 1", tt.wantResult, v)
			}
		})
	}
}

func TestFetchDoesNotFollowRedirects(t *testing.T) {
	var elsewhere atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		issue(3600)(w, r)
	}))
	defer other.Close()
	f := newFixture(t, nil)
	f.ep.set(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/steal", http.StatusTemporaryRedirect)
	})
	_, err := f.cache.Token(t.Context())
	if fe, ok := errors.AsType[*tokencache.FetchError](err); !ok || fe.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("Token error = %v, want a FetchError with status 307", err)
	}
	if elsewhere.Load() != 0 {
		t.Error("the redirect was followed: credentials went to another server")
	}
}

func TestRetryPolicyPauses(t *testing.T) {
	tests := []struct {
		name    string
		handler func(now time.Time) http.HandlerFunc
		min     time.Duration
		max     time.Duration
	}{
		{"429 delta-seconds", func(time.Time) http.HandlerFunc {
			return problem(429, "rate_limited", "Retry-After", "120")
		}, 120 * time.Second, 120 * time.Second},
		{"429 http date", func(now time.Time) http.HandlerFunc {
			return problem(429, "rate_limited", "Retry-After", now.Add(90*time.Second).Format(http.TimeFormat))
		}, 90 * time.Second, 90 * time.Second},
		{"429 date in the past falls back to backoff", func(now time.Time) http.HandlerFunc {
			return problem(429, "rate_limited", "Retry-After", now.Add(-time.Hour).Format(http.TimeFormat))
		}, 100 * time.Millisecond, time.Second},
		{"429 without Retry-After falls back to backoff", func(time.Time) http.HandlerFunc {
			return problem(429, "rate_limited")
		}, 100 * time.Millisecond, time.Second},
		{"429 Retry-After is capped", func(time.Time) http.HandlerFunc {
			return problem(429, "rate_limited", "Retry-After", "86400")
		}, 5 * time.Minute, 5 * time.Minute},
		{"401 pauses 30 s", func(time.Time) http.HandlerFunc {
			return problem(401, "invalid_client")
		}, 30 * time.Second, 30 * time.Second},
		{"500 backs off", func(time.Time) http.HandlerFunc {
			return problem(500, "internal")
		}, 100 * time.Millisecond, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, nil)
			f.ep.set(tt.handler(f.clock.Now()))
			_, err := f.cache.Token(t.Context())
			ue, ok := errors.AsType[*tokencache.UnavailableError](err)
			if !ok {
				t.Fatalf("Token error = %v, want *UnavailableError", err)
			}
			if wait := ue.RetryAt.Sub(f.clock.Now()); wait < tt.min || wait > tt.max {
				t.Errorf("pause = %v, want within [%v, %v]", wait, tt.min, tt.max)
			}
		})
	}
}

func TestBackoffGrowsToItsCapAndNoCallerShortensIt(t *testing.T) {
	f := newFixture(t, nil)
	f.ep.set(problem(500, "internal"))
	f.run(t)
	for n := int64(1); n <= 12; n++ {
		f.settle(t, n, 1)
		ue, ok := errors.AsType[*tokencache.UnavailableError](f.cache.Ready())
		if !ok {
			t.Fatalf("Ready() = %v, want *UnavailableError", f.cache.Ready())
		}
		wait := ue.RetryAt.Sub(f.clock.Now())
		ceiling := min(30*time.Second, time.Second<<(n-1))
		if wait < 100*time.Millisecond || wait > ceiling {
			t.Fatalf("after failure %d the pause is %v, want within [100ms, %v]", n, wait, ceiling)
		}
		// Callers during the pause fail at once and fetch nothing.
		for range 50 {
			if _, err := f.cache.Token(t.Context()); err == nil {
				t.Fatal("Token succeeded during an outage")
			}
		}
		if got := f.ep.fetches.Load(); got != n {
			t.Fatalf("fetches = %d after %d failures: callers triggered fetches during the pause", got, n)
		}
		next, _ := f.clock.NextDeadline()
		f.clock.Advance(next)
	}
}

func TestColdStartSharesOneFetch(t *testing.T) {
	f := newFixture(t, nil)
	release := make(chan struct{})
	f.ep.set(func(w http.ResponseWriter, r *http.Request) {
		<-release
		issue(3600)(w, r)
	})

	const callers = 1000
	var started, done sync.WaitGroup
	var failed atomic.Int64
	started.Add(callers)
	for range callers {
		done.Go(func() {
			started.Done()
			tok, err := f.cache.Token(t.Context())
			if err != nil || tok != fakeToken(1) {
				failed.Add(1)
			}
		})
	}
	// One impatient caller gives up without failing the others.
	impatient, cancel := context.WithCancel(t.Context())
	impatientErr := make(chan error, 1)
	go func() {
		_, err := f.cache.Token(impatient)
		impatientErr <- err
	}()
	started.Wait()
	testkit.Eventually(t, "the shared fetch to reach the endpoint", func() bool { return f.ep.fetches.Load() == 1 })
	cancel()
	if err := <-impatientErr; !errors.Is(err, context.Canceled) {
		t.Errorf("impatient caller got %v, want context.Canceled", err)
	}
	close(release)
	done.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d callers did not get the token", n)
	}
	if n := f.ep.fetches.Load(); n != 1 {
		t.Errorf("fetches = %d, want 1", n)
	}
}

func TestTokenWaitsAtMostMaxWait(t *testing.T) {
	f := newFixture(t, func(c *tokencache.Config) { c.MaxWait = 5 * time.Second })
	release := make(chan struct{})
	defer close(release)
	f.ep.set(func(w http.ResponseWriter, r *http.Request) { <-release })
	errc := make(chan error, 1)
	go func() {
		_, err := f.cache.Token(t.Context())
		errc <- err
	}()
	testkit.Eventually(t, "the wait timer", func() bool { return f.clock.Pending() == 1 })
	f.clock.Advance(5 * time.Second)
	err := <-errc
	if _, ok := errors.AsType[*tokencache.UnavailableError](err); !ok || !strings.Contains(err.Error(), "within 5s") {
		t.Errorf("Token = %v, want an *UnavailableError saying it waited 5s", err)
	}
}

func TestRefreshHappensBeforeExpiry(t *testing.T) {
	tests := []struct {
		expiresIn     int
		refreshBefore time.Duration
		wantWindow    time.Duration // refresh this long before expiry, plus up to 10% jitter
	}{
		{3600, 0, 5 * time.Minute},
		{3600, 10 * time.Minute, 10 * time.Minute},
		{10, 0, 5 * time.Second}, // capped at half the lifetime
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("expires_in=%d refresh_before=%v", tt.expiresIn, tt.refreshBefore), func(t *testing.T) {
			f := newFixture(t, func(c *tokencache.Config) { c.RefreshBefore = tt.refreshBefore })
			f.ep.set(issue(tt.expiresIn))
			f.run(t)
			f.settle(t, 1, 1)
			lifetime := time.Duration(tt.expiresIn) * time.Second
			wait, _ := f.clock.NextDeadline()
			earliest, latest := lifetime-tt.wantWindow-tt.wantWindow/10, lifetime-tt.wantWindow
			if wait < earliest || wait > latest {
				t.Fatalf("refresh scheduled %v after the fetch, want within [%v, %v]", wait, earliest, latest)
			}
			f.clock.Advance(wait - time.Millisecond)
			if tok, _ := f.cache.Token(t.Context()); tok != fakeToken(1) || f.ep.fetches.Load() != 1 {
				t.Fatal("token replaced before its refresh time")
			}
			f.clock.Advance(time.Millisecond)
			f.settle(t, 2, 1)
			if tok, _ := f.cache.Token(t.Context()); tok != fakeToken(2) {
				t.Error("Token does not return the refreshed token")
			}
		})
	}
}

func TestOutageServesCurrentTokenUntilItExpires(t *testing.T) {
	f := newFixture(t, nil)
	f.run(t)
	f.settle(t, 1, 1)
	fetchedAt := f.clock.Now()
	validUntil := fetchedAt.Add(time.Hour - 10*time.Second)

	f.ep.set(problem(503, "unavailable"))
	for fetches := int64(1); ; fetches++ {
		f.settle(t, fetches, 1)
		if tok, err := f.cache.Token(t.Context()); err != nil || tok != fakeToken(1) {
			t.Fatalf("at %v into the outage the valid token was not served", f.clock.Now().Sub(fetchedAt))
		}
		if f.cache.Ready() != nil {
			t.Fatal("not ready while a valid token is held")
		}
		next, _ := f.clock.NextDeadline()
		if f.clock.Now().Add(next).After(validUntil) || f.clock.Now().Add(next).Equal(validUntil) {
			break
		}
		f.clock.Advance(next)
	}
	f.clock.Advance(validUntil.Sub(f.clock.Now()))
	if tok, err := f.cache.Token(t.Context()); err == nil || tok != "" {
		t.Fatal("a token was handed out at the end of its validity")
	}
	if f.cache.Ready() == nil {
		t.Error("ready without a valid token")
	}
}

func TestInvalidateIsCompareAndClear(t *testing.T) {
	f := newFixture(t, nil)
	first, err := f.cache.Token(t.Context())
	if err != nil {
		t.Fatal(err)
	}

	var dropped atomic.Int64
	var wrong atomic.Int64
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			if f.cache.Invalidate(first) {
				dropped.Add(1)
			}
			if tok, err := f.cache.Token(t.Context()); err != nil || tok != fakeToken(2) {
				wrong.Add(1)
			}
		})
	}
	wg.Wait()
	if dropped.Load() != 1 {
		t.Errorf("Invalidate dropped the token %d times, want 1", dropped.Load())
	}
	if wrong.Load() != 0 {
		t.Errorf("%d callers did not get the new token", wrong.Load())
	}
	if n := f.ep.fetches.Load(); n != 2 {
		t.Errorf("fetches = %d, want 2", n)
	}

	if n, _ := testutil.GatherAndCount(f.reg, "dinie_proxy_token_expiry_timestamp_seconds"); n != 1 {
		t.Error("expiry gauge missing")
	}

	// A late 401 for the old token must not evict the new one.
	if f.cache.Invalidate(first) {
		t.Error("stale Invalidate dropped the current token")
	}
	if tok, _ := f.cache.Token(t.Context()); tok != fakeToken(2) || f.ep.fetches.Load() != 2 {
		t.Error("stale Invalidate caused a fetch or changed the token")
	}
}

// An endpoint that answers 401 to every token costs one fetch per 10 s,
// not one per request: within 10 s of a 401 that dropped a token, a 401
// for the token that replaced it drops nothing.
func TestInvalidateDropsAtMostOneTokenPer10s(t *testing.T) {
	f := newFixture(t, nil)
	tok, err := f.cache.Token(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for step, tt := range []struct {
		advance     time.Duration
		wantDropped bool
	}{
		{0, true},  // the first 401
		{0, false}, // at once after the fetch it caused
		{9*time.Second + 999*time.Millisecond, false}, // still within 10 s
		{time.Millisecond, true},                      // 10 s later: one more
		{5 * time.Second, false},
	} {
		f.clock.Advance(tt.advance)
		before := f.ep.fetches.Load()
		if dropped := f.cache.Invalidate(tok); dropped != tt.wantDropped {
			t.Fatalf("step %d: Invalidate dropped %v, want %v", step, dropped, tt.wantDropped)
		}
		next, err := f.cache.Token(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		fetched := f.ep.fetches.Load() - before
		if tt.wantDropped && (next == tok || fetched != 1) || !tt.wantDropped && (next != tok || fetched != 0) {
			t.Errorf("step %d: %d fetches, token changed %v; want a new token only when one was dropped", step, fetched, next != tok)
		}
		tok = next
	}
}

// writeSecret lays out a Secret volume as the kubelet does: the files are
// symlinks through ..data, which points at a timestamped directory, and an
// update swaps ..data atomically with a rename.
func writeSecret(t *testing.T, dir, version, id, secret string) {
	t.Helper()
	data := filepath.Join(dir, "..2026_03_01_"+version)
	must(t, os.Mkdir(data, 0o755))
	must(t, os.WriteFile(filepath.Join(data, "client_id"), []byte(id+"\n"), 0o600))
	must(t, os.WriteFile(filepath.Join(data, "client_secret"), []byte(secret+"\n"), 0o600))
	tmp := filepath.Join(dir, "..data_tmp")
	must(t, os.Symlink(filepath.Base(data), tmp))
	must(t, os.Rename(tmp, filepath.Join(dir, "..data")))
	for _, name := range []string{"client_id", "client_secret"} {
		link := filepath.Join(dir, name)
		if _, err := os.Lstat(link); err != nil {
			must(t, os.Symlink(filepath.Join("..data", name), link))
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestRotatedSecretIsPickedUpWithoutRestart(t *testing.T) {
	dir := t.TempDir()
	const rotated = "fake-rotated-secret"
	writeSecret(t, dir, "1", testClientID, "fake-revoked-secret")

	f := newFixture(t, func(c *tokencache.Config) {
		c.ClientID, c.ClientSecret = "", ""
		c.ClientIDFile = filepath.Join(dir, "client_id")
		c.ClientSecretFile = filepath.Join(dir, "client_secret")
	})
	f.ep.set(func(w http.ResponseWriter, r *http.Request) {
		if _, secret, _ := r.BasicAuth(); secret != rotated {
			problem(401, "invalid_client")(w, r)
			return
		}
		issue(3600)(w, r)
	})
	f.run(t)
	f.settle(t, 1, 2) // refresher and credential watcher

	err := f.cache.Ready()
	if fe, ok := errors.AsType[*tokencache.FetchError](err); !ok || fe.Result() != tokencache.ResultRejected {
		t.Fatalf("Ready() = %v, want a rejection", err)
	}
	if !strings.Contains(err.Error(), "credentials rejected") {
		t.Errorf("Ready() does not say the credentials were rejected: %v", err)
	}

	// Unchanged credentials: no retry before 30 s, however often we poll.
	// Stop short of 30 s so that only the rotation can explain a new fetch.
	for range 28 {
		f.clock.Advance(time.Second)
		f.settle(t, 1, 2)
	}

	writeSecret(t, dir, "2", testClientID, rotated)
	f.clock.Advance(time.Second) // the watcher's next poll
	testkit.Eventually(t, "a fetch with the rotated secret", func() bool { return f.cache.Ready() == nil })
	if n := f.ep.fetches.Load(); n != 2 {
		t.Errorf("fetches = %d, want 2", n)
	}
	if tok, err := f.cache.Token(t.Context()); err != nil || tok != fakeToken(1) {
		t.Error("no token after rotation")
	}
}

func TestRejectedCredentialsRetryEvery30s(t *testing.T) {
	f := newFixture(t, nil)
	f.ep.set(problem(401, "invalid_client"))
	f.run(t)
	for n := int64(1); n <= 3; n++ {
		f.settle(t, n, 1)
		if next, _ := f.clock.NextDeadline(); next != 30*time.Second {
			t.Fatalf("next attempt in %v, want 30s", next)
		}
		f.clock.Advance(30 * time.Second)
	}
}

func TestMetrics(t *testing.T) {
	f := newFixture(t, nil)
	if _, err := f.cache.Token(t.Context()); err != nil {
		t.Fatal(err)
	}
	expiry := f.clock.Now().Add(time.Hour).Unix()
	want := fmt.Sprintf(`
# HELP dinie_proxy_token_expiry_timestamp_seconds Unix time at which the current access token expires.
# TYPE dinie_proxy_token_expiry_timestamp_seconds gauge
dinie_proxy_token_expiry_timestamp_seconds %d
# HELP dinie_proxy_token_fetches_total Token endpoint fetches by result: success, rejected (400/401), rate_limited (429), error.
# TYPE dinie_proxy_token_fetches_total counter
dinie_proxy_token_fetches_total{result="error"} 0
dinie_proxy_token_fetches_total{result="rate_limited"} 0
dinie_proxy_token_fetches_total{result="rejected"} 0
dinie_proxy_token_fetches_total{result="success"} 1
`, expiry)
	if err := testutil.GatherAndCompare(f.reg, strings.NewReader(want),
		"dinie_proxy_token_expiry_timestamp_seconds", "dinie_proxy_token_fetches_total"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(f.reg, "dinie_proxy_token_fetch_duration_seconds"); err != nil || n != 1 {
		t.Errorf("dinie_proxy_token_fetch_duration_seconds series = %d, %v; want 1", n, err)
	}
}

func TestFetchesAreLogged(t *testing.T) {
	f := newFixture(t, nil)
	f.ep.set(problem(401, "invalid_client"))
	f.cache.Token(t.Context())
	entries := f.logs.FilterMessage("token endpoint rejected the credentials").All()
	if len(entries) != 1 {
		t.Fatalf("got %d rejection log lines, want 1", len(entries))
	}
	fields := entries[0].ContextMap()
	for key, want := range map[string]any{"status": int64(401), "code": "invalid_client", "title": "Unauthorized", "detail": "fake detail for invalid_client"} {
		if fields[key] != want {
			t.Errorf("log field %s = %v, want %v", key, fields[key], want)
		}
	}
	if _, ok := fields["retry_at"]; !ok {
		t.Error("log line has no retry_at")
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := map[string]tokencache.Config{
		"relative URL":   {TokenURL: "/auth/token", ClientID: "a", ClientSecret: "b"},
		"ftp URL":        {TokenURL: "ftp://example.test/auth/token", ClientID: "a", ClientSecret: "b"},
		"no id":          {TokenURL: "https://example.test/auth/token", ClientSecret: "b"},
		"no secret":      {TokenURL: "https://example.test/auth/token", ClientID: "a"},
		"missing file":   {TokenURL: "https://example.test/auth/token", ClientID: "a", ClientSecretFile: "/nonexistent/secret"},
		"duplicate regs": {TokenURL: "https://example.test/auth/token", ClientID: "a", ClientSecret: "b", Registerer: dupRegistry(t)},
	}
	for name, cfg := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := tokencache.New(cfg); err == nil {
				t.Error("New succeeded")
			}
		})
	}
}

func dupRegistry(t *testing.T) prometheus.Registerer {
	reg := prometheus.NewRegistry()
	if _, err := tokencache.New(tokencache.Config{TokenURL: "https://example.test/auth/token", ClientID: "a", ClientSecret: "b", Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	return reg
}

func TestRunStopsWithItsContext(t *testing.T) {
	f := newFixture(t, nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.cache.Run(ctx) }()
	f.settle(t, 1, 1)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

func BenchmarkTokenValid(b *testing.B) {
	ep := httptest.NewServer(issue(3600))
	defer ep.Close()
	c, err := tokencache.New(tokencache.Config{TokenURL: ep.URL, ClientID: testClientID, ClientSecret: testSecret})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.Token(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Token(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}
