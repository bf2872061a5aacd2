package proxy_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"testing"
	"time"

	"github.com/dinie/dinie-auth-proxy/internal/testkit"
	"github.com/dinie/dinie-auth-proxy/proxy"
	"github.com/dinie/dinie-auth-proxy/tokencache"
)

// farEnd is another host an app reaches through its HTTPS_PROXY: it
// records every byte it receives, answers "pong" after the first read, and
// sends back what it got when the client half-closes.
type farEnd struct {
	ln  net.Listener
	got chan string
}

func newFarEnd(t *testing.T) *farEnd {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	f := &farEnd{ln: ln, got: make(chan string, 4)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				n, _ := c.Read(buf)
				io.WriteString(c, "pong")
				rest, _ := io.ReadAll(c)
				f.got <- string(buf[:n]) + string(rest)
			}()
		}
	}()
	return f
}

func (f *farEnd) port() string {
	_, p, _ := net.SplitHostPort(f.ln.Addr().String())
	return p
}

func newPassthroughEnv(t *testing.T, setup envOption, hosts ...string) *env {
	t.Helper()
	return newEnv(t, false, setup, func(_ *env, p *proxy.Config, _ *tokencache.Config) { p.Passthrough = hosts })
}

// open is how many tunnels of kind are open, as the gauge says.
func (e *env) open(t testing.TB, kind string) float64 {
	t.Helper()
	v, _ := testkit.Lookup(t, e.reg, "dinie_proxy_tunnels_open", "kind", kind)
	return v
}

func TestPassthroughRelaysBytesUntouched(t *testing.T) {
	forEachSetup(t, func(t *testing.T, setup envOption) {
		far := newFarEnd(t)
		e := newPassthroughEnv(t, setup, "localhost:"+far.port())
		conn, br, resp := connectTo(t, e, "localhost:"+far.port())
		if resp.StatusCode != 200 {
			t.Fatalf("CONNECT: %d", resp.StatusCode)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		// What an app would send inside TLS, written in the clear so the far
		// end can show nothing was added: an Authorization of its own and a
		// request the proxy would otherwise forward with its token.
		sent := "GET /api/v3/customers HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer app-own\r\n\r\n"
		io.WriteString(conn, sent)
		pong := make([]byte, 4)
		if _, err := io.ReadFull(br, pong); err != nil || string(pong) != "pong" {
			t.Fatalf("far end's answer: %q %v", pong, err)
		}
		if n := e.open(t, "passthrough"); n != 1 {
			t.Errorf("open passthrough tunnels = %v, want 1", n)
		}
		more := "second write"
		io.WriteString(conn, more)
		conn.(*net.TCPConn).CloseWrite()
		select {
		case got := <-far.got:
			if got != sent+more {
				t.Errorf("far end got %q, want exactly %q", got, sent+more)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("far end got nothing")
		}
		if e.fetches.Load() != 0 || e.calls.Load() != 0 {
			t.Errorf("token fetched %d times, upstream called %d times", e.fetches.Load(), e.calls.Load())
		}
		if v := testkit.Value(t, e.reg, "dinie_proxy_tunnels_total", "result", "passthrough"); v != 1 {
			t.Errorf("passthrough tunnels = %v, want 1", v)
		}
		testkit.Eventually(t, "relay ended", func() bool { return e.open(t, "passthrough") == 0 })
	})
}

func TestPassthroughRefusesUnlistedHosts(t *testing.T) {
	forEachSetup(t, func(t *testing.T, setup envOption) {
		far := newFarEnd(t)
		e := newPassthroughEnv(t, setup, "localhost:"+far.port(), "*.example.com")
		// The listed host on another port, its IP address (not listed: "*"
		// and names never cover an IP literal), another name.
		for _, target := range []string{"localhost:443", "127.0.0.1:" + far.port(), "example.com:443", "evil.example:" + far.port()} {
			resp, body := rawExchange(t, e, "CONNECT", "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
			assertProblem(t, resp, body, 403, proxy.CodeHostNotAllowed)
		}
		if v := testkit.Value(t, e.reg, "dinie_proxy_tunnels_total", "result", "refused"); v != 4 {
			t.Errorf("refused = %v, want 4", v)
		}
	})
}

// A 502 names the host and port the app asked for; what the resolver or
// the dialler said (addresses, the resolver's own) stays in the log.
func TestPassthroughDialFailureIs502NamingOnlyTheHost(t *testing.T) {
	// tcpmux's port, where nothing listens: a port freed by the test could
	// be taken by the next listener, the fake upstream's included.
	const port = "1"
	e := newPassthroughEnv(t, func(*env, *proxy.Config, *tokencache.Config) {}, "localhost:"+port, "no-such-host.invalid")
	for _, target := range []string{"localhost:" + port, "no-such-host.invalid:443"} {
		resp, body := rawExchange(t, e, "CONNECT", "CONNECT "+target+" HTTP/1.1\r\nHost: x\r\n\r\n")
		assertProblem(t, resp, body, 502, proxy.CodeUpstreamUnreachable)
		var p struct{ Detail string }
		json.Unmarshal([]byte(body), &p)
		if p.Detail != "cannot connect to "+target {
			t.Errorf("502 detail %q, want only the host and port", p.Detail)
		}
	}
	if n := e.open(t, "passthrough"); n != 0 {
		t.Errorf("%v tunnels counted open after failed dials", n)
	}
}

func TestPassthroughShutdownClosesTunnelsAtItsDeadline(t *testing.T) {
	far := newFarEnd(t)
	e := newPassthroughEnv(t, func(*env, *proxy.Config, *tokencache.Config) {}, "localhost:"+far.port())
	conn, br, _ := connectTo(t, e, "localhost:"+far.port())
	io.WriteString(conn, "ping")
	io.ReadFull(br, make([]byte, 4))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.handler.Shutdown(ctx) }()
	// The tunnel is still open: Shutdown drains, it does not cut.
	conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := br.ReadByte(); err == nil || !isTimeout(err) {
		t.Fatalf("tunnel during the drain: %v, want still open", err)
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v with a tunnel open", err)
	default:
	}
	cancel() // shutdown.timeout
	if err := <-done; err == nil {
		t.Error("Shutdown with a tunnel cut returned nil")
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("tunnel after Shutdown's deadline: %v, want EOF", err)
	}
	testkit.Eventually(t, "slot given back", func() bool { return e.open(t, "passthrough") == 0 })
}

func TestPassthroughIdleTunnelIsClosed(t *testing.T) {
	far := newFarEnd(t)
	e := newEnv(t, false, func(_ *env, p *proxy.Config, _ *tokencache.Config) {
		p.Passthrough, p.TunnelIdleTimeout = []string{"localhost:" + far.port()}, 50*time.Millisecond
	})
	conn, br, _ := connectTo(t, e, "localhost:"+far.port())
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("idle tunnel: %v, want EOF", err)
	}
	testkit.Eventually(t, "relay forgotten", func() bool { return e.open(t, "passthrough") == 0 })
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// A wildcard is for the app's other HTTPS hosts: through it, a name that
// resolves to the proxy's own machine is refused with 403 before any dial
// (internal/tunnel's tests cover the other forbidden ranges); a pattern
// that names the host reaches it.
func TestPassthroughWildcardNeverReachesLoopback(t *testing.T) {
	forEachSetup(t, func(t *testing.T, setup envOption) {
		far := newFarEnd(t)
		e := newPassthroughEnv(t, setup, "*:"+far.port())
		resp, body := rawExchange(t, e, "CONNECT", "CONNECT localhost:"+far.port()+" HTTP/1.1\r\nHost: localhost\r\n\r\n")
		assertProblem(t, resp, body, 403, proxy.CodeHostNotAllowed)
		// An IPv6 literal with a zone is a literal, which "*" never covers.
		resp, body = rawExchange(t, e, "CONNECT", "CONNECT [::1%25lo]:"+far.port()+" HTTP/1.1\r\nHost: x\r\n\r\n")
		assertProblem(t, resp, body, 403, proxy.CodeHostNotAllowed)
		if n := e.open(t, "passthrough"); n != 0 {
			t.Errorf("%v tunnels open", n)
		}
		// Named, the same host is reached.
		e = newPassthroughEnv(t, setup, "localhost:"+far.port())
		if _, _, resp := connectTo(t, e, "localhost:"+far.port()); resp.StatusCode != 200 {
			t.Errorf("named host: %d", resp.StatusCode)
		}
	})
}
