//go:build reliability

package reliability

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// flakyAPI is a Dinie that fails the first try of one request in five:
// 503 for one in ten, 429 with Retry-After: 1 for another. That is as
// often as the retry budget (a fifth of the requests) can absorb: the
// resend-safe half of the load needs retries for a tenth of it. It keeps
// every try it sees by X-Request-Id, which the proxy passes on unchanged.
type flakyAPI struct {
	n            atomic.Int64
	bodyMismatch atomic.Int64 // a later try whose body differed from the first's

	mu     sync.Mutex
	tries  map[string]int
	bodies map[string]string
}

func (f *flakyAPI) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	id := r.Header.Get("X-Request-Id")
	f.mu.Lock()
	if f.tries == nil {
		f.tries, f.bodies = map[string]int{}, map[string]string{}
	}
	f.tries[id]++
	first := f.tries[id] == 1
	if first {
		f.bodies[id] = string(body)
	} else if f.bodies[id] != string(body) {
		f.bodyMismatch.Add(1)
	}
	f.mu.Unlock()
	if first {
		switch f.n.Add(1) % 10 {
		case 0:
			writeProblemJSON(w, 503, "service_unavailable", "fake: deploying")
			return
		case 5:
			w.Header().Set("Retry-After", "1")
			writeProblemJSON(w, 429, "rate_limited", "fake: slow down")
			return
		}
	}
	io.WriteString(w, "ok")
}

func (f *flakyAPI) triesOf(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tries[id]
}

// Under a Dinie that fails one request in five at first, resend-safe
// requests all succeed, a POST without a key is never sent twice, and an
// SDK's request is sent exactly once (docs/operations.md, "Retries").
func TestFlakyUpstreamUnderLoad(t *testing.T) {
	for _, transport := range []string{"http1", "standard"} {
		t.Run(transport, func(t *testing.T) { testFlakyUpstreamUnderLoad(t, transport) })
	}
}

func testFlakyUpstreamUnderLoad(t *testing.T, transport string) {
	d := newFakeDinie(t, 3600)
	p := startProxy(t, d.env("DINIE_PROXY_UPSTREAM_TRANSPORT", transport, "DINIE_PROXY_LOG_LEVEL", "info"))
	p.waitReady(t, 10*time.Second)

	kinds := []string{"get", "keyed-post", "keyless-post", "sdk-get"}
	var mu sync.Mutex
	ids := map[string][]string{} // kind -> X-Request-Id sent
	passedOn := map[string]int{} // kind -> transient answers the app saw
	stats := runLoad(32, 800, 6*time.Second, func(ctx context.Context, w int, i int64) error {
		kind := kinds[i%int64(len(kinds))]
		id := fmt.Sprintf("%s-%d", kind, i)
		mu.Lock()
		ids[kind] = append(ids[kind], id)
		mu.Unlock()
		var r result
		switch kind {
		case "get":
			r = p.do(t, ctx, "GET", "/flaky", nil, "X-Request-Id", id)
		case "keyed-post":
			r = p.do(t, ctx, "POST", "/flaky", strings.NewReader(`{"amount":`+fmt.Sprint(i)+`}`), "X-Request-Id", id, "X-Idempotency-Key", "key-"+id)
		case "keyless-post":
			r = p.do(t, ctx, "POST", "/flaky", strings.NewReader(`{"amount":1}`), "X-Request-Id", id)
		case "sdk-get":
			r = p.do(t, ctx, "GET", "/flaky", nil, "X-Request-Id", id, "X-Dinie-Sdk-Language", "python")
		}
		if kind == "get" || kind == "keyed-post" {
			return expectOK(r)
		}
		// Sent once: the app sees the first answer, as it came.
		if r.err == nil && (r.status == 503 || r.status == 429) {
			mu.Lock()
			passedOn[kind]++
			mu.Unlock()
			return nil
		}
		return expectOK(r)
	})
	t.Logf("%s: %v; transient answers passed on: %v", transport, stats, passedOn)
	if stats.failures.Load() != 0 {
		t.Errorf("%d requests failed: %v", stats.failures.Load(), stats.samples)
	}
	for _, kind := range kinds {
		if len(ids[kind]) < 20 {
			t.Fatalf("only %d %s requests ran", len(ids[kind]), kind)
		}
		for _, id := range ids[kind] {
			n := d.flaky.triesOf(id)
			switch kind {
			case "get", "keyed-post":
				if n < 1 || n > 3 {
					t.Errorf("%s reached Dinie %d times, want 1 to 3", id, n)
				}
			default:
				if n != 1 {
					t.Errorf("%s reached Dinie %d times, want exactly once", id, n)
				}
			}
		}
	}
	if n := d.flaky.bodyMismatch.Load(); n != 0 {
		t.Errorf("%d retries carried a body other than the first try's", n)
	}
	if passedOn["keyless-post"] == 0 || passedOn["sdk-get"] == 0 {
		t.Errorf("transient answers passed on: %v; the load never failed a request that is sent once", passedOn)
	}
	m := p.scrape(t)
	for _, reason := range []string{"unavailable", "rate_limited"} {
		if v := metric(m, "dinie_proxy_upstream_retries_total", `reason="`+reason+`"`); v == 0 {
			t.Errorf("dinie_proxy_upstream_retries_total{reason=%q} = 0 after the load", reason)
		}
	}
}

// Against a Dinie that always answers 503 (with Retry-After: 0), the
// retry budget keeps its load within a fifth above the apps'
// (docs/operations.md, "Retries"), where without it each request would
// reach Dinie 1 + upstream.retries times.
func TestAlwaysFailingUpstreamGetsLittleMoreThanTheAppsSend(t *testing.T) {
	for _, transport := range []string{"http1", "standard"} {
		t.Run(transport, func(t *testing.T) {
			d := newFakeDinie(t, 3600)
			p := startProxy(t, d.env("DINIE_PROXY_UPSTREAM_TRANSPORT", transport, "DINIE_PROXY_LOG_LEVEL", "info"))
			p.waitReady(t, 10*time.Second)
			stats := runLoad(16, 600, 4*time.Second, func(ctx context.Context, w int, i int64) error {
				r := p.do(t, ctx, "GET", "/down", nil)
				if r.err != nil || r.status != 503 {
					return fmt.Errorf("status %d, %v; want Dinie's 503", r.status, r.err)
				}
				return nil
			})
			sent, hits := stats.requests.Load(), d.downHits.Load()
			exhausted := metric(p.scrape(t), "dinie_proxy_retry_budget_exhausted_total")
			t.Logf("%s: %v; the app sent %d requests, Dinie received %d (%.2fx), budget exhausted %v times",
				transport, stats, sent, hits, float64(hits)/float64(sent), exhausted)
			if stats.failures.Load() != 0 {
				t.Errorf("%d requests did not get Dinie's 503: %v", stats.failures.Load(), stats.samples)
			}
			if limit := float64(sent)*1.2 + 3; float64(hits) > limit {
				t.Errorf("Dinie received %d requests for the apps' %d, over 1.2x + 3 = %.0f", hits, sent, limit)
			}
			if exhausted == 0 {
				t.Error("dinie_proxy_retry_budget_exhausted_total is 0 after the load")
			}
		})
	}
}
