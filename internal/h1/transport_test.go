package h1

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingServer is an upstream that counts the connections it accepts.
func countingServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	return closingServer(t, h, nil)
}

// closingServer also closes every connection that goes idle while
// closeIdle is set, as a server whose idle timeout expired.
func closingServer(t *testing.T, h http.HandlerFunc, closeIdle *atomic.Bool) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
		if s == http.StateIdle && closeIdle != nil && closeIdle.Load() {
			c.Close()
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

func h1For(t *testing.T, srv *httptest.Server) (*Transport, *http.Client) {
	t.Helper()
	u, _ := url.Parse(srv.URL)
	tr, err := NewTransport(u, TransportConfig{ResponseHeaderTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return tr, &http.Client{Transport: tr}
}

func fetch(t *testing.T, c *http.Client, method, url string, body io.Reader) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), method, url, body)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestH1ReusesConnections(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
		case "/chunked":
			io.WriteString(w, "a")
			http.NewResponseController(w).Flush()
			io.WriteString(w, "b")
		default:
			b, _ := io.ReadAll(r.Body)
			w.Write(b)
		}
	})
	_, c := h1For(t, srv)
	for i := range 20 {
		if code, body := fetch(t, c, "POST", srv.URL+"/echo", strings.NewReader("x")); code != 200 || body != "x" {
			t.Fatalf("request %d: %d %q", i, code, body)
		}
		fetch(t, c, "HEAD", srv.URL+"/echo", nil)
		fetch(t, c, "GET", srv.URL+"/nocontent", nil)
		if _, body := fetch(t, c, "GET", srv.URL+"/chunked", nil); body != "ab" {
			t.Fatalf("chunked body %q", body)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("80 sequential requests used %d connections, want 1", n)
	}
}

// A pooled connection keeps the deadline for its last response's headers
// when the body was all buffered; once that deadline has passed, the
// connection must still count as alive and be used.
func TestH1ReusesAConnectionWhoseHeaderDeadlinePassed(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	tr, c := h1For(t, srv)
	fetch(t, c, "GET", srv.URL+"/a", nil)
	tr.mu.Lock()
	if len(tr.idle) != 1 {
		t.Fatalf("%d pooled connections, want 1", len(tr.idle))
	}
	pc := tr.idle[0]
	pc.deadline.set(pc.conn, time.Now())        // passed, as after ResponseHeaderTimeout
	pc.idleSince = time.Now().Add(-time.Minute) // idle long enough to be checked
	tr.mu.Unlock()
	if code, body := fetch(t, c, "GET", srv.URL+"/b", nil); code != 200 || body != "ok" {
		t.Fatalf("second request: %d %q", code, body)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1: the pooled one was taken for dead", n)
	}
}

// ResponseHeaderTimeout bounds the wait for the headers only: a body that
// streams for longer must arrive whole.
func TestH1ResponseHeaderTimeoutSparesASlowBody(t *testing.T) {
	const timeout = 250 * time.Millisecond
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first,")
		http.NewResponseController(w).Flush()
		select {
		case <-time.After(3 * timeout):
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "last")
	})
	u, _ := url.Parse(srv.URL)
	tr, err := NewTransport(u, TransportConfig{ResponseHeaderTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/stream", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if body, err := io.ReadAll(resp.Body); err != nil || string(body) != "first,last" {
		t.Errorf("body %q, %v; want it whole", body, err)
	}
}

func TestH1HonoursConnectionClose(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		io.WriteString(w, "bye")
	})
	_, c := h1For(t, srv)
	for range 3 {
		fetch(t, c, "GET", srv.URL, nil)
	}
	if n := conns.Load(); n != 3 {
		t.Errorf("connections = %d, want 3", n)
	}
}

func TestH1RetriesIdempotentRequestsOnAConnectionTheServerClosed(t *testing.T) {
	var closeIdle atomic.Bool
	closeIdle.Store(true)
	srv, conns := closingServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }, &closeIdle)
	_, c := h1For(t, srv)
	fetch(t, c, "GET", srv.URL, nil)
	// The pooled connection is now closed at the far end.
	if code, body := fetch(t, c, "GET", srv.URL, nil); code != 200 || body != "ok" {
		t.Errorf("GET after the server closed the idle connection: %d %q", code, body)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("connections = %d, want 2", n)
	}
}

// A request without a body goes again on a fresh connection when the
// pooled one had been closed by the server: by net/http's rule when no
// Resendable is given (either idempotency header, presence enough), by the
// caller's rule when one is.
func TestResendableDecidesWhatGoesAgainOnAStaleConnection(t *testing.T) {
	onlyX := func(r *http.Request) bool { return r.Header.Get("X-Idempotency-Key") != "" }
	for _, tt := range []struct {
		name       string
		resendable func(*http.Request) bool
		method     string
		header     string
		want       bool
	}{
		{"net/http's rule: GET", nil, "GET", "", true},
		{"net/http's rule: POST", nil, "POST", "", false},
		{"net/http's rule: POST with X-Idempotency-Key", nil, "POST", "X-Idempotency-Key", true},
		{"net/http's rule: POST with Idempotency-Key", nil, "POST", "Idempotency-Key", true},
		{"the caller's rule: POST with Idempotency-Key", onlyX, "POST", "Idempotency-Key", false},
		{"the caller's rule: POST with X-Idempotency-Key", onlyX, "POST", "X-Idempotency-Key", true},
		{"the caller's rule: GET", onlyX, "GET", "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			addr, got := dropsSecondRequest(t)
			u, _ := url.Parse("http://" + addr)
			tr, err := NewTransport(u, TransportConfig{ResponseHeaderTimeout: 5 * time.Second, Resendable: tt.resendable})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(tr.CloseIdleConnections)
			c := &http.Client{Transport: tr}
			fetch(t, c, "GET", u.String(), nil) // leaves the pooled connection
			req, _ := http.NewRequestWithContext(t.Context(), tt.method, u.String(), nil)
			if tt.header != "" {
				req.Header.Set(tt.header, "fake-key")
			}
			resp, err := c.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			if sent := err == nil; sent != tt.want {
				t.Errorf("sent again: %v (error %v), want %v", sent, err, tt.want)
			}
			if want := map[bool]int64{true: 3, false: 2}[tt.want]; got.Load() != want {
				t.Errorf("the server read %d requests, want %d", got.Load(), want)
			}
		})
	}
}

// dropsSecondRequest is a server that answers the first request on a
// connection, then closes that connection on reading the second without
// a byte of answer, as a server whose idle timeout ran out just then; on
// a new connection it answers again. got counts the requests read.
func dropsSecondRequest(t *testing.T) (addr string, got *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got = new(atomic.Int64)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for first := true; ; first = false {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				br := bufio.NewReader(conn)
				for n := 0; ; n++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					got.Add(1)
					if first && n == 1 {
						return
					}
					io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			})
		}
	})
	return ln.Addr().String(), got
}

// An unrequested 101 is an error callers can name, by value or by
// behaviour, instead of a connection closed before answering.
func TestUnrequested101IsErrSwitchingProtocols(t *testing.T) {
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		conn, brw, _ := http.NewResponseController(w).Hijack()
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		brw.Flush()
	})
	_, c := h1For(t, srv)
	req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL, nil)
	resp, err := c.Transport.RoundTrip(req)
	if err == nil {
		resp.Body.Close()
	}
	sp, ok := errors.AsType[interface {
		error
		SwitchedProtocols() bool
	}](err)
	if !errors.Is(err, ErrSwitchingProtocols) || !ok || !sp.SwitchedProtocols() {
		t.Errorf("error %v, want ErrSwitchingProtocols", err)
	}
}

// A reused connection whose answer does not come within
// ResponseHeaderTimeout was not closed while idle: the upstream has the
// request, and it must not be sent again, even when it is idempotent.
func TestH1DoesNotResendARequestThatTimedOut(t *testing.T) {
	var sent atomic.Int64
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			sent.Add(1)
			<-r.Context().Done() // until the proxy gives up on it
			return
		}
		io.WriteString(w, "ok")
	})
	u, _ := url.Parse(srv.URL)
	tr, err := NewTransport(u, TransportConfig{ResponseHeaderTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr}
	fetch(t, c, "GET", srv.URL+"/warm", nil) // the next request reuses its connection
	req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/slow", nil)
	if _, err := c.Do(req); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("error %v, want a timeout", err)
	}
	if n := sent.Load(); n != 1 {
		t.Errorf("the upstream got the request %d times, want 1", n)
	}
}

func TestH1AliveNoticesAClosedConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	u, _ := url.Parse("http://" + ln.Addr().String())
	tr, _ := NewTransport(u, TransportConfig{})
	pc, err := tr.dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.conn.Close()
	server := <-accepted
	if !pc.alive() {
		t.Fatal("an open idle connection looks dead")
	}
	server.Close()
	deadline := time.Now().Add(10 * time.Second)
	for pc.alive() {
		if time.Now().After(deadline) {
			t.Fatal("a closed connection still looks alive")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestH1CancelledResponseDoesNotPoisonThePool(t *testing.T) {
	release := make(chan struct{})
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			io.WriteString(w, "partial")
			http.NewResponseController(w).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		io.WriteString(w, "ok")
	})
	defer close(release)
	_, c := h1For(t, srv)
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/slow", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 7)
	io.ReadFull(resp.Body, buf)
	cancel()
	// The read blocked on the upstream must wake up, not hang.
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Error("reading a cancelled response did not fail")
	}
	resp.Body.Close()
	if code, body := fetch(t, c, "GET", srv.URL+"/fast", nil); code != 200 || body != "ok" {
		t.Errorf("next request: %d %q", code, body)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("connections = %d, want 2: the cancelled one must not be reused", n)
	}
}

func TestH1SkipsInformationalResponses(t *testing.T) {
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		io.WriteString(w, "final")
	})
	_, c := h1For(t, srv)
	if code, body := fetch(t, c, "GET", srv.URL, nil); code != 200 || body != "final" {
		t.Errorf("got %d %q, want the final 200", code, body)
	}
}

func TestH1RefusesOtherHosts(t *testing.T) {
	srv, _ := countingServer(t, func(http.ResponseWriter, *http.Request) {})
	_, c := h1For(t, srv)
	if _, err := c.Get("http://elsewhere.example/"); err == nil {
		t.Error("Transport sent a request to another host")
	}
}

// endOnWrite ends a request's context as the request goes out, as an app
// hanging up at that moment does.
type endOnWrite struct {
	net.Conn
	ctx *requestContext
}

func (c endOnWrite) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.ctx.end()
	return n, err
}

// A cancellation that lands between writing the request and arming the
// deadline for the answer must not be undone by that deadline.
func TestH1CancellationDuringTheWriteIsNotLost(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			defer c.Close()
			io.Copy(io.Discard, c) // never answers
		}
	}()
	u, _ := url.Parse("http://" + ln.Addr().String())
	tr, err := NewTransport(u, TransportConfig{ResponseHeaderTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.CloseIdleConnections()
	pc, err := tr.dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ctx := newRequestContext()
	pc.bw = bufio.NewWriter(endOnWrite{pc.conn, ctx})
	tr.put(pc)
	req, _ := http.NewRequestWithContext(ctx, "GET", u.String()+"/slow", nil)
	done := make(chan error, 1)
	go func() {
		resp, err := tr.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Error("a cancelled request got an answer")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the cancellation was lost: the request waits for the response header timeout")
	}
}

// An app that sends its body slowly must not hold the request's head back:
// the upstream has it while the rest comes (and may start on it, or stop
// a timer for headers), as with Request.Write.
func TestH1SendsTheHeadBeforeABodyStillComing(t *testing.T) {
	entered := make(chan struct{})
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		io.Copy(io.Discard, r.Body)
	})
	_, client := h1For(t, srv)
	body, app := io.Pipe()
	defer app.Close()
	done := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(t.Context(), "POST", srv.URL+"/charges", body)
		req.ContentLength = 6
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	app.Write([]byte("abc"))
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream has not got the request's head while its body is still coming")
	}
	app.Write([]byte("def"))
	app.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// arrivedBody is a body that has all arrived, as Server's says of a
// small POST that came with its headers.
type arrivedBody struct{ *strings.Reader }

func (b arrivedBody) Close() error    { return nil }
func (b arrivedBody) Buffered() int64 { return int64(b.Len()) }

type countingWriter struct{ writes int }

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	return len(p), nil
}

func TestWriteRequestSendsAnArrivedBodyWithTheHead(t *testing.T) {
	for _, tc := range []struct {
		name   string
		body   io.ReadCloser
		writes int
	}{
		{"arrived", arrivedBody{strings.NewReader(`{"amount":1}`)}, 1},
		{"still coming", io.NopCloser(struct{ io.Reader }{strings.NewReader(`{"amount":1}`)}), 2},
	} {
		w := &countingWriter{}
		bw := bufio.NewWriter(w)
		req, _ := http.NewRequest("POST", "https://api.example/charges", tc.body)
		req.ContentLength = 12
		if err := writeRequest(bw, req, nil, ""); err != nil {
			t.Fatal(err)
		}
		bw.Flush()
		if w.writes != tc.writes {
			t.Errorf("%s body: %d writes, want %d", tc.name, w.writes, tc.writes)
		}
	}
}

// A request with a body cannot be sent again once it went out on a
// connection the server had closed, so its connection is checked first,
// however briefly it was idle: a server shutting down closes its idle
// connections at any moment.
func TestH1ChecksTheConnectionOfARequestThatCannotBeSentAgain(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	})
	tr, client := h1For(t, srv)
	if code, _ := fetch(t, client, "POST", srv.URL+"/charges", strings.NewReader(`{"amount":1}`)); code != 200 {
		t.Fatalf("first POST: %d", code)
	}
	srv.CloseClientConnections()
	tr.mu.Lock()
	pooled := tr.idle[len(tr.idle)-1]
	tr.mu.Unlock()
	for give := time.Now().Add(10 * time.Second); pooled.alive(); {
		if time.Now().After(give) {
			t.Fatal("the pooled connection never showed the server's close")
		}
		time.Sleep(time.Millisecond)
	}
	if code, body := fetch(t, client, "POST", srv.URL+"/charges", strings.NewReader(`{"amount":2}`)); code != 200 || body != "ok" {
		t.Errorf("POST after the server closed the pooled connection: %d %q", code, body)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (a fresh one for the second POST)", n)
	}
}
