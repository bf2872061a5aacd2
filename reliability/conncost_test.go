//go:build reliability

package reliability

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"
)

// goMemory is what the proxy's Go runtime holds in use, heap and stacks,
// from /metrics.
func (p *proxyProc) goMemory(t *testing.T) float64 {
	m := p.scrape(t)
	return metric(m, "go_memstats_heap_inuse_bytes") + metric(m, "go_memstats_stack_inuse_bytes")
}

// TestConnectionCost measures, for bench/README.md, what an idle
// keep-alive connection and a request waiting for the upstream cost the
// proxy. GOGC=10 keeps the heap close to what is live, so that the
// figures are not the collector's slack.
func TestConnectionCost(t *testing.T) {
	// A measurement, not a check: a thousand upstream TLS handshakes at once
	// beside the rest of the suite, under the race detector, can take longer
	// than any bound a check would set.
	if os.Getenv("DINIE_MEASURE") == "" {
		t.Skip("a measurement for bench/README.md: run with DINIE_MEASURE=1")
	}
	const conns = 1000
	raiseFileLimit(t, 8192)
	d := newFakeDinie(t, 3600)
	p := startProxy(t, d.env("GOGC", "10", "DINIE_PROXY_LOG_LEVEL", "info"))
	p.waitReady(t, 10*time.Second)
	if err := expectOK(p.do(t, t.Context(), "GET", "/ok", nil)); err != nil {
		t.Fatal(err)
	}
	p.client.CloseIdleConnections()
	base := p.goMemory(t)

	// Idle: each connection has carried one request and waits for the next.
	open := make([]net.Conn, 0, conns)
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for range conns {
		c, err := net.Dial("tcp", p.proxyAddr)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
		fmt.Fprintf(c, "GET /ok HTTP/1.1\r\nHost: %s\r\n\r\n", p.proxyAddr)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	idle := p.goMemory(t)
	t.Logf("idle keep-alive connection: %.1f KiB each (%d open)", (idle-base)/conns/1024, conns)

	// Waiting: each of those connections has a request at the upstream.
	var wg sync.WaitGroup
	for _, c := range open {
		fmt.Fprintf(c, "GET /slow?ms=3000 HTTP/1.1\r\nHost: %s\r\n\r\n", p.proxyAddr)
		wg.Go(func() {
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Errorf("waiting request: %v", err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("waiting request: status %d", resp.StatusCode)
			}
		})
	}
	// The fake Dinie's RSA handshakes, a thousand at once, are slow under
	// the race detector.
	deadline := time.Now().Add(60 * time.Second)
	for d.apiActive.Load() < conns && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	active := d.apiActive.Load()
	waiting := p.goMemory(t)
	if active < conns/2 {
		t.Fatalf("only %d of %d requests reached the upstream", active, conns)
	}
	t.Logf("request waiting for the upstream: %.1f KiB more each (%d waiting; the upstream connection included)",
		(waiting-idle)/float64(active)/1024, active)
	wg.Wait()
}
