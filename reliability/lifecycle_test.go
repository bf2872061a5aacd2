//go:build reliability

package reliability

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// SIGTERM under load: every request the proxy accepted before the signal
// completes, new connections are refused, and the process exits 0 within
// shutdown.timeout.
func TestSIGTERMUnderLoad(t *testing.T) {
	const shutdownTimeout = 5 * time.Second
	d := newFakeDinie(t, 3600)
	p := startProxy(t, d.env("DINIE_PROXY_SHUTDOWN_TIMEOUT", shutdownTimeout.String()))
	p.waitReady(t, 10*time.Second)

	// 40 slow requests (2 s upstream) are in flight at the signal...
	const slow = 40
	slowDone := make(chan error, slow)
	for i := range slow {
		go func() {
			id := fmt.Sprintf("slow-%d", i)
			slowDone <- expectOK(p.do(t, context.Background(), "GET", "/slow?ms=2000", nil, "X-Request-Id", id))
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; i < slow; {
		if d.sawRequest(fmt.Sprintf("slow-%d", i)) {
			i++
			continue
		}
		if time.Now().After(deadline) {
			t.Fatal("the slow requests did not reach the API")
		}
		time.Sleep(5 * time.Millisecond)
	}

	// ...and 8 workers send quick ones before, during and after it.
	type outcome struct {
		id  string
		err error
	}
	var mu sync.Mutex
	var fast []outcome
	var signalled atomic.Bool
	loadDone := make(chan *loadStats)
	go func() {
		loadDone <- runLoad(8, 1_000_000, 4*time.Second, func(ctx context.Context, w int, i int64) error {
			id := fmt.Sprintf("fast-%d", i)
			err := expectOK(p.do(t, ctx, "GET", "/ok", nil, "X-Request-Id", id))
			mu.Lock()
			fast = append(fast, outcome{id, err})
			mu.Unlock()
			if err != nil && !signalled.Load() {
				return fmt.Errorf("before the signal: %w", err)
			}
			return nil
		})
	}()
	time.Sleep(time.Second)

	signalled.Store(true)
	sent := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// New connections are refused while the slow requests drain.
	var refusedAfter time.Duration
	for deadline := time.Now().Add(3 * time.Second); refusedAfter == 0; time.Sleep(5 * time.Millisecond) {
		conn, err := net.DialTimeout("tcp", p.proxyAddr, time.Second)
		if err != nil {
			refusedAfter = time.Since(sent)
			break
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatal("the proxy still accepts connections 3 s after SIGTERM")
		}
	}
	drainingReady, _ := p.adminGet("/readyz")

	var slowFailed int
	for range slow {
		if err := <-slowDone; err != nil {
			slowFailed++
			t.Errorf("a request in flight at SIGTERM failed: %v", err)
		}
	}
	stats := <-loadDone
	select {
	case <-p.exited:
	case <-time.After(shutdownTimeout + 5*time.Second):
		t.Fatalf("no exit %v after SIGTERM", shutdownTimeout+5*time.Second)
	}
	exitedAfter := p.exitedAt.Sub(sent)
	if p.exitErr != nil {
		t.Errorf("exit: %v, want status 0", p.exitErr)
	}
	if exitedAfter > shutdownTimeout+2*time.Second {
		t.Errorf("exited %v after SIGTERM, shutdown.timeout is %v", exitedAfter, shutdownTimeout)
	}

	// Every quick request the API saw was answered 200; the others failed
	// to connect, and none got an error answer from the proxy.
	var accepted, lost, refused int
	for _, o := range fast {
		switch {
		case o.err == nil:
			accepted++
		case d.sawRequest(o.id):
			lost++
		default:
			refused++
		}
	}
	if lost > 0 {
		t.Errorf("%d requests reached the API but their answers were lost", lost)
	}
	if stats.failures.Load() > 0 {
		t.Errorf("requests failed before the signal: %v", stats.samples)
	}
	if drainingReady != 503 {
		t.Errorf("readyz while draining: %d, want 503", drainingReady)
	}
	t.Logf("figures: %d slow requests in flight at SIGTERM, %d failed; quick load %d requests: %d answered 200, %d not accepted after the signal, %d lost; new connections refused %v after SIGTERM; readyz while draining %d; exit status 0 after %v (shutdown.timeout %v)",
		slow, slowFailed, len(fast), accepted, refused, lost, refusedAfter.Round(time.Millisecond), drainingReady, exitedAfter.Round(time.Millisecond), shutdownTimeout)
}

// Requests that outlast shutdown.timeout are cut off, and the exit is
// still 0 and on time.
func TestSIGTERMCutsOffAtTimeout(t *testing.T) {
	t.Parallel()
	const shutdownTimeout = 2 * time.Second
	d := newFakeDinie(t, 3600)
	p := startProxy(t, d.env("DINIE_PROXY_SHUTDOWN_TIMEOUT", shutdownTimeout.String(), "DINIE_PROXY_UPSTREAM_TIMEOUT", "60s"))
	p.waitReady(t, 10*time.Second)
	done := make(chan result, 5)
	for range 5 {
		go func() { done <- p.do(t, context.Background(), "GET", "/hang", nil) }()
	}
	for deadline := time.Now().Add(10 * time.Second); d.apiActive.Load() < 5; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the hanging requests did not reach the API")
		}
	}
	sent := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(shutdownTimeout + 5*time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	took := p.exitedAt.Sub(sent)
	if p.exitErr != nil {
		t.Errorf("exit: %v, want status 0", p.exitErr)
	}
	if took > shutdownTimeout+2*time.Second {
		t.Errorf("exited %v after SIGTERM, shutdown.timeout is %v", took, shutdownTimeout)
	}
	cut := 0
	for range 5 {
		if r := <-done; r.err != nil {
			cut++
		}
	}
	t.Logf("figures: 5 hanging requests, %d cut off; exit status 0 after %v (shutdown.timeout %v)", cut, took.Round(time.Millisecond), shutdownTimeout)
}

// Memory: 50 MiB bodies both ways, then 500 concurrent connections; the
// proxy's peak RSS must stay bounded.
func TestMemoryUnderLoad(t *testing.T) {
	const (
		size  = 50 << 20
		bound = 200 << 10 // KiB
	)
	d := newFakeDinie(t, 3600)
	p := startProxy(t, d.env())
	p.waitReady(t, 10*time.Second)
	rss0, _ := p.rss(t)

	// Four uploads (two with a length, two chunked, which the proxy keeps up
	// to 1 MiB of for a 401 replay) and four downloads at once.
	var wg sync.WaitGroup
	var bad atomic.Int64
	for i := range 4 {
		wg.Go(func() {
			var body io.Reader = io.LimitReader(zeros{}, size)
			if i%2 == 1 {
				body = struct{ io.Reader }{body} // hides the length: chunked
			}
			req, _ := http.NewRequest("POST", p.proxyURL+"/upload", body)
			req.Header.Set("X-Expect-Length", strconv.Itoa(size))
			if i%2 == 0 {
				req.ContentLength = size
			}
			resp, err := p.client.Do(req)
			if err != nil {
				bad.Add(1)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != strconv.Itoa(size) {
				bad.Add(1)
			}
		})
		wg.Go(func() {
			resp, err := p.client.Get(p.proxyURL + "/download?n=" + strconv.Itoa(size))
			if err != nil {
				bad.Add(1)
				return
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || n != size {
				bad.Add(1)
			}
		})
	}
	wg.Wait()
	if bad.Load() > 0 {
		t.Errorf("%d of 8 50 MiB transfers failed", bad.Load())
	}
	_, hwmBodies := p.rss(t)

	// 500 connections, each with 4 requests that take 300 ms upstream.
	const conns = 500
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns, DisableCompression: true}}
	defer client.CloseIdleConnections()
	var peakInFlight atomic.Int64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stopSampling:
				return
			case <-time.After(100 * time.Millisecond):
			}
			n := int64(metric(p.scrape(t), "dinie_proxy_requests_in_flight"))
			if n > peakInFlight.Load() {
				peakInFlight.Store(n)
			}
		}
	}()
	start := time.Now()
	var failed atomic.Int64
	for range conns {
		wg.Go(func() {
			for range 4 {
				resp, err := client.Get(p.proxyURL + "/slow?ms=300")
				if err != nil {
					failed.Add(1)
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(b) != "ok" {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	close(stopSampling)
	<-sampled
	rss1, hwm := p.rss(t)
	if failed.Load() > 0 {
		t.Errorf("%d of %d requests over %d connections failed", failed.Load(), conns*4, conns)
	}
	if peakInFlight.Load() < conns*8/10 {
		t.Errorf("at most %d requests were in flight at once; the test meant %d", peakInFlight.Load(), conns)
	}
	if hwm > bound {
		t.Errorf("peak RSS %d MiB, bound %d MiB", hwm>>10, bound>>20)
	}
	t.Logf("figures: RSS idle %d MiB; peak after 4x50 MiB up + 4x50 MiB down at once %d MiB; %d connections x 4 requests in %v, %d failed, peak in flight %d; peak RSS %d MiB (bound %d MiB), RSS at the end %d MiB",
		rss0>>10, hwmBodies>>10, conns, took.Round(time.Millisecond), failed.Load(), peakInFlight.Load(), hwm>>10, bound>>10, rss1>>10)
}
