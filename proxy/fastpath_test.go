package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dinie/dinie-auth-proxy/internal/h1"
	"github.com/dinie/dinie-auth-proxy/proxy"
)

// writeCounter counts the writes made on the upstream connections.
type writeCounter struct {
	net.Conn
	writes *atomic.Int64
}

func (c writeCounter) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// fastPath is the default set-up, h1.Server and h1.Transport around the
// handler, with a raw keep-alive app connection: what the fast path's
// guards measure.
type fastPath struct {
	app    net.Conn
	br     *bufio.Reader
	writes atomic.Int64 // upstream writes
}

func newFastPath(t *testing.T, wrap func(http.Handler) http.Handler, recycle bool) *fastPath {
	t.Helper()
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	}))
	t.Cleanup(upstream.Close)
	up, _ := url.Parse(upstream.URL + "/api/v3")
	f := &fastPath{}
	var d net.Dialer
	tr, err := h1.NewTransport(up, h1.TransportConfig{
		ResponseHeaderTimeout: 5 * time.Second,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			return writeCounter{c, &f.writes}, err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	h, err := proxy.New(proxy.Config{Upstream: up, Tokens: fakeTokens{}, Transport: tr, RecycleRequests: recycle,
		UpstreamTimeout: 5 * time.Second, MaxReplayBytes: 1 << 20, ReplayBudgetBytes: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	p := serve(t, wrap(h), false, recycle)
	f.app, err = net.Dial("tcp", strings.TrimPrefix(p.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.app.Close() })
	f.br = bufio.NewReader(f.app)
	return f
}

// do sends one request and reads its answer; it fails t from the caller's
// goroutine only.
func (f *fastPath) do(raw string) error {
	if _, err := io.WriteString(f.app, raw); err != nil {
		return err
	}
	resp, err := http.ReadResponse(f.br, nil)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return err
}

const (
	fastGet  = "GET /customers HTTP/1.1\r\nHost: proxy\r\n\r\n"
	fastPost = "POST /charges HTTP/1.1\r\nHost: proxy\r\nContent-Length: 12\r\n\r\n{\"amount\":1}"
)

func allocsPerGet(t *testing.T, f *fastPath) float64 {
	t.Helper()
	for range 10 { // warm the pools and the connections
		if err := f.do(fastGet); err != nil {
			t.Fatal(err)
		}
	}
	var failed error
	n := testing.AllocsPerRun(200, func() {
		if err := f.do(fastGet); err != nil && failed == nil {
			failed = err
		}
	})
	if failed != nil {
		t.Fatal(failed)
	}
	return n
}

// TestFastPathIsNotLost guards the declared contracts between the handler
// and h1's server and transport, which a wrapper could silently defeat with
// every other test still passing: the recycled per-request state
// (Config.RecycleRequests), the server's request context, whose slot spares
// the transport a context.AfterFunc, and a body that has arrived going
// upstream with the request's head (bufferedBody). The default set-up must
// allocate less than the same set-up with either of the first two lost.
func TestFastPathIsNotLost(t *testing.T) {
	same := func(h http.Handler) http.Handler { return h }
	fast := allocsPerGet(t, newFastPath(t, same, true))
	t.Logf("%.0f allocations per GET, app, proxy and upstream together", fast)
	if n := allocsPerGet(t, newFastPath(t, same, false)); n <= fast {
		t.Errorf("%.0f allocations per GET without RecycleRequests, %.0f with: recycling is lost", n, fast)
	}

	// Two wrappers that allocate alike; one hands the handler a context
	// that is not the server's.
	type key struct{}
	keep := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_ = context.WithValue(context.Background(), key{}, 1)
			h.ServeHTTP(w, r.WithContext(r.Context()))
		})
	}
	replace := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), key{}, 1)))
		})
	}
	kept, replaced := allocsPerGet(t, newFastPath(t, keep, true)), allocsPerGet(t, newFastPath(t, replace, true))
	if replaced <= kept {
		t.Errorf("%.0f allocations per GET with the server's context, %.0f with another: its slot is lost", kept, replaced)
	}

	f := newFastPath(t, same, true)
	if err := f.do(fastPost); err != nil { // dials
		t.Fatal(err)
	}
	before := f.writes.Load()
	for range 10 {
		if err := f.do(fastPost); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.writes.Load() - before; n != 10 {
		t.Errorf("10 small POSTs took %d upstream writes: an arrived body no longer goes with the head", n)
	}
}
