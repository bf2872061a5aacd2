//go:build reliability

package reliability

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// The upstream resets, hangs, drips and refuses a token: the app gets a
// clean problem or a stream that ends in an error it can see, and the
// proxy stays healthy. Both upstream transports are checked.
func TestUpstreamMisbehaviour(t *testing.T) {
	for _, transport := range []string{"http1", "standard"} {
		t.Run(transport, func(t *testing.T) { testUpstreamMisbehaviour(t, transport) })
	}
}

func testUpstreamMisbehaviour(t *testing.T, transport string) {
	d := newFakeDinie(t, 3600)
	p := startProxy(t, d.env("DINIE_PROXY_UPSTREAM_TRANSPORT", transport, "DINIE_PROXY_UPSTREAM_TIMEOUT", "2s"))
	baseline := p.readyBaseline(t)
	ctx := context.Background()
	figures := map[string]string{}

	// concurrently sends n requests and tallies their outcomes.
	concurrently := func(n int, one func(i int) string) map[string]int {
		var wg sync.WaitGroup
		var mu sync.Mutex
		tally := map[string]int{}
		for i := range n {
			wg.Go(func() {
				k := one(i)
				mu.Lock()
				tally[k]++
				mu.Unlock()
			})
		}
		wg.Wait()
		return tally
	}
	outcome := func(r result) string {
		if r.err != nil {
			return "error"
		}
		if pr, ok := r.problem(); ok {
			return fmt.Sprintf("%d %s", r.status, pr.Code)
		}
		if r.status == 200 {
			return "200 " + string(r.body)
		}
		return fmt.Sprint(r.status)
	}

	t.Run("connection reset before the headers", func(t *testing.T) {
		got := concurrently(10, func(int) string { return outcome(p.do(t, ctx, "GET", "/reset-before", nil)) })
		figures["reset before headers"] = fmt.Sprint(got)
		if got["502 upstream_unreachable"] != 10 {
			t.Errorf("10 requests: %v, want all 502 upstream_unreachable problems", got)
		}
	})

	t.Run("connection reset mid-response", func(t *testing.T) {
		got := concurrently(10, func(int) string {
			resp, err := p.client.Get(p.proxyURL + "/reset-mid")
			if err != nil {
				return "error before the headers"
			}
			defer resp.Body.Close()
			n, err := io.Copy(io.Discard, resp.Body)
			switch {
			case err == nil:
				return fmt.Sprintf("%d: complete body of %d bytes", resp.StatusCode, n)
			case n >= 1<<20:
				return "error after the whole body"
			}
			return fmt.Sprintf("%d, then the stream broke", resp.StatusCode)
		})
		figures["reset mid-response"] = fmt.Sprint(got)
		if got["200, then the stream broke"] != 10 {
			t.Errorf("10 requests: %v, want every stream to end in an error the app sees", got)
		}
	})

	t.Run("hanging upstream", func(t *testing.T) {
		got := concurrently(20, func(int) string { return outcome(p.do(t, ctx, "GET", "/hang", nil)) })
		figures["hanging upstream"] = fmt.Sprint(got)
		if got["504 upstream_timeout"] != 20 {
			t.Errorf("20 requests: %v, want all 504 upstream_timeout problems", got)
		}
	})

	t.Run("slow-drip body", func(t *testing.T) {
		// 40 bytes, one every 50 ms: 2 s in all, as long as upstream.timeout,
		// which bounds only the wait for the headers.
		want := "200 " + strings.Repeat("d", 40)
		got := concurrently(10, func(int) string { return outcome(p.do(t, ctx, "GET", "/drip?n=40&every=50ms", nil)) })
		figures["slow drip"] = fmt.Sprintf("%d of 10 complete", got[want])
		if got[want] != 10 {
			t.Errorf("10 dripped responses: %d complete", got[want])
		}
	})

	t.Run("401 storm for one token", func(t *testing.T) {
		before := p.scrape(t)
		issued := d.issuedCount.Load()
		d.revokeAll()
		got := concurrently(200, func(i int) string {
			if i%2 == 0 {
				return outcome(p.do(t, ctx, "POST", "/ok", strings.NewReader(`{"amount":100}`)))
			}
			return outcome(p.do(t, ctx, "GET", "/ok", nil))
		})
		after := p.scrape(t)
		fetches := metric(after, "dinie_proxy_token_fetches_total") - metric(before, "dinie_proxy_token_fetches_total")
		retries := metric(after, "dinie_proxy_upstream_401_retries_total") - metric(before, "dinie_proxy_upstream_401_retries_total")
		figures["401 storm"] = fmt.Sprintf("200 requests -> %v; %v token fetches, %v retries, %d requests saw the 401", got, fetches, retries, d.revokedUses.Load())
		if got["200 ok"] != 200 {
			t.Errorf("200 requests during a 401 storm: %v, want every one retried to success", got)
		}
		if fetches != 1 || d.issuedCount.Load()-issued != 1 {
			t.Errorf("%v token fetches after a 401 storm for one token, want 1", fetches)
		}
	})

	t.Run("still healthy", func(t *testing.T) {
		if status, _ := p.adminGet("/healthz"); status != 200 {
			t.Errorf("healthz %d", status)
		}
		if status, _ := p.adminGet("/readyz"); status != 200 {
			t.Errorf("readyz %d", status)
		}
		stats := runLoad(4, 100_000, time.Second, p.okRequest(t))
		if stats.failures.Load() > 0 {
			t.Errorf("after the faults: %v", stats)
		}
		figures["afterwards"] = stats.String()
	})

	// net/http's transport keeps two goroutines per pooled connection;
	// h1.Transport none.
	perConn := 0
	if transport == "standard" {
		perConn = 2
	}
	after := p.settleGoroutines(t, baseline, func() int { return 5 + perConn*int(d.apiConns.Load()) })
	waitZero(t, "fake API handlers still running (upstream connections the proxy left open)", d.apiActive.Load)
	if n := metric(p.scrape(t), "dinie_proxy_requests_in_flight"); n != 0 {
		t.Errorf("%v requests still in flight", n)
	}
	t.Logf("figures (%s): %v; goroutines %d before, %d after with %d pooled upstream connections", transport, figures, baseline, after, d.apiConns.Load())
}

// waitZero waits up to 10 s for n to reach zero.
func waitZero(t *testing.T, what string, n func() int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for n() != 0 {
		if time.Now().After(deadline) {
			t.Errorf("%d %s", n(), what)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
