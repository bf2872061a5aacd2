package proxy_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/dinie/dinie-auth-proxy/internal/h1"
	"github.com/dinie/dinie-auth-proxy/internal/testkit"
	"github.com/dinie/dinie-auth-proxy/proxy"
	"github.com/dinie/dinie-auth-proxy/tokencache"
)

// fakeClock is the retries' clock: a wait takes no time, only moves now
// on and is recorded.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	waits []time.Duration
	// onSleep, when set, runs at each wait before it ends.
	onSleep func(ctx context.Context)
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	c.waits = append(c.waits, d)
	c.now = c.now.Add(d)
	hook := c.onSleep
	c.mu.Unlock()
	if hook != nil {
		hook(ctx)
	}
	return ctx.Err()
}

// advance moves now on by d without a wait, as time passing between
// requests.
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) slept() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.waits...)
}

// withClock gives the proxy the fake clock, and any other settings.
func withClock(c *fakeClock, set ...func(*proxy.Config)) envOption {
	return func(_ *env, p *proxy.Config, _ *tokencache.Config) {
		p.Clock = c
		for _, f := range set {
			f(p)
		}
	}
}

// answer is one scripted upstream answer.
type answer func(w http.ResponseWriter, r *http.Request, s seen)

// script makes the upstream give the answers in order, the last one from
// then on.
func (e *env) script(answers ...answer) {
	var mu sync.Mutex
	n := 0
	e.setAPI(func(w http.ResponseWriter, r *http.Request, s seen) {
		mu.Lock()
		a := answers[min(n, len(answers)-1)]
		n++
		mu.Unlock()
		a(w, r, s)
	})
}

func status(code int, header ...string) answer {
	return func(w http.ResponseWriter, r *http.Request, s seen) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.WriteHeader(code)
		fmt.Fprintf(w, "answer %d", code)
	}
}

var okAnswer = status(200)

// hangUp closes the connection with no byte of an answer: with a FIN, or
// with a reset (RST) when rst is set.
func hangUp(rst bool) answer {
	return func(w http.ResponseWriter, r *http.Request, s seen) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		if tc, ok := conn.(*net.TCPConn); ok && rst {
			tc.SetLinger(0)
		}
		conn.Close()
	}
}

func (e *env) seenAll() []seen {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]seen(nil), e.seen...)
}

func retries(t *testing.T, e *env, reason string) float64 {
	t.Helper()
	return testkit.Value(t, e.reg, "dinie_proxy_upstream_retries_total", "reason", reason)
}

func TestTransientFailuresAreRetried(t *testing.T) { forEachSetup(t, testTransientFailuresAreRetried) }

func testTransientFailuresAreRetried(t *testing.T, setup envOption) {
	tests := []struct {
		name   string
		method string
		header []string
		first  answer
		reason string
		// wait is the exact wait, or 0 for a jittered one below 200 ms.
		wait time.Duration
	}{
		{"502", "GET", nil, status(502), "unavailable", 0},
		{"503", "GET", nil, status(503), "unavailable", 0},
		{"504 from the upstream", "GET", nil, status(504), "unavailable", 0},
		{"503 with Retry-After", "GET", nil, status(503, "Retry-After", "2"), "unavailable", 2 * time.Second},
		{"429 with Retry-After", "GET", nil, status(429, "Retry-After", "1"), "rate_limited", time.Second},
		{"closed before answering", "GET", nil, hangUp(false), "unreachable", 0},
		{"HEAD", "HEAD", nil, status(503), "unavailable", 0},
		{"OPTIONS", "OPTIONS", nil, status(503), "unavailable", 0},
		{"DELETE with a key", "DELETE", []string{"X-Idempotency-Key", "k-1"}, status(503), "unavailable", 0},
		{"PUT with the IETF key", "PUT", []string{"Idempotency-Key", "k-2"}, status(502), "unavailable", 0},
		{"POST with a key, closed", "POST", []string{"X-Idempotency-Key", "k-3"}, hangUp(false), "unreachable", 0},
		// The header is dropped on the way, so the request Dinie gets is
		// not an SDK's.
		{"an SDK's header named by the app's Connection", "GET", []string{"X-Dinie-Sdk-Language", "node", "Connection", "X-Dinie-Sdk-Language"}, status(503), "unavailable", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			e := newEnv(t, false, setup, withClock(clock))
			e.script(tt.first, okAnswer)
			resp, _ := do(t, http.DefaultClient, tt.method, e.proxy.URL+"/charges", nil, tt.header...)
			if resp.StatusCode != 200 {
				t.Fatalf("app got %d, want the retry's 200", resp.StatusCode)
			}
			if n := e.calls.Load(); n != 2 {
				t.Errorf("upstream calls = %d, want 2", n)
			}
			if v := retries(t, e, tt.reason); v != 1 {
				t.Errorf("retries{reason=%s} = %v, want 1", tt.reason, v)
			}
			waits := clock.slept()
			if len(waits) != 1 {
				t.Fatalf("waits = %v, want one", waits)
			}
			if tt.wait != 0 && waits[0] != tt.wait {
				t.Errorf("wait = %v, want Retry-After's %v", waits[0], tt.wait)
			}
			if tt.wait == 0 && (waits[0] < 0 || waits[0] >= 200*time.Millisecond) {
				t.Errorf("wait = %v, want a jittered one below 200ms", waits[0])
			}
		})
	}
}

func TestOtherAnswersAreNotRetried(t *testing.T) { forEachSetup(t, testOtherAnswersAreNotRetried) }

func testOtherAnswersAreNotRetried(t *testing.T, setup envOption) {
	tests := []struct {
		name   string
		method string
		header []string
		first  answer
		want   int
	}{
		{"500", "GET", nil, status(500), 500},
		{"501", "GET", nil, status(501), 501},
		{"404", "GET", nil, status(404), 404},
		{"429 without Retry-After", "GET", nil, status(429), 429},
		{"429 with a Retry-After over the cap", "GET", nil, status(429, "Retry-After", "11"), 429},
		{"429 with an HTTP date over the cap", "GET", nil, status(429, "Retry-After", "Sun, 01 Mar 2026 12:00:11 GMT"), 429},
		{"503 with a Retry-After over the cap", "GET", nil, status(503, "Retry-After", "60"), 503},
		{"POST without a key, 503", "POST", nil, status(503), 503},
		{"PATCH without a key, 502", "PATCH", nil, status(502), 502},
		{"DELETE without a key, 504", "DELETE", nil, status(504), 504},
		{"PUT without a key, 429", "PUT", nil, status(429, "Retry-After", "1"), 429},
		{"POST without a key, reset", "POST", nil, hangUp(true), 502},
		{"POST without a key, closed", "POST", nil, hangUp(false), 502},
		{"SDK request", "GET", []string{"X-Dinie-Sdk-Language", "python"}, status(503), 503},
		{"SDK retry", "GET", []string{"X-Dinie-Retry-Count", "1"}, status(503), 503},
		{"SDK POST with its key", "POST", []string{"X-Dinie-Sdk-Language", "node", "X-Idempotency-Key", "k"}, status(503), 503},
		{"SDK User-Agent, in any case", "GET", []string{"User-Agent", "dinie-sdk-python/1.0.0"}, status(503), 503},
		{"SDK header beside a Connection naming another", "GET", []string{"X-Dinie-Retry-Count", "2", "Connection", "X-Other"}, status(503), 503},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			// A long upstream.timeout: only the rules under test may stop a
			// retry.
			e := newEnv(t, false, setup, withClock(clock, func(p *proxy.Config) { p.UpstreamTimeout = time.Hour }))
			e.script(tt.first, okAnswer)
			resp, body := do(t, http.DefaultClient, tt.method, e.proxy.URL+"/charges", strings.NewReader(`{"amount":1}`), tt.header...)
			if resp.StatusCode != tt.want {
				t.Errorf("app got %d, want %d at once", resp.StatusCode, tt.want)
			}
			if tt.want != 502 && body != fmt.Sprintf("answer %d", tt.want) {
				t.Errorf("app got body %q, want the upstream's as it came", body)
			}
			if n := e.calls.Load(); n != 1 {
				t.Errorf("upstream calls = %d, want 1", n)
			}
			if waits := clock.slept(); len(waits) != 0 {
				t.Errorf("waits = %v, want none", waits)
			}
		})
	}
}

// The proxy's own 504 means the upstream has the request and is slow with
// it: a retry would make it do the work twice.
func TestOwnTimeoutIsNotRetried(t *testing.T) { forEachSetup(t, testOwnTimeoutIsNotRetried) }

func testOwnTimeoutIsNotRetried(t *testing.T, setup envOption) {
	clock := newFakeClock()
	release := make(chan struct{})
	short := func(_ *env, p *proxy.Config, _ *tokencache.Config) { p.UpstreamTimeout = 50 * time.Millisecond }
	e := newEnv(t, false, short, setup, withClock(clock))
	defer close(release)
	e.script(func(w http.ResponseWriter, r *http.Request, s seen) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	resp, body := do(t, http.DefaultClient, "GET", e.proxy.URL+"/slow", nil)
	assertProblem(t, resp, body, 504, "upstream_timeout")
	if n := e.calls.Load(); n != 1 {
		t.Errorf("upstream calls = %d, want 1", n)
	}
}

func TestLastAnswerGoesToTheAppAsItCame(t *testing.T) {
	forEachSetup(t, testLastAnswerGoesToTheAppAsItCame)
}

func testLastAnswerGoesToTheAppAsItCame(t *testing.T, setup envOption) {
	core, logs := observer.New(zap.InfoLevel)
	clock := newFakeClock()
	e := newEnv(t, false, setup, withClock(clock, func(p *proxy.Config) { p.Logger = zap.New(core) }))
	e.script(status(503), status(502), status(503, "X-Last", "yes"))
	resp, body := do(t, http.DefaultClient, "GET", e.proxy.URL+"/customers", nil)
	if resp.StatusCode != 503 || body != "answer 503" || resp.Header.Get("X-Last") != "yes" {
		t.Errorf("app got %d %q X-Last=%q, want the third answer", resp.StatusCode, body, resp.Header.Get("X-Last"))
	}
	if n := e.calls.Load(); n != 3 {
		t.Errorf("upstream calls = %d, want 3: upstream.retries defaults to 2", n)
	}
	waits := clock.slept()
	if len(waits) != 2 || waits[0] >= 200*time.Millisecond || waits[1] >= 400*time.Millisecond {
		t.Errorf("waits = %v, want two, below 200ms then 400ms", waits)
	}
	if v := retries(t, e, "unavailable"); v != 2 {
		t.Errorf("retries{reason=unavailable} = %v, want 2", v)
	}
	lines := logs.FilterMessage("request").All()
	if len(lines) != 1 || lines[0].ContextMap()["attempts"] != int64(3) {
		t.Errorf("access lines = %v, want one with attempts=3", lines)
	}
}

func TestBackoffDoublesUpToTheCap(t *testing.T) {
	clock := newFakeClock()
	e := newEnv(t, false, withClock(clock, func(p *proxy.Config) {
		p.Retries, p.RetryMaxWait, p.UpstreamTimeout = 8, time.Second, 1000*time.Hour
	}))
	// 45 requests first, so that the retry budget (a fifth of them) has
	// room for the 8 retries.
	answers := make([]answer, 45, 46)
	for i := range answers {
		answers[i] = okAnswer
	}
	e.script(append(answers, status(503))...)
	for range 45 {
		do(t, http.DefaultClient, "GET", e.proxy.URL+"/customers", nil)
	}
	resp, _ := do(t, http.DefaultClient, "GET", e.proxy.URL+"/customers", nil)
	if resp.StatusCode != 503 || e.calls.Load() != 45+9 {
		t.Fatalf("app got %d after %d calls, want 503 after 9", resp.StatusCode, e.calls.Load()-45)
	}
	for i, w := range clock.slept() {
		bound := min(200*time.Millisecond<<i, time.Second)
		if w < 10*time.Millisecond || w >= bound && !(bound == time.Second && w == time.Second) {
			t.Errorf("wait %d = %v, want from 10ms to below %v", i, w, bound)
		}
	}
}

func TestRetryAfterAsAnHTTPDate(t *testing.T) {
	clock := newFakeClock()
	e := newEnv(t, false, withClock(clock))
	at := clock.Now().Add(4 * time.Second).Format(http.TimeFormat)
	e.script(status(429, "Retry-After", at), okAnswer)
	resp, _ := do(t, http.DefaultClient, "GET", e.proxy.URL+"/customers", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("app got %d, want the retry's 200", resp.StatusCode)
	}
	if waits := clock.slept(); len(waits) != 1 || waits[0] != 4*time.Second {
		t.Errorf("waits = %v, want [4s]", waits)
	}
	if v := retries(t, e, "rate_limited"); v != 1 {
		t.Errorf("retries{reason=rate_limited} = %v, want 1", v)
	}
}

// No retry starts later than upstream.timeout after the request arrived.
func TestRetriesStayWithinTheUpstreamTimeout(t *testing.T) {
	clock := newFakeClock()
	e := newEnv(t, false, withClock(clock, func(p *proxy.Config) {
		p.Retries, p.UpstreamTimeout = 5, 5*time.Second
	}))
	e.script(status(503, "Retry-After", "3"))
	resp, body := do(t, http.DefaultClient, "GET", e.proxy.URL+"/customers", nil)
	if resp.StatusCode != 503 || body != "answer 503" {
		t.Errorf("app got %d %q, want the upstream's 503", resp.StatusCode, body)
	}
	if n := e.calls.Load(); n != 2 {
		t.Errorf("upstream calls = %d, want 2: a third try would start 6s after arrival", n)
	}
	if waits := clock.slept(); len(waits) != 1 || waits[0] != 3*time.Second {
		t.Errorf("waits = %v, want [3s]", waits)
	}
}

func TestRetriesCanBeTurnedOff(t *testing.T) {
	clock := newFakeClock()
	e := newEnv(t, false, withClock(clock, func(p *proxy.Config) { p.Retries = 0 }))
	e.script(status(503), okAnswer)
	if resp, _ := do(t, http.DefaultClient, "GET", e.proxy.URL+"/customers", nil); resp.StatusCode != 503 || e.calls.Load() != 1 {
		t.Errorf("app got %d after %d calls, want 503 after 1", resp.StatusCode, e.calls.Load())
	}
}

// A keyed POST goes again with the same key and the same body bytes.
func TestKeyedPostIsRetriedWithTheSameKeyAndBody(t *testing.T) {
	forEachSetup(t, testKeyedPostIsRetriedWithTheSameKeyAndBody)
}

func testKeyedPostIsRetriedWithTheSameKeyAndBody(t *testing.T, setup envOption) {
	for _, first := range []struct {
		name string
		a    answer
		warm bool // on a kept-alive connection
	}{{"503", status(503), false}, {"closed", hangUp(false), false}, {"closed, kept-alive connection", hangUp(false), true}} {
		t.Run(first.name, func(t *testing.T) {
			e := newEnv(t, false, setup, withClock(newFakeClock()))
			if first.warm {
				do(t, http.DefaultClient, "GET", e.proxy.URL+"/warm-up", nil)
				e.mu.Lock()
				e.seen = nil
				e.mu.Unlock()
			}
			e.script(first.a, okAnswer)
			payload := `{"amount":1000,"customer":"c-1"}`
			resp, _ := do(t, http.DefaultClient, "POST", e.proxy.URL+"/charges", strings.NewReader(payload), "X-Idempotency-Key", "key-123")
			if resp.StatusCode != 200 {
				t.Fatalf("app got %d, want the retry's 200", resp.StatusCode)
			}
			all := e.seenAll()
			if len(all) != 2 {
				t.Fatalf("upstream saw %d requests, want 2", len(all))
			}
			for i, s := range all {
				if s.Body != payload || s.Header.Get("X-Idempotency-Key") != "key-123" {
					t.Errorf("try %d: body %q key %q, want the app's", i+1, s.Body, s.Header.Get("X-Idempotency-Key"))
				}
			}
		})
	}
}

// A reset before the first byte of an answer is placed for sure only by
// H1Transport (net/http's transport returns the same error for a reset in
// the middle of the headers).
func TestResetBeforeAnsweringIsRetried(t *testing.T) {
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			e := newEnv(t, false, srv.opt, withClock(newFakeClock()))
			e.script(hangUp(true), okAnswer)
			resp, _ := do(t, http.DefaultClient, "POST", e.proxy.URL+"/charges", strings.NewReader("x"), "Idempotency-Key", "k")
			if resp.StatusCode != 200 || e.calls.Load() != 2 {
				t.Errorf("app got %d after %d calls, want 200 after 2", resp.StatusCode, e.calls.Load())
			}
			if v := retries(t, e, "unreachable"); v != 1 {
				t.Errorf("retries{reason=unreachable} = %v, want 1", v)
			}
		})
	}
}

func TestUnreachableUpstreamIsRetried(t *testing.T) {
	forEachSetup(t, testUnreachableUpstreamIsRetried)
}

func testUnreachableUpstreamIsRetried(t *testing.T, setup envOption) {
	core, logs := observer.New(zap.InfoLevel)
	clock := newFakeClock()
	e := newEnv(t, false, setup, withClock(clock, func(p *proxy.Config) { p.Logger = zap.New(core) }))
	e.upstream.Close() // nothing listens on its port any more
	resp, body := do(t, http.DefaultClient, "GET", e.proxy.URL+"/customers", nil)
	assertProblem(t, resp, body, 502, "upstream_unreachable")
	if v := retries(t, e, "unreachable"); v != 2 {
		t.Errorf("retries{reason=unreachable} = %v, want 2", v)
	}
	resp, body = do(t, http.DefaultClient, "POST", e.proxy.URL+"/charges", strings.NewReader("x"))
	assertProblem(t, resp, body, 502, "upstream_unreachable")
	lines := logs.FilterMessage("request").All()
	if len(lines) != 2 || lines[0].ContextMap()["attempts"] != int64(3) || lines[1].ContextMap()["attempts"] != int64(1) {
		t.Errorf("access lines = %v, want attempts 3 (GET) and 1 (POST without a key)", lines)
	}
}

// The rate-limit gauges follow every answer Dinie gives, those the app
// never sees too: a 401 replayed and a 429 retried tell the most about
// the limit.
func TestRateLimitGaugesSeeEveryTry(t *testing.T) { forEachSetup(t, testRateLimitGaugesSeeEveryTry) }

func testRateLimitGaugesSeeEveryTry(t *testing.T, setup envOption) {
	e := newEnv(t, false, setup, withClock(newFakeClock()))
	e.script(
		status(401, "X-RateLimit-Limit", "1000", "X-RateLimit-Remaining", "7"),
		status(429, "Retry-After", "1", "X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "1772366400"),
		okAnswer,
	)
	if resp, _ := do(t, http.DefaultClient, "GET", e.proxy.URL+"/customers", nil); resp.StatusCode != 200 {
		t.Fatalf("app got %d, want the third try's 200", resp.StatusCode)
	}
	for name, want := range map[string]float64{
		"dinie_proxy_upstream_ratelimit_limit":                   1000,
		"dinie_proxy_upstream_ratelimit_remaining":               0,
		"dinie_proxy_upstream_ratelimit_reset_timestamp_seconds": 1772366400,
	} {
		if got := testkit.Value(t, e.reg, name); got != want {
			t.Errorf("%s = %v, want %v from the answers the app did not get", name, got, want)
		}
	}
}

// A 401 is replayed once with a fresh token, which is not a retry; a 503
// after it is retried as any other.
func Test401Then503IsOneReplayThenRetries(t *testing.T) {
	forEachSetup(t, test401Then503IsOneReplayThenRetries)
}

func test401Then503IsOneReplayThenRetries(t *testing.T, setup envOption) {
	core, logs := observer.New(zap.InfoLevel)
	// One retry: the replay must not use it up.
	e := newEnv(t, false, setup, withClock(newFakeClock(), func(p *proxy.Config) { p.Logger, p.Retries = zap.New(core), 1 }))
	e.script(status(401), status(503), okAnswer)
	resp, _ := do(t, http.DefaultClient, "GET", e.proxy.URL+"/customers", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("app got %d, want 200", resp.StatusCode)
	}
	var auths []string
	for _, s := range e.seenAll() {
		auths = append(auths, s.Auth)
	}
	if want := []string{"Bearer fake-token-1", "Bearer fake-token-2", "Bearer fake-token-2"}; strings.Join(auths, ",") != strings.Join(want, ",") {
		t.Errorf("tries carried %q, want %q", auths, want)
	}
	if v := testkit.Value(t, e.reg, "dinie_proxy_upstream_401_retries_total"); v != 1 {
		t.Errorf("401 replays = %v, want 1", v)
	}
	if v := retries(t, e, "unavailable"); v != 1 {
		t.Errorf("retries{reason=unavailable} = %v, want 1", v)
	}
	lines := logs.FilterMessage("request").All()
	if len(lines) != 1 || lines[0].ContextMap()["attempts"] != int64(3) || lines[0].ContextMap()["retried_401"] != true {
		t.Errorf("access lines = %v, want attempts=3 and retried_401", lines)
	}
}

// A retry takes the token current when it starts, not the one of the try
// before.
func TestRetryTakesTheCurrentToken(t *testing.T) {
	clock := newFakeClock()
	e := newEnv(t, false, withClock(clock))
	clock.onSleep = func(context.Context) { e.tokens.Invalidate("fake-token-1") }
	e.script(status(503), okAnswer)
	if resp, _ := do(t, http.DefaultClient, "GET", e.proxy.URL+"/customers", nil); resp.StatusCode != 200 {
		t.Fatalf("app got %d, want 200", resp.StatusCode)
	}
	if s := e.last(t); s.Auth != "Bearer fake-token-2" {
		t.Errorf("retry carried %q, want the token fetched during the wait", s.Auth)
	}
}

// The app hanging up during a wait ends the retries.
func TestAppHangingUpStopsTheRetries(t *testing.T) {
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			clock := newFakeClock()
			e := newEnv(t, false, srv.opt, withClock(clock))
			ctx, cancel := context.WithCancel(t.Context())
			clock.onSleep = func(ctx context.Context) {
				cancel()
				<-ctx.Done() // the request's: ends once the proxy sees the app gone
			}
			e.script(status(503), okAnswer)
			req, _ := http.NewRequestWithContext(ctx, "GET", e.proxy.URL+"/customers", nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
				t.Fatalf("app got %d, want its own cancellation", resp.StatusCode)
			}
			testkit.Eventually(t, "the wait ends", func() bool { return testkit.Value(t, e.reg, "dinie_proxy_requests_in_flight") == 0 })
			if n := e.calls.Load(); n != 1 {
				t.Errorf("upstream calls = %d, want 1", n)
			}
		})
	}
}

// A body that was not kept (over upstream.max_replay_bytes, or not within
// upstream.replay_budget_bytes) cannot go again, key or not.
func TestBodyNotKeptIsNotRetried(t *testing.T) { forEachSetup(t, testBodyNotKeptIsNotRetried) }

func testBodyNotKeptIsNotRetried(t *testing.T, setup envOption) {
	for _, tt := range []struct {
		name string
		set  func(*proxy.Config)
	}{
		{"over max_replay_bytes", func(p *proxy.Config) { p.MaxReplayBytes = 16 }},
		{"over the budget", func(p *proxy.Config) { p.ReplayBudgetBytes = 16 }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, false, setup, withClock(newFakeClock(), tt.set))
			e.script(status(503), okAnswer)
			resp, _ := do(t, http.DefaultClient, "POST", e.proxy.URL+"/charges", strings.NewReader(strings.Repeat("x", 17)), "X-Idempotency-Key", "k")
			if resp.StatusCode != 503 || e.calls.Load() != 1 {
				t.Errorf("app got %d after %d calls, want 503 after 1", resp.StatusCode, e.calls.Load())
			}
			if s := e.last(t); len(s.Body) != 17 {
				t.Errorf("upstream got %d bytes, want the whole body", len(s.Body))
			}
		})
	}
}

var autoKey = regexp.MustCompile(`^dinie-auth-proxy-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestAutoIdempotencyKeys(t *testing.T) { forEachSetup(t, testAutoIdempotencyKeys) }

func testAutoIdempotencyKeys(t *testing.T, setup envOption) {
	auto := func(p *proxy.Config) { p.IdempotencyKeys = true }
	t.Run("unsafe methods get one, the same on every try", func(t *testing.T) {
		clock := newFakeClock()
		e := newEnv(t, false, setup, withClock(clock, auto))
		keys := map[string]bool{}
		for _, method := range []string{"POST", "PUT", "PATCH", "DELETE"} {
			clock.advance(10 * time.Second) // a fresh retry budget for each
			e.script(status(503), okAnswer)
			e.mu.Lock()
			e.seen = nil
			e.mu.Unlock()
			resp, _ := do(t, http.DefaultClient, method, e.proxy.URL+"/charges", strings.NewReader("body"))
			all := e.seenAll()
			if resp.StatusCode != 200 || len(all) != 2 {
				t.Fatalf("%s: app got %d after %d tries, want 200 after 2", method, resp.StatusCode, len(all))
			}
			k := all[0].Header.Get("X-Idempotency-Key")
			if !autoKey.MatchString(k) || all[1].Header.Get("X-Idempotency-Key") != k || all[1].Body != "body" {
				t.Errorf("%s: keys %q and %q, want one dinie-auth-proxy-<uuid v4> on both", method, k, all[1].Header.Get("X-Idempotency-Key"))
			}
			keys[k] = true
		}
		if len(keys) != 4 {
			t.Errorf("%d distinct keys for 4 requests", len(keys))
		}
	})
	t.Run("the app's key and safe methods are left alone", func(t *testing.T) {
		e := newEnv(t, false, setup, withClock(newFakeClock(), auto))
		do(t, http.DefaultClient, "POST", e.proxy.URL+"/charges", strings.NewReader("x"), "Idempotency-Key", "app-key")
		if s := e.last(t); s.Header.Get("Idempotency-Key") != "app-key" || s.Header.Get("X-Idempotency-Key") != "app-key" {
			t.Errorf("upstream saw Idempotency-Key %q X-Idempotency-Key %q, want the app's in both", s.Header.Get("Idempotency-Key"), s.Header.Get("X-Idempotency-Key"))
		}
		do(t, http.DefaultClient, "GET", e.proxy.URL+"/customers", nil)
		if k := e.last(t).Header.Get("X-Idempotency-Key"); k != "" {
			t.Errorf("GET got key %q, want none", k)
		}
	})
	t.Run("SDK requests are left alone", func(t *testing.T) {
		e := newEnv(t, false, setup, withClock(newFakeClock(), auto))
		e.script(status(503), okAnswer)
		resp, _ := do(t, http.DefaultClient, "POST", e.proxy.URL+"/charges", strings.NewReader("x"), "X-Dinie-Sdk-Language", "go")
		if k := e.last(t).Header.Get("X-Idempotency-Key"); k != "" || resp.StatusCode != 503 || e.calls.Load() != 1 {
			t.Errorf("app got %d after %d calls, key %q; want 503 after 1, no key", resp.StatusCode, e.calls.Load(), k)
		}
	})
	t.Run("off by default", func(t *testing.T) {
		e := newEnv(t, false, setup, withClock(newFakeClock()))
		e.script(status(503), okAnswer)
		resp, _ := do(t, http.DefaultClient, "POST", e.proxy.URL+"/charges", strings.NewReader("x"))
		if k := e.last(t).Header.Get("X-Idempotency-Key"); k != "" || resp.StatusCode != 503 || e.calls.Load() != 1 {
			t.Errorf("app got %d after %d calls, key %q; want 503 after 1, no key", resp.StatusCode, e.calls.Load(), k)
		}
	})
}

// Every reason's series exists from the start, at 0.
func TestRetryMetricSeriesExistAtZero(t *testing.T) {
	e := newEnv(t, false)
	for _, reason := range []string{"unreachable", "unavailable", "rate_limited"} {
		if v, ok := testkit.Lookup(t, e.reg, "dinie_proxy_upstream_retries_total", "reason", reason); !ok || v != 0 {
			t.Errorf("retries{reason=%s} = %v (present %v), want 0", reason, v, ok)
		}
	}
}

// An upstream whose certificate is not trusted stays untrusted: no retry.
func TestUntrustedUpstreamIsNotRetried(t *testing.T) {
	untrusting := func(e *env, p *proxy.Config, _ *tokencache.Config) {
		h1t, err := h1.NewTransport(p.Upstream, h1.TransportConfig{})
		if err != nil {
			t.Fatal(err)
		}
		p.Transport = h1t
	}
	e := newEnv(t, true, untrusting, withClock(newFakeClock()))
	resp, body := do(t, http.DefaultClient, "GET", e.proxy.URL+"/customers", nil)
	assertProblem(t, resp, body, 502, "upstream_unreachable")
	if v := retries(t, e, "unreachable"); v != 0 {
		t.Errorf("retries{reason=unreachable} = %v, want 0", v)
	}
}
