package proxy_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dinie/dinie-auth-proxy/internal/h1"
	"github.com/dinie/dinie-auth-proxy/internal/testkit"
	"github.com/dinie/dinie-auth-proxy/proxy"
	"github.com/dinie/dinie-auth-proxy/tokencache"
)

// The bounds and edges of tunnels (docs/security.md, "Tunnels: bounds and edges"): how many
// may be open, when a half-closed or silent one ends, what a refused
// CONNECT does to its connection, and how long an answer may stall.

// sendBehind sends a CONNECT with a request right behind it, as a client
// that does not wait for the answer does, and reads what comes back until
// the connection closes: the CONNECT's answer, and whatever else.
func sendBehind(t *testing.T, e *env, connect string) (first *http.Response, rest string) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.proxy.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second)) // an open connection fails, not hangs
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n"+
		"POST /payments HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 0\r\n\r\n", connect, connect)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	b, err := io.ReadAll(br)
	if err != nil {
		t.Errorf("after a %d to CONNECT %s: %v, want the connection closed", resp.StatusCode, connect, err)
	}
	return resp, string(b)
}

// A CONNECT answered with anything but 200 closes its connection: what the
// app sent behind it, meant for the tunnel, is never read as a request.
// (403, 405 and 400 are rows of differential_test.go too.)
func TestRefusedConnectClosesTheConnection(t *testing.T) {
	forEachSetup(t, func(t *testing.T, setup envOption) {
		const gone = "1" // tcpmux: nothing listens there
		e := newEnv(t, false, setup, func(_ *env, p *proxy.Config, _ *tokencache.Config) {
			p.Passthrough, p.MaxTunnels = []string{"localhost:" + gone}, 1
		})
		up := e.upstreamAuthority()
		host, _, _ := strings.Cut(up, ":")
		for _, tc := range []struct {
			connect string
			status  int
		}{
			{"evil.example:443", 403},
			{host + ":443", 405},
			{"localhost:" + gone, 502},
		} {
			resp, rest := sendBehind(t, e, tc.connect)
			if resp.StatusCode != tc.status || !resp.Close || rest != "" {
				t.Errorf("CONNECT %s: %d, Connection: close %v, then %q; want %d, close, nothing",
					tc.connect, resp.StatusCode, resp.Close, rest, tc.status)
			}
		}
		// Beyond limits.max_tunnels: 503, and closed too.
		conn, _, resp := connectTo(t, e, up)
		if resp.StatusCode != 200 {
			t.Fatalf("first tunnel: %d", resp.StatusCode)
		}
		defer conn.Close()
		resp, rest := sendBehind(t, e, up)
		if resp.StatusCode != 503 || !resp.Close || rest != "" {
			t.Errorf("CONNECT beyond the bound: %d, Connection: close %v, then %q", resp.StatusCode, resp.Close, rest)
		}
		if n := e.calls.Load(); n != 0 {
			t.Errorf("%d requests sent behind a refused CONNECT reached the upstream", n)
		}
	})
}

// Every open tunnel, of every kind, counts against limits.max_tunnels until
// it closes; one more CONNECT gets 503 overloaded, after the host checks.
func TestTunnelsOfEveryKindCountAgainstMaxTunnels(t *testing.T) {
	forEachSetup(t, func(t *testing.T, setup envOption) {
		far := newFarEnd(t)
		e := newInterceptEnv(t, func(en *env, p *proxy.Config, c *tokencache.Config) {
			setup(en, p, c)
			p.Passthrough, p.MaxTunnels = []string{"127.0.0.1:" + far.port()}, 3
		})
		plain, _, resp := connectTo(t, e.env, "localhost:"+strings.Split(e.upstreamAuthority(), ":")[1])
		if resp.StatusCode != 200 {
			t.Fatalf("plain tunnel: %d", resp.StatusCode)
		}
		tc, err := e.tlsTunnel(t, &tls.Config{RootCAs: e.roots, ServerName: "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		defer tc.Close()
		if _, _, resp := connectTo(t, e.env, "127.0.0.1:"+far.port()); resp.StatusCode != 200 {
			t.Fatalf("passthrough tunnel: %d", resp.StatusCode)
		}
		for _, kind := range []string{"plain", "intercepted", "passthrough"} {
			testkit.Eventually(t, kind+" tunnel counted", func() bool { return e.open(t, kind) == 1 })
		}
		for _, target := range []string{"localhost:" + strings.Split(e.upstreamAuthority(), ":")[1], "localhost:443", "127.0.0.1:" + far.port()} {
			resp, body := rawExchange(t, e.env, "CONNECT", "CONNECT "+target+" HTTP/1.1\r\nHost: x\r\n\r\n")
			assertProblem(t, resp, body, 503, proxy.CodeOverloaded)
			if !strings.Contains(body, "limits.max_tunnels") {
				t.Errorf("503 does not name limits.max_tunnels: %s", body)
			}
		}
		// A host refusal comes first, bound or not.
		resp, body := rawExchange(t, e.env, "CONNECT", "CONNECT evil.example:443 HTTP/1.1\r\nHost: x\r\n\r\n")
		assertProblem(t, resp, body, 403, proxy.CodeHostNotAllowed)
		// A closed tunnel gives its place back.
		plain.Close()
		testkit.Eventually(t, "plain tunnel's place given back", func() bool { return e.open(t, "plain") == 0 })
		if _, _, resp := connectTo(t, e.env, "127.0.0.1:"+far.port()); resp.StatusCode != 200 {
			t.Errorf("CONNECT after a tunnel closed: %d", resp.StatusCode)
		}
	})
}

// Once the app has closed its side of a passthrough tunnel, the tunnel ends
// when the far end has said nothing for HalfCloseTimeout, not after the
// idle timeout of minutes: its place is given back.
func TestHalfClosedPassthroughTunnelEnds(t *testing.T) {
	// A far end that accepts and then neither speaks nor closes.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	held := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held <- c
		}
	}()
	t.Cleanup(func() {
		close(held)
		for c := range held {
			c.Close()
		}
	})
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			e := newEnv(t, false, srv.opt, func(_ *env, p *proxy.Config, _ *tokencache.Config) {
				p.Passthrough, p.HalfCloseTimeout = []string{"localhost:" + port}, 100*time.Millisecond
			})
			conn, br, resp := connectTo(t, e, "localhost:"+port)
			if resp.StatusCode != 200 {
				t.Fatalf("CONNECT: %d", resp.StatusCode)
			}
			conn.(*net.TCPConn).CloseWrite()
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := br.ReadByte(); err != io.EOF {
				t.Errorf("half-closed tunnel with a silent far end: %v, want EOF", err)
			}
			testkit.Eventually(t, "place given back", func() bool { return e.open(t, "passthrough") == 0 })
		})
	}
}

// A client that connects and never sends its ClientHello holds no request
// slot while the handshake waits, and its tunnel ends at the handshake's
// deadline.
func TestSlowHandshakesHoldNoRequestSlot(t *testing.T) {
	forEachSetup(t, func(t *testing.T, setup envOption) {
		e := newInterceptEnv(t, func(en *env, p *proxy.Config, c *tokencache.Config) {
			setup(en, p, c)
			p.MaxInFlight, p.HandshakeTimeout = 2, 300*time.Millisecond
		})
		var silent []*bufio.Reader
		for range 4 {
			conn, br, resp := connectTo(t, e.env, "localhost:443")
			if resp.StatusCode != 200 {
				t.Fatalf("CONNECT: %d", resp.StatusCode)
			}
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			silent = append(silent, br)
			// The CONNECT's own request ends just after its 200 went out.
			testkit.Eventually(t, "CONNECT done", func() bool {
				return testkit.Value(t, e.reg, "dinie_proxy_requests_in_flight") == 0
			})
		}
		testkit.Eventually(t, "tunnels counted", func() bool { return e.open(t, "intercepted") == 4 })
		resp, body := do(t, http.DefaultClient, "GET", e.proxy.URL+"/customers", nil)
		if resp.StatusCode != 200 {
			t.Errorf("request while handshakes wait: %d %s", resp.StatusCode, body)
		}
		for i, br := range silent {
			if _, err := br.ReadByte(); err != io.EOF {
				t.Errorf("silent tunnel %d after the handshake deadline: %v, want EOF", i, err)
			}
		}
		testkit.Eventually(t, "places given back", func() bool { return e.open(t, "intercepted") == 0 })
	})
}

// stallAfter bounds a stalled answer to d on both servers: net/http's
// through the handler, h1.Server's through its own field.
func stallAfter(d time.Duration) envOption {
	return func(e *env, p *proxy.Config, _ *tokencache.Config) {
		p.WriteStallTimeout = d
		p.NewServer = func(h http.Handler) proxy.Server {
			if e.netServer {
				return newServer(h, true, false)
			}
			return &h1.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, WriteStallTimeout: d}
		}
	}
}

// An app that stops reading an answer ends its exchange once no byte could
// be written for WriteStallTimeout: the upstream request is abandoned and
// the slot given back.
func TestStalledAnswerEndsTheExchange(t *testing.T) {
	forEachSetup(t, func(t *testing.T, setup envOption) {
		e := newEnv(t, false, setup, stallAfter(200*time.Millisecond))
		ended := make(chan struct{})
		e.setAPI(func(w http.ResponseWriter, r *http.Request, s seen) {
			defer close(ended)
			chunk := make([]byte, 64<<10)
			for {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		})
		conn, err := net.Dial("tcp", strings.TrimPrefix(e.proxy.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		io.WriteString(conn, "GET /download HTTP/1.1\r\nHost: x\r\n\r\n") // and never read
		select {
		case <-ended:
		case <-time.After(15 * time.Second):
			t.Fatal("the upstream is still sending to an app that stopped reading")
		}
		testkit.Eventually(t, "slot given back", func() bool {
			return testkit.Value(t, e.reg, "dinie_proxy_requests_in_flight") == 0
		})
	})
}

// A stream that is silent for longer than WriteStallTimeout (Server-Sent
// Events between events) is not cut: only a write that cannot progress is.
func TestSilentStreamIsNotCut(t *testing.T) {
	forEachSetup(t, func(t *testing.T, setup envOption) {
		e := newEnv(t, false, setup, stallAfter(100*time.Millisecond))
		e.setAPI(func(w http.ResponseWriter, r *http.Request, s seen) {
			w.Header().Set("Content-Type", "text/event-stream")
			for i := range 3 {
				fmt.Fprintf(w, "data: %d\n\n", i)
				w.(http.Flusher).Flush()
				time.Sleep(300 * time.Millisecond)
			}
		})
		resp, body := do(t, http.DefaultClient, "GET", e.proxy.URL+"/events", nil)
		if resp.StatusCode != 200 || body != "data: 0\n\ndata: 1\n\ndata: 2\n\n" {
			t.Errorf("stream: %d %q", resp.StatusCode, body)
		}
	})
}
