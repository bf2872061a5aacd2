//go:build reliability

package reliability

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestTunnelsAreBoundedAndEnd opens tunnels of every kind up to
// limits.max_tunnels and one more of each, half-closes them all (the
// passthrough ones towards a far end that stays silent), then stalls
// handshakes in the places they gave back; every tunnel must end by
// itself (the half-close and handshake timeouts, 10 s each), and the
// proxy's goroutines and memory come back to where they started. Twice:
// RSS, which the runtime gives back to the system only in part, must not
// grow from one round to the next.
func TestTunnelsAreBoundedAndEnd(t *testing.T) {
	needDinieHost(t)
	const perKind = 100
	raiseFileLimit(t, 4096)
	far := silentFarEnd(t)
	d := newRealDinie(t)
	caDir := t.TempDir()
	_, dinePort, _ := net.SplitHostPort(d.srv.Listener.Addr().String())
	p := startProxy(t, map[string]string{
		"DINIE_PROXY_UPSTREAM_URL":          d.url(),
		"DINIE_PROXY_UPSTREAM_CA_FILE":      d.caFile,
		"DINIE_PROXY_AUTH_CLIENT_ID":        "fake-client",
		"DINIE_PROXY_AUTH_CLIENT_SECRET":    secret1,
		"DINIE_PROXY_LOG_LEVEL":             "info",
		"DINIE_PROXY_INTERCEPT_ENABLED":     "true",
		"DINIE_PROXY_INTERCEPT_CA_DIR":      caDir,
		"DINIE_PROXY_INTERCEPT_PASSTHROUGH": far.Addr().String(),
		"DINIE_PROXY_LIMITS_MAX_TUNNELS":    strconv.Itoa(3 * perKind),
		"GOGC":                              "10",
	})
	p.waitReady(t, 10*time.Second)
	baseG, baseMem := p.goroutines(t), p.goMemory(t)
	baseRSS, _ := p.rss(t)
	pem, err := os.ReadFile(filepath.Join(caDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)

	var rssAfter []int64
	for round := 1; round <= 2; round++ {
		tunnelRound(t, p, roots, far.Addr().String(), dinePort, perKind, round, baseG, baseMem, baseRSS)
		rss, _ := p.rss(t)
		rssAfter = append(rssAfter, rss)
	}
	// The runtime keeps some of what it took from the system; a leak
	// would keep growing with each round instead.
	if grown := rssAfter[1] - rssAfter[0]; grown > 4<<10 {
		t.Errorf("RSS grew by %d KiB from the first round's end to the second's", grown)
	}
}

// tunnelRound is one round of TestTunnelsAreBoundedAndEnd.
func tunnelRound(t *testing.T, p *proxyProc, roots *x509.CertPool, pass, dinePort string, perKind, round, baseG int, baseMem float64, baseRSS int64) {
	plain, tlsPort := dinieHost+":80", dinieHost+":"+dinePort
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for _, target := range []string{plain, tlsPort, pass} {
		for range perKind {
			c, status := connect(t, p.proxyAddr, target)
			if status != 200 {
				t.Fatalf("CONNECT %s within the bound: %d", target, status)
			}
			if target == tlsPort {
				tc := tls.Client(c, &tls.Config{RootCAs: roots, ServerName: dinieHost})
				if err := tc.Handshake(); err != nil {
					t.Fatalf("handshake in an intercepted tunnel: %v", err)
				}
			}
			conns = append(conns, c)
		}
	}
	m := p.scrape(t)
	for _, kind := range []string{"plain", "intercepted", "passthrough"} {
		if n := metric(m, "dinie_proxy_tunnels_open", `kind="`+kind+`"`); n != float64(perKind) {
			t.Errorf("%s tunnels open: %v, want %d", kind, n, perKind)
		}
	}
	for _, target := range []string{plain, tlsPort, pass} {
		if c, status := connect(t, p.proxyAddr, target); status != 503 {
			t.Errorf("CONNECT %s beyond limits.max_tunnels: %d, want 503", target, status)
			c.Close()
		}
	}
	fullG, fullMem := p.goroutines(t), p.goMemory(t)
	fullRSS, _ := p.rss(t)

	// Half-closed: each tunnel ends by itself, the passthrough ones once
	// the far end has been silent for 10 s.
	for _, c := range conns {
		c.(*net.TCPConn).CloseWrite()
	}
	// Stalled handshakes in the places the plain and intercepted tunnels
	// give back: they hold no request slot, and end at 10 s.
	var stalled []net.Conn
	defer func() {
		for _, c := range stalled {
			c.Close()
		}
	}()
	deadline := time.Now().Add(15 * time.Second)
	for len(stalled) < 2*perKind && time.Now().Before(deadline) {
		c, status := connect(t, p.proxyAddr, tlsPort)
		if status != 200 {
			time.Sleep(20 * time.Millisecond) // a place not yet given back
			continue
		}
		stalled = append(stalled, c)
	}
	if len(stalled) < 2*perKind {
		t.Fatalf("only %d places came back from %d half-closed tunnels", len(stalled), 2*perKind)
	}
	if r := p.do(t, t.Context(), "GET", "/customers", nil); r.err != nil || r.status != 200 {
		t.Errorf("a request while %d handshakes stall: %d %v", len(stalled), r.status, r.err)
	}
	var wg sync.WaitGroup
	for _, c := range stalled {
		wg.Go(func() {
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, err := bufio.NewReader(c).ReadByte(); err == nil {
				t.Error("a stalled handshake got bytes")
			}
		})
	}
	wg.Wait()
	deadline = time.Now().Add(30 * time.Second)
	for metric(p.scrape(t), "dinie_proxy_tunnels_open") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("tunnels still open 30 s after they were half-closed or stalled:\n%s", p.scrape(t))
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.client.CloseIdleConnections()
	endG := p.settleGoroutines(t, baseG, fixed(10))
	var endMem float64
	for range 50 { // the collector runs on its own schedule
		if endMem = p.goMemory(t); endMem < baseMem+8<<20 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	endRSS, _ := p.rss(t)
	t.Logf("round %d: goroutines: %d at start, %d with %d tunnels open, %d after they ended", round, baseG, fullG, 3*perKind, endG)
	t.Logf("round %d: Go heap+stacks: %.1f MiB at start, %.1f MiB with the tunnels, %.1f MiB after", round, baseMem/(1<<20), fullMem/(1<<20), endMem/(1<<20))
	t.Logf("round %d: RSS: %d KiB at start, %d KiB with the tunnels, %d KiB after", round, baseRSS, fullRSS, endRSS)
	if endMem > baseMem+8<<20 {
		t.Errorf("Go heap+stacks %.1f MiB after the tunnels ended, %.1f MiB at start", endMem/(1<<20), baseMem/(1<<20))
	}
}

// connect sends a CONNECT and reads its answer's status; the connection is
// the tunnel when the status is 200.
func connect(t *testing.T, proxyAddr, target string) (net.Conn, int) {
	t.Helper()
	c, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	// Read byte by byte up to the end of the head: a buffered reader could
	// take the tunnel's first bytes.
	var head []byte
	b := make([]byte, 1)
	for !strings.HasSuffix(string(head), "\r\n\r\n") {
		if _, err := c.Read(b); err != nil {
			t.Fatalf("CONNECT %s: %v after %q", target, err, head)
		}
		head = append(head, b[0])
	}
	c.SetDeadline(time.Time{})
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(head))), &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		c.Close()
	}
	return c, resp.StatusCode
}

// silentFarEnd is a passthrough host that accepts and then neither speaks
// nor closes, until the test ends.
func silentFarEnd(t *testing.T) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	return ln
}
