package proxy_test

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dinie/dinie-auth-proxy/internal/testkit"
	"github.com/dinie/dinie-auth-proxy/proxy"
	"github.com/dinie/dinie-auth-proxy/tokencache"
)

// holdAPI makes the fake upstream keep requests to /hold until release
// is closed, telling arrived of each; other paths answer "ok:" + body.
func holdAPI(e *env) (arrived chan struct{}, release func()) {
	arrived = make(chan struct{}, 16)
	done := make(chan struct{})
	e.setAPI(func(w http.ResponseWriter, r *http.Request, s seen) {
		if r.URL.Path == "/api/v3/hold" {
			arrived <- struct{}{}
			<-done
		}
		io.WriteString(w, "ok:"+s.Body)
	})
	var once sync.Once
	return arrived, func() { once.Do(func() { close(done) }) }
}

// hold sends n requests to /hold, and returns once the upstream has all
// of them; wait returns when their answers are in.
func hold(t *testing.T, e *env, arrived chan struct{}, n int, body string) (wait func()) {
	t.Helper()
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			var r io.Reader
			if body != "" {
				r = strings.NewReader(body)
			}
			req, _ := http.NewRequestWithContext(t.Context(), "POST", e.proxy.URL+"/hold", r)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
	}
	for range n {
		<-arrived
	}
	return wg.Wait
}

func TestRequestsBeyondMaxInFlightAreOverloaded(t *testing.T) {
	forEachSetup(t, testRequestsBeyondMaxInFlightAreOverloaded)
}

func testRequestsBeyondMaxInFlightAreOverloaded(t *testing.T, setup envOption) {
	e := newEnv(t, false, setup, func(_ *env, p *proxy.Config, _ *tokencache.Config) { p.MaxInFlight = 2 })
	arrived, release := holdAPI(e)
	defer release()
	wait := hold(t, e, arrived, 2, "")

	resp, body := do(t, http.DefaultClient, "GET", e.proxy.URL+"/customers", nil)
	assertProblem(t, resp, body, http.StatusServiceUnavailable, "overloaded")
	if got := resp.Header.Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After = %q, want 1", got)
	}
	if calls := e.calls.Load(); calls != 2 {
		t.Errorf("upstream calls = %d, want 2: the request beyond the bound must not be forwarded", calls)
	}
	if v := testkit.Value(t, e.reg, "dinie_proxy_overloaded_total"); v != 1 {
		t.Errorf("dinie_proxy_overloaded_total = %v, want 1", v)
	}
	if v := testkit.Value(t, e.reg, "dinie_proxy_requests_total", "method", "get", "code", "503"); v != 1 {
		t.Errorf("requests_total{code=503} = %v, want 1", v)
	}

	release()
	wait()
	resp, body = do(t, http.DefaultClient, "GET", e.proxy.URL+"/customers", nil)
	if resp.StatusCode != 200 || body != "ok:" {
		t.Errorf("after the burst: %d %q, want 200: the bound must be given back", resp.StatusCode, body)
	}
}

// replayOnceAPI answers 401 to the first try of each X-Request-Id and
// "ok:" + body to a replay; /hold waits as in holdAPI.
func replayOnceAPI(e *env) (arrived chan struct{}, release func()) {
	arrived = make(chan struct{}, 16)
	done := make(chan struct{})
	var mu sync.Mutex
	tried := map[string]bool{}
	e.setAPI(func(w http.ResponseWriter, r *http.Request, s seen) {
		if r.URL.Path == "/api/v3/hold" {
			arrived <- struct{}{}
			<-done
			io.WriteString(w, "ok:"+s.Body)
			return
		}
		mu.Lock()
		first := !tried[s.RequestID]
		tried[s.RequestID] = true
		mu.Unlock()
		if first {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "ok:"+s.Body)
	})
	var once sync.Once
	return arrived, func() { once.Do(func() { close(done) }) }
}

func TestReplayCopiesShareOneBudget(t *testing.T) { forEachSetup(t, testReplayCopiesShareOneBudget) }

func testReplayCopiesShareOneBudget(t *testing.T, setup envOption) {
	clock := &tokenClock{}
	e := newEnv(t, false, setup, withTokenClock(clock), func(_ *env, p *proxy.Config, _ *tokencache.Config) { p.ReplayBudgetBytes = 100 })
	arrived, release := replayOnceAPI(e)
	defer release()
	body := strings.Repeat("b", 80)

	// A held request's copy takes 80 of the 100 bytes: the next body does
	// not fit, streams without a copy and its 401 goes to the app.
	wait := hold(t, e, arrived, 1, body)
	before := e.calls.Load()
	resp, got := do(t, http.DefaultClient, "POST", e.proxy.URL+"/charges", strings.NewReader(body), "X-Request-Id", "r1")
	if resp.StatusCode != 401 {
		t.Errorf("beyond the budget: status %d, want the upstream's 401", resp.StatusCode)
	}
	if n := e.calls.Load() - before; n != 1 {
		t.Errorf("beyond the budget: sent %d times, want once", n)
	}
	if s := e.last(t); s.Body != body {
		t.Errorf("beyond the budget: upstream got %d bytes, want %d", len(s.Body), len(body))
	}

	// Once the held request ends, its bytes are back in the budget. (Ten
	// seconds on, a 401 may cause a token fetch again.)
	release()
	wait()
	clock.advance(10 * time.Second)
	resp, got = do(t, http.DefaultClient, "POST", e.proxy.URL+"/charges", strings.NewReader(body), "X-Request-Id", "r2")
	if resp.StatusCode != 200 || got != "ok:"+body {
		t.Errorf("within the budget again: %d, want 200 with the body replayed", resp.StatusCode)
	}
}

func TestChunkedReplayCopyGrowsWithinTheBudget(t *testing.T) {
	forEachSetup(t, testChunkedReplayCopyGrowsWithinTheBudget)
}

func testChunkedReplayCopyGrowsWithinTheBudget(t *testing.T, setup envOption) {
	e := newEnv(t, false, setup, func(_ *env, p *proxy.Config, _ *tokencache.Config) { p.ReplayBudgetBytes = 6000 })
	replayOnceAPI(e)
	tests := []struct {
		name     string
		size     int
		replayed bool
	}{
		// A copy of unknown length grows as it arrives, each step
		// reserved: it stops being kept once it would pass the budget.
		{"fits", 3000, true},
		{"beyond the budget", 7000, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := strings.Repeat("c", tt.size)
			// MultiReader hides the length: the body goes chunked.
			resp, got := do(t, http.DefaultClient, "POST", e.proxy.URL+"/charges",
				io.MultiReader(strings.NewReader(body)), "X-Request-Id", tt.name)
			switch {
			case tt.replayed && (resp.StatusCode != 200 || got != "ok:"+body):
				t.Errorf("status %d, want 200 with the body replayed", resp.StatusCode)
			case !tt.replayed && resp.StatusCode != 401:
				t.Errorf("status %d, want the upstream's 401", resp.StatusCode)
			}
		})
	}
}
