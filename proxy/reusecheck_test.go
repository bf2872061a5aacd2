package proxy_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dinie/dinie-auth-proxy/internal/h1"
	"github.com/dinie/dinie-auth-proxy/proxy"
)

// TestFastPathChecksEveryReuse guards the two checks that keep an upstream
// connection from being reused with bytes no request asked for (RFC 9112,
// section 6.3), on the default set-up at full pace: h1.Server and
// h1.Transport on real sockets, each request sent the moment the last
// answer is in. The differential corpus proves each check once, after a
// pause; this proves them on every reuse, so that a faster path that
// skips them for a connection just used (a peek only after some idle
// time, or every nth reuse, or reads that bypass the buffers the checks
// look at) fails here.
//
// After each answer the upstream sends a stray answer on the same
// connection, and only then lets the app send its next request: every
// request must get its own answer, each on a new connection.
func TestFastPathChecksEveryReuse(t *testing.T) {
	const requests = 25
	for _, tt := range []struct {
		name string
		tls  bool
		// how the stray answer follows the honest one
		stray strayTiming
	}{
		// Sent once the app has the answer, so into the kernel while the
		// connection is idle: only the peek before reuse finds it.
		{"idle, plain", false, strayLater},
		{"idle, TLS", true, strayLater},
		// In the same write: in the reader's buffer after the answer.
		{"same write, plain", false, straySameWrite},
		// Its own TLS record, in the same TCP segment: read from the
		// kernel by TLS with the answer's record, so that only a read
		// of TLS after the answer finds it.
		{"own record, same segment, TLS", true, strayOwnRecord},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := startStrayUpstream(t, tt.tls, tt.stray)
			u, _ := url.Parse(up.url + "/api/v3")
			tr, err := h1.NewTransport(u, h1.TransportConfig{ResponseHeaderTimeout: 5 * time.Second, RootCAs: up.roots})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(tr.CloseIdleConnections)
			h, err := proxy.New(proxy.Config{Upstream: u, Tokens: fakeTokens{}, Transport: tr, RecycleRequests: true,
				UpstreamTimeout: 5 * time.Second, MaxReplayBytes: 1 << 20, ReplayBudgetBytes: 32 << 20})
			if err != nil {
				t.Fatal(err)
			}
			p := serve(t, h, false, true)
			app, err := net.Dial("tcp", strings.TrimPrefix(p.URL, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer app.Close()
			br := bufio.NewReader(app)
			for i := range requests {
				path := fmt.Sprintf("/r%d", i)
				if _, err := fmt.Fprintf(app, "GET %s HTTP/1.1\r\nHost: proxy\r\n\r\n", path); err != nil {
					t.Fatal(err)
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || string(body) != "/api/v3"+path {
					t.Fatalf("request %d got %d %q (%v): an answer that no request asked for was taken as its answer",
						i, resp.StatusCode, body, err)
				}
				up.answerIn <- struct{}{}
				select {
				case <-up.strayOut:
				case <-time.After(5 * time.Second):
					t.Fatal("the upstream did not send its stray answer")
				}
			}
			if n := up.conns.Load(); n != requests {
				t.Errorf("%d requests on %d upstream connections: a connection with a stray answer was reused", requests, n)
			}
		})
	}
}

type strayTiming int

const (
	strayLater strayTiming = iota
	straySameWrite
	strayOwnRecord
)

// strayUpstream answers each request with its path, and then with an
// answer to nothing.
type strayUpstream struct {
	url      string
	roots    *x509.CertPool
	conns    atomic.Int64
	answerIn chan struct{} // one per answer the app has read (never full: 64 > requests)
	strayOut chan struct{} // one per answer, once the stray one is sent
}

func startStrayUpstream(t *testing.T, useTLS bool, timing strayTiming) *strayUpstream {
	t.Helper()
	u := &strayUpstream{answerIn: make(chan struct{}, 64), strayOut: make(chan struct{}, 64)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.url = "http://" + ln.Addr().String()
	var cfg *tls.Config
	if useTLS {
		cfg, u.roots = httptestTLS()
		u.url = "https://" + ln.Addr().String()
	}
	done := make(chan struct{})
	serveEach(t, ln, func(raw net.Conn) {
		defer raw.Close()
		held := &heldConn{Conn: raw}
		var conn net.Conn = held
		if cfg != nil {
			conn = tls.Server(held, cfg)
		}
		br := bufio.NewReader(conn)
		for n := 0; ; n++ {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			if n == 0 {
				u.conns.Add(1)
			}
			answer := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(req.URL.Path), req.URL.Path)
			switch timing {
			case strayLater:
				io.WriteString(conn, answer)
				select {
				case <-u.answerIn:
				case <-done:
					return
				}
				io.WriteString(conn, smuggled)
			case straySameWrite:
				io.WriteString(conn, answer+smuggled)
			case strayOwnRecord:
				held.hold()
				io.WriteString(conn, answer)
				io.WriteString(conn, smuggled)
				held.release()
			}
			u.strayOut <- struct{}{}
		}
	})
	// Registered after serveEach's cleanup, so run before it: an answer
	// waiting for the app lets go before the connections are waited for.
	t.Cleanup(func() { close(done) })
	return u
}

// heldConn gathers writes between hold and release into one write, so
// that two TLS records leave in one TCP segment.
type heldConn struct {
	net.Conn
	holding bool
	buf     []byte
}

func (c *heldConn) hold() { c.holding = true }

func (c *heldConn) release() {
	c.holding = false
	c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
}

func (c *heldConn) Write(p []byte) (int, error) {
	if c.holding {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}
