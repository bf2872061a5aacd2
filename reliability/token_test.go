//go:build reliability

package reliability

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Tokens that live 2 s are refreshed after about 1 s (half their lifetime,
// less up to 10% jitter) and handed out until 1.8 s; 13 s of load sees a
// dozen rotations. Every request must succeed, none may reach the API with
// an expired token, and the endpoint must see one fetch per rotation, not
// one per request or per connection.
func TestRotationUnderLoad(t *testing.T) {
	d := newFakeDinie(t, 2)
	p := startProxy(t, d.env())
	p.waitReady(t, 10*time.Second)
	issuedBefore := d.issuedCount.Load()

	stats := runLoad(32, 2_000_000, 13*time.Second, p.okRequest(t))

	fetches := d.issuedCount.Load() - issuedBefore
	rotations := d.tokensUsed() - 1
	m := p.scrape(t)
	_, hwm := p.rss(t)
	t.Logf("figures: %v; %d rotations, %d token fetches, %d requests reached the API with an expired token, %d with a token never issued; %v upstream 401 retries; peak RSS %d MiB",
		stats, rotations, fetches, d.expiredUses.Load(), d.unknownUses.Load(), metric(m, "dinie_proxy_upstream_401_retries_total"), hwm>>10)

	if n := stats.failures.Load(); n > 0 {
		t.Errorf("%d of %d requests failed, e.g. %v", n, stats.requests.Load(), stats.samples)
	}
	if n := d.expiredUses.Load(); n > 0 {
		t.Errorf("%d requests reached the API with an expired token", n)
	}
	if n := d.unknownUses.Load(); n > 0 {
		t.Errorf("%d requests reached the API with a token Dinie never issued (the app's own header?)", n)
	}
	if rotations < 10 {
		t.Errorf("%d rotations in %v, want at least 10", rotations, stats.elapsed)
	}
	// A fetched token may go unused only if it arrived as the load ended.
	if fetches > int64(rotations)+2 {
		t.Errorf("%d fetches for %d rotations: tokens fetched that no request used", fetches, rotations)
	}
	// The refresh schedule allows one fetch per 0.9 s of a 2 s token.
	if max := int64(stats.elapsed/(900*time.Millisecond)) + 2; fetches > max {
		t.Errorf("%d fetches in %v, the schedule allows %d", fetches, stats.elapsed, max)
	}
	if got := metric(m, "dinie_proxy_token_fetches_total", `result="success"`); got != float64(d.issuedCount.Load()) {
		t.Errorf("fetches_total{result=success} = %v, the endpoint issued %d", got, d.issuedCount.Load())
	}
}

// failedFetch is one "token fetch failed" log line of the proxy.
type failedFetch struct {
	at, retryAt time.Time
	attempt     int
	result      string
}

const zapTime = "2006-01-02T15:04:05.000Z0700"

func (p *proxyProc) failedFetches() []failedFetch {
	var out []failedFetch
	for _, e := range p.logs() {
		if e["msg"] != "token fetch failed" {
			continue
		}
		ts, _ := e["ts"].(string)
		ra, _ := e["retry_at"].(string)
		at, err1 := time.Parse(zapTime, ts)
		retryAt, err2 := time.Parse(zapTime, ra)
		attempt, _ := e["attempt"].(float64)
		result, _ := e["result"].(string)
		if err1 == nil && err2 == nil {
			out = append(out, failedFetch{at: at, retryAt: retryAt, attempt: int(attempt), result: result})
		}
	}
	return out
}

// The token endpoint fails while the token is still valid, then past its
// expiry, then comes back.
//
// The four outages are mostly waiting, so they run at once: from
// goroutines rather than with t.Parallel, which -parallel (GOMAXPROCS, 2
// here) would hold to two at a time.
func TestTokenEndpointOutage(t *testing.T) {
	t.Parallel()
	var wg sync.WaitGroup
	for _, mode := range []tokenMode{token500, tokenHang, tokenRefused, token429} {
		wg.Go(func() { t.Run(mode.String(), func(t *testing.T) { testOutage(t, mode) }) })
	}
	wg.Wait()
}

func testOutage(t *testing.T, mode tokenMode) {
	// A 10 s token with refresh_before 5s: the refresh starts at 4.5-5 s,
	// the token is handed out until 9 s (10 s less a tenth).
	const life = 10 * time.Second
	d := newFakeDinie(t, int64(life/time.Second))
	p := startProxy(t, d.env("DINIE_PROXY_AUTH_REFRESH_BEFORE", "5s", "DINIE_PROXY_UPSTREAM_TIMEOUT", "1s"))
	p.waitReady(t, 10*time.Second)
	// The proxy counts expiry from when it sent the fetch, before this.
	issued := time.Now()
	d.setMode(t, mode)
	baseline := p.goroutines(t)

	// While the token is valid: no request may fail.
	stats := runLoad(4, 1_000_000, time.Until(issued.Add(8*time.Second)), p.okRequest(t))
	if n := stats.failures.Load(); n > 0 {
		t.Errorf("while the token was valid, %d of %d requests failed, e.g. %v", n, stats.requests.Load(), stats.samples)
	}
	// Every attempt the endpoint has seen by now ends within the 1 s fetch
	// timeout, and its log line is flushed within the log's interval.
	seenAtEnd := d.attemptCount(mode)
	time.Sleep(time.Second + logFlush)
	outage := p.failedFetches()
	seenAfter := d.attemptCount(mode)
	if len(outage) == 0 {
		t.Fatal("no refresh was attempted during the outage")
	}
	window := time.Since(outage[0].at)
	// The schedule: 429 waits Retry-After exactly; the rest wait a random
	// time in [100ms, min(30s, 1s·2^(n-1))] (full jitter). Log timestamps
	// are taken a moment after the wait starts, hence the slack.
	for _, f := range outage {
		wait := f.retryAt.Sub(f.at)
		lo, hi := 100*time.Millisecond, time.Duration(math.Min(30, math.Pow(2, float64(f.attempt-1))))*time.Second
		if mode == token429 {
			lo, hi = 2*time.Second, 2*time.Second
		}
		if wait < lo-50*time.Millisecond || wait > hi+5*time.Millisecond {
			t.Errorf("attempt %d (%s) waits %v, the schedule says [%v, %v]", f.attempt, f.result, wait, lo, hi)
		}
	}
	// The count: with Retry-After 2 s at most one attempt per 2 s. With full
	// jitter, ten attempts in a few seconds would need nine draws near the
	// floor from ceilings of up to 30 s (p < 1e-5): more means a storm.
	maxAttempts := 10
	if mode == token429 {
		maxAttempts = int(window/(2*time.Second)) + 1
	}
	if len(outage) > maxAttempts {
		t.Errorf("%d fetch attempts in %v of outage, the schedule allows %d", len(outage), window.Round(time.Millisecond), maxAttempts)
	}
	if mode != tokenRefused && (len(outage) < seenAtEnd || len(outage) > seenAfter) {
		t.Errorf("the proxy logged %d failed attempts; the endpoint saw %d before the logs were read and %d after", len(outage), seenAtEnd, seenAfter)
	}

	// Past expiry: readiness says why, and requests get a fast 503.
	deadline := time.Now().Add(5 * time.Second)
	var readyBody string
	for {
		var status int
		status, readyBody = p.adminGet("/readyz")
		if status == 503 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still ready %v after the token was fetched", time.Since(issued))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(readyBody, "no valid token") {
		t.Errorf("readyz 503 without the reason")
	}
	const burst = 200
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[string]int{}
	for range burst {
		wg.Go(func() {
			r := p.do(t, context.Background(), "GET", "/ok", nil)
			pr, ok := r.problem()
			key := fmt.Sprintf("%d %s", r.status, pr.Code)
			if r.err != nil {
				key = "error"
			} else if !ok {
				key = fmt.Sprintf("%d (not problem+json)", r.status)
			}
			mu.Lock()
			codes[key]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if codes["503 token_unavailable"] != burst {
		t.Errorf("after expiry, %d requests: %v; want all 503 token_unavailable", burst, codes)
	}
	after := p.settleGoroutines(t, baseline, fixed(10))

	// Back: the next attempt the schedule allows succeeds.
	back := time.Now()
	d.setMode(t, tokenOK)
	var recovered time.Time
	for deadline := back.Add(40 * time.Second); recovered.IsZero(); {
		if status, _ := p.adminGet("/readyz"); status == 200 {
			recovered = time.Now()
		} else if time.Now().After(deadline) {
			t.Fatal("not ready 40 s after the endpoint came back")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(logFlush)
	all := p.failedFetches()
	var lastRetry time.Time
	failedAfterBack := 0
	for _, f := range all {
		lastRetry = f.retryAt
		if f.at.After(back) {
			failedAfterBack++
		}
	}
	// One attempt may have been under way when the endpoint came back (a
	// hanging one ends at the fetch timeout); the next must succeed.
	if failedAfterBack > 1 {
		t.Errorf("%d attempts failed after the endpoint came back", failedAfterBack)
	}
	next := lastRetry
	if next.Before(back) {
		next = back
	}
	if limit := next.Add(1500 * time.Millisecond); recovered.After(limit) {
		t.Errorf("recovered %v after the endpoint came back, later than the next scheduled attempt", recovered.Sub(back))
	}
	post := runLoad(4, 100_000, 2*time.Second, p.okRequest(t))
	if n := post.failures.Load(); n > 0 {
		t.Errorf("after recovery %d requests failed: %v", n, post.samples)
	}
	if n := d.expiredUses.Load(); n > 0 {
		t.Errorf("%d requests reached the API with an expired token", n)
	}
	t.Logf("figures (%s): valid-token phase %v; %d failed fetch attempts in %v of outage (endpoint saw %d, limit %d); after expiry %d requests -> %v; goroutines %d before, %d after; recovered %v after the endpoint came back (%d failed after); post-recovery %v",
		mode, stats, len(outage), window.Round(time.Millisecond), seenAfter, maxAttempts, burst, codes, baseline, after,
		recovered.Sub(back).Round(time.Millisecond), failedAfterBack, post)
}

// writeSecret lays out a Secret volume as the kubelet does: the file is a
// symlink through ..data, which points at a timestamped directory, and a
// rotation swaps ..data atomically with a rename.
func writeSecret(t *testing.T, dir, version, secret string) string {
	t.Helper()
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(filepath.Join(dir, version), 0o700))
	must(os.WriteFile(filepath.Join(dir, version, "client_secret"), []byte(secret+"\n"), 0o600))
	must(os.Symlink(version, filepath.Join(dir, "..data_tmp")))
	must(os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
	link := filepath.Join(dir, "client_secret")
	if _, err := os.Lstat(link); err != nil {
		must(os.Symlink(filepath.Join("..data", "client_secret"), link))
	}
	return link
}

// Dinie revokes the secret; the proxy's token is refused, readiness says
// why, and once the Secret volume is swapped the proxy recovers without a
// restart.
func TestRotatedSecretPickedUp(t *testing.T) {
	t.Parallel()
	d := newFakeDinie(t, 3600)
	dir := t.TempDir()
	file := writeSecret(t, dir, "..2026_03_01_00_00_00.1", secret1)
	p := startProxy(t, d.env("DINIE_PROXY_AUTH_CLIENT_SECRET", "", "DINIE_PROXY_AUTH_CLIENT_SECRET_FILE", file))
	p.waitReady(t, 10*time.Second)
	ctx := context.Background()
	if err := expectOK(p.do(t, ctx, "GET", "/ok", nil)); err != nil {
		t.Fatalf("before the rotation: %v", err)
	}
	pid := p.cmd.Process.Pid

	s := secret2
	d.secret.Store(&s)
	d.revokeAll()
	// The upstream 401 drops the token; its replacement is refused.
	first := p.do(t, ctx, "GET", "/ok", nil)
	if first.status != 401 && first.status != 503 {
		t.Errorf("the first request after the revocation: %d, want the upstream's 401 or 503", first.status)
	}
	var reason string
	for deadline := time.Now().Add(5 * time.Second); ; {
		var status int
		if status, reason = p.adminGet("/readyz"); status == 503 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("readyz still 200 after the credentials were rejected")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(reason, "credentials rejected") || !strings.Contains(reason, "client secret revoked") {
		t.Errorf("readyz 503 does not say the credentials were rejected and Dinie's detail")
	}
	r := p.do(t, ctx, "GET", "/ok", nil)
	if pr, ok := r.problem(); !ok || r.status != 503 || pr.Code != "token_unavailable" || !strings.Contains(pr.Detail, "credentials rejected") {
		t.Errorf("a request while rejected: %d %+v, want 503 token_unavailable saying why", r.status, pr)
	}
	logged := false
	for _, e := range p.flushedLogs() {
		if e["msg"] == "token endpoint rejected the credentials" && e["code"] == "invalid_client" && e["title"] == "Unauthorized" && e["detail"] != nil {
			logged = true
		}
	}
	if !logged {
		t.Error("the rejection is not logged with the problem's title, detail and code")
	}

	swapped := time.Now()
	writeSecret(t, dir, "..2026_03_01_00_05_00.2", secret2)
	p.waitReady(t, 5*time.Second)
	took := time.Since(swapped)
	stats := runLoad(4, 100_000, 2*time.Second, p.okRequest(t))
	if n := stats.failures.Load(); n > 0 {
		t.Errorf("after the rotation %d requests failed: %v", n, stats.samples)
	}
	if p.cmd.Process.Pid != pid {
		t.Error("the proxy restarted")
	}
	select {
	case <-p.exited:
		t.Error("the proxy exited")
	default:
	}
	if n := d.rejected.Load(); n > 2 {
		t.Errorf("%d rejected fetches during the rotation, want 1 (retried at most every 30 s)", n)
	}
	t.Logf("figures: rejected fetches %d; ready again %v after the ..data swap; afterwards %v", d.rejected.Load(), took.Round(time.Millisecond), stats)
}
