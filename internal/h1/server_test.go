package h1_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dinie/dinie-auth-proxy/internal/h1"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// startH1 serves h with an Server on a loopback port and returns the
// server and its address; the test's end closes it and waits for Serve.
func startH1(t *testing.T, h http.Handler, configure ...func(*h1.Server)) (*h1.Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &h1.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	for _, c := range configure {
		c(srv)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
		}
	})
	return srv, ln.Addr().String()
}

// conn is a raw client connection that reads answers with net/http's
// parser, bounded by 10 s.
type conn struct {
	net.Conn
	br *bufio.Reader
}

func dial(t *testing.T, addr string) *conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &conn{c, bufio.NewReader(c)}
}

func (c *conn) send(t *testing.T, raw string) {
	t.Helper()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
}

// read reads one answer to a request with method, body included.
func (c *conn) read(t *testing.T, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	return resp, string(body)
}

// closed reports whether the server has closed the connection.
func (c *conn) closed() bool {
	_, err := c.br.ReadByte()
	return errors.Is(err, io.EOF)
}

func TestH1ServerFramesAnswers(t *testing.T) {
	big := strings.Repeat("x", 5000)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/small": // unknown length that fits: a Content-Length is computed
			io.WriteString(w, "small")
		case "/big": // unknown length that does not: chunks
			io.WriteString(w, big)
		case "/length":
			w.Header().Set("Content-Length", "6")
			io.WriteString(w, "length")
		case "/nocontent":
			w.Header().Set("Content-Length", "7") // an upstream's mistake
			w.WriteHeader(http.StatusNoContent)
			io.WriteString(w, "dropped")
		}
	})
	_, addr := startH1(t, h)
	tests := []struct {
		method, path, proto, connection string
		wantBody                        string
		wantChunked, wantClose          bool
	}{
		{"GET", "/small", "HTTP/1.1", "", "small", false, false},
		{"GET", "/big", "HTTP/1.1", "", big, true, false},
		{"GET", "/length", "HTTP/1.1", "", "length", false, false},
		{"HEAD", "/big", "HTTP/1.1", "", "", false, false},
		{"HEAD", "/length", "HTTP/1.1", "", "", false, false},
		{"HEAD", "/small", "HTTP/1.1", "", "", false, false},
		{"GET", "/nocontent", "HTTP/1.1", "", "", false, false},
		{"GET", "/small", "HTTP/1.1", "close", "small", false, true},
		{"GET", "/small", "HTTP/1.0", "keep-alive", "small", false, false},
		{"GET", "/big", "HTTP/1.0", "keep-alive", big, false, true}, // no chunks in 1.0: the close ends it
		{"GET", "/small", "HTTP/1.0", "", "small", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path+" "+tt.proto+" "+tt.connection, func(t *testing.T) {
			c := dial(t, addr)
			req := fmt.Sprintf("%s %s %s\r\nHost: x\r\n", tt.method, tt.path, tt.proto)
			if tt.connection != "" {
				req += "Connection: " + tt.connection + "\r\n"
			}
			// Two at once: a wrongly framed first answer garbles the second.
			c.send(t, req+"\r\n"+req+"\r\n")
			resp, body := c.read(t, tt.method)
			if body != tt.wantBody {
				t.Errorf("body %.20q (%d bytes), want %.20q (%d bytes)", body, len(body), tt.wantBody, len(tt.wantBody))
			}
			if chunked := len(resp.TransferEncoding) > 0; chunked != tt.wantChunked {
				t.Errorf("chunked %v, want %v", chunked, tt.wantChunked)
			}
			if _, ok := resp.Header["Content-Length"]; ok && tt.path == "/nocontent" {
				t.Error("a 204 with a Content-Length")
			}
			if tt.method == "HEAD" && resp.ContentLength < 0 {
				t.Error("HEAD: no Content-Length, although the handler wrote the body")
			}
			if resp.Close != tt.wantClose {
				t.Errorf("close %v, want %v", resp.Close, tt.wantClose)
			}
			if tt.wantClose {
				if !c.closed() {
					t.Error("the connection stayed open")
				}
				return
			}
			if _, body := c.read(t, tt.method); body != tt.wantBody {
				t.Errorf("second answer's body %.20q, want %.20q", body, tt.wantBody)
			}
		})
	}
}

func TestH1ServerRefusesMalformedRequests(t *testing.T) {
	_, addr := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}),
		func(s *h1.Server) { s.MaxHeaderBytes = 1 << 10 })
	tests := []struct {
		name, req string
		want      int
	}{
		{"garbage", "GARBAGE\r\n\r\n", 400},
		{"HTTP/2", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505},
		{"no Host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"bad Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		// Over MaxHeaderBytes and the 4 KiB of slack that net/http allows too.
		{"headers over the limit", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 6<<10) + "\r\n\r\n", 431},
		// The 501 is recognized by http.ReadRequest's wording, which a Go
		// release could change: this case says so.
		{"unknown transfer coding", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
		{"unknown expectation", "POST / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\na", 417},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, addr)
			c.send(t, tt.req)
			resp, _ := c.read(t, "GET")
			if resp.StatusCode != tt.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.want)
			}
			if !c.closed() {
				t.Error("the connection stayed open")
			}
		})
	}
}

func TestH1ServerSendsContinueOnlyWhenTheBodyIsRead(t *testing.T) {
	_, addr := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/refuse" {
			// A known length: the headers go out before the handler ends.
			w.Header().Set("Content-Length", "2")
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, "no")
			return
		}
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	}))
	const head = "POST %s HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"

	c := dial(t, addr)
	c.send(t, fmt.Sprintf(head, "/echo"))
	interim, _ := c.read(t, "POST")
	if interim.StatusCode != http.StatusContinue {
		t.Fatalf("status %d before the body, want 100", interim.StatusCode)
	}
	c.send(t, "ping")
	if resp, body := c.read(t, "POST"); resp.StatusCode != 200 || body != "ping" || resp.Close {
		t.Errorf("status %d body %q close %v, want 200 ping on a kept connection", resp.StatusCode, body, resp.Close)
	}

	// Refused unread: no 100, and the connection closes, since the body
	// the app may still send cannot be told from a next request.
	c = dial(t, addr)
	c.send(t, fmt.Sprintf(head, "/refuse"))
	if resp, _ := c.read(t, "POST"); resp.StatusCode != http.StatusForbidden || !resp.Close {
		t.Errorf("status %d close %v, want 403 and close", resp.StatusCode, resp.Close)
	}
	if !c.closed() {
		t.Error("the connection stayed open")
	}
}

func TestH1ServerKeepsHeadersFromInjectingLines(t *testing.T) {
	_, addr := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["X-Value"] = []string{"a\r\nX-Injected: 1"}
		w.Header()["Bad Name"] = []string{"1"}
		w.Header()["Connection"] = []string{"X-Whatever"} // the server's to set
	}))
	c := dial(t, addr)
	c.send(t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, _ := c.read(t, "GET")
	if resp.Header.Get("X-Injected") != "" || resp.Header.Get("X-Value") != "a  X-Injected: 1" {
		t.Errorf("X-Value %q, X-Injected %q: a value broke out of its line", resp.Header.Get("X-Value"), resp.Header.Get("X-Injected"))
	}
	if _, ok := resp.Header["Bad Name"]; ok {
		t.Error("an invalid header name was written")
	}
	if v := resp.Header.Get("Connection"); v != "" {
		t.Errorf("Connection %q: the handler's value was written", v)
	}
}

func TestH1ServerWritesTrailers(t *testing.T) {
	_, addr := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Announced")
		io.WriteString(w, "body")
		w.Header().Set("X-Announced", "a")
		w.Header().Set(http.TrailerPrefix+"X-Late", "b")
	}))
	c := dial(t, addr)
	c.send(t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, body := c.read(t, "GET")
	if body != "body" || resp.Trailer.Get("X-Announced") != "a" || resp.Trailer.Get("X-Late") != "b" {
		t.Errorf("body %q trailers %v, want body and both trailers", body, resp.Trailer)
	}
}

func TestH1ServerDropsTheConnectionOfAPanickingHandler(t *testing.T) {
	core, logs := observer.New(zap.ErrorLevel)
	_, addr := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10")
		io.WriteString(w, "part")
		w.(http.Flusher).Flush()
		if r.URL.Path == "/abort" {
			panic(http.ErrAbortHandler)
		}
		panic("fake bug")
	}), func(s *h1.Server) { s.Logger = zap.New(core) })
	for _, path := range []string{"/abort", "/bug"} {
		c := dial(t, addr)
		c.send(t, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(resp.Body); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%s: reading the cut body gave %v, want an unexpected EOF", path, err)
		}
	}
	if n := logs.FilterMessage("handler panicked").Len(); n != 1 {
		t.Errorf("%d panics logged, want 1: ErrAbortHandler is not a bug", n)
	}
}

func TestH1ServerShutdownLetsTheRequestInFlightFinish(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	srv, addr := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(entered)
			<-release
		}
		io.WriteString(w, "done")
	}))
	idle := dial(t, addr)
	idle.send(t, "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
	idle.read(t, "GET")
	busy := dial(t, addr)
	busy.send(t, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	<-entered

	shutdown := make(chan error, 1)
	go func() { shutdown <- srv.Shutdown(t.Context()) }()
	if !idle.closed() {
		t.Error("the idle connection was not closed")
	}
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	default:
	}
	close(release)
	resp, body := busy.read(t, "GET")
	if body != "done" || !resp.Close {
		t.Errorf("body %q close %v, want done and close", body, resp.Close)
	}
	if err := <-shutdown; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("still accepting after Shutdown")
	}
}

func TestH1ServerShutdownTimesOutAndCloseCancels(t *testing.T) {
	entered, cancelled := make(chan struct{}), make(chan struct{})
	srv, addr := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done()
		close(cancelled)
	}))
	c := dial(t, addr)
	c.send(t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	<-entered
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown with a request in flight and an ended context: %v", err)
	}
	srv.Close()
	<-cancelled
}

func TestH1ServerCancelsTheRequestOfAnAppThatHangsUp(t *testing.T) {
	for name, req := range map[string]string{
		"GET": "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		// Its body all sent, not yet read: the proxy waiting for a token.
		"POST": "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
	} {
		t.Run(name, func(t *testing.T) {
			cancelled := make(chan struct{})
			_, addr := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				<-r.Context().Done()
				close(cancelled)
			}))
			c := dial(t, addr)
			c.send(t, req)
			c.Close()
			select {
			case <-cancelled:
			case <-time.After(10 * time.Second):
				t.Fatal("the request's context outlived the app's connection")
			}
		})
	}
}

func TestH1ServerClosesSlowAndIdleConnections(t *testing.T) {
	_, addr := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), func(s *h1.Server) {
		s.ReadHeaderTimeout = 50 * time.Millisecond
		s.IdleTimeout = 50 * time.Millisecond
	})
	slow := dial(t, addr)
	slow.send(t, "GET / HTTP/1.1\r\nHost: x\r\n")
	if !slow.closed() {
		t.Error("a request whose headers never end kept its connection")
	}
	idle := dial(t, addr)
	idle.send(t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	idle.read(t, "GET")
	if !idle.closed() {
		t.Error("an idle connection outlived IdleTimeout")
	}
}

// The idle deadline is moved only now and then, not for every request: it
// must still move, or a busy connection would be closed IdleTimeout after
// its first request.
func TestH1ServerKeepsABusyConnectionPastIdleTimeout(t *testing.T) {
	const idle = 500 * time.Millisecond
	_, addr := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), func(s *h1.Server) {
		s.IdleTimeout = idle
	})
	c := dial(t, addr)
	start := time.Now()
	for i := 0; time.Since(start) < 2*idle; i++ {
		c.send(t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, _ := c.read(t, "GET"); resp.Close {
			t.Fatalf("request %d, %v in: the connection is closing", i, time.Since(start))
		}
		time.Sleep(idle / 5)
	}
}

func TestH1ServerDropsASmallUnreadBodyAndKeepsTheConnection(t *testing.T) {
	_, addr := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path) // the body is never read
	}))
	c := dial(t, addr)
	c.send(t, "POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /second HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := c.read(t, "POST"); body != "/first" || resp.Close {
		t.Errorf("first: body %q close %v, want /first on a kept connection", body, resp.Close)
	}
	if _, body := c.read(t, "GET"); body != "/second" {
		t.Errorf("second: body %q, want /second: the unread body was taken for a request", body)
	}
}

func TestH1ServerEndsTheRequestContextWithTheHandler(t *testing.T) {
	ctxs := make(chan context.Context, 1)
	_, addr := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctxs <- r.Context()
	}))
	c := dial(t, addr)
	c.send(t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	c.read(t, "GET")
	if err := (<-ctxs).Err(); !errors.Is(err, context.Canceled) {
		t.Errorf("the request's context after the answer: %v, want canceled", err)
	}
}

func TestH1ServerSendsEarlyHintsWithoutFraming(t *testing.T) {
	_, addr := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.Header().Set("Content-Length", "2")
		w.WriteHeader(http.StatusEarlyHints)
		io.WriteString(w, "ok")
	}))
	c := dial(t, addr)
	c.send(t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	hints, _ := c.read(t, "GET")
	if hints.StatusCode != http.StatusEarlyHints || hints.Header.Get("Link") == "" || hints.Header.Get("Content-Length") != "" {
		t.Errorf("103: status %d header %v, want the Link and no Content-Length", hints.StatusCode, hints.Header)
	}
	if resp, body := c.read(t, "GET"); resp.StatusCode != 200 || body != "ok" {
		t.Errorf("final: %d %q", resp.StatusCode, body)
	}
}

// An adopted header map is the answer's, in place of what was set before
// it; after the status it changes nothing; and the next request on the
// connection starts from an empty map again, not from the adopted one.
func TestH1ServerAdoptHeader(t *testing.T) {
	type adopter interface{ AdoptHeader(http.Header) }
	_, addr := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, ok := w.(adopter)
		if !ok {
			t.Error("Server's ResponseWriter has no AdoptHeader")
			return
		}
		switch r.URL.Path {
		case "/adopt":
			w.Header().Set("X-Before", "dropped")
			a.AdoptHeader(http.Header{"X-Adopted": {"kept"}, "Content-Length": {"2"}})
			w.Header().Set("X-After", "set on the adopted map")
			io.WriteString(w, "ok")
		case "/late":
			w.Header().Set("X-Own", "1")
			w.WriteHeader(http.StatusAccepted)
			a.AdoptHeader(http.Header{"X-Adopted": {"too late"}})
		default:
			w.Header().Set("X-Plain", "1")
		}
	}))
	c := dial(t, addr)
	c.send(t, "GET /adopt HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, body := c.read(t, http.MethodGet)
	if got := resp.Header; got.Get("X-Adopted") != "kept" || got.Get("X-After") == "" || got.Get("X-Before") != "" || body != "ok" {
		t.Errorf("adopted answer: header %q, body %q", got, body)
	}
	c.send(t, "GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, _ = c.read(t, http.MethodGet)
	if got := resp.Header; resp.StatusCode != http.StatusAccepted || got.Get("X-Own") != "1" || got.Get("X-Adopted") != "" || got.Get("X-Before") != "" {
		t.Errorf("adoption after the status: %d, header %q", resp.StatusCode, got)
	}
	c.send(t, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, _ = c.read(t, http.MethodGet)
	for _, k := range []string{"X-Adopted", "X-After", "X-Before", "X-Own"} {
		if v := resp.Header.Get(k); v != "" {
			t.Errorf("the next answer on the connection has %s: %q", k, v)
		}
	}
	if resp.Header.Get("X-Plain") != "1" {
		t.Errorf("the next answer lost its own header: %q", resp.Header)
	}
}

// Every request's context is the server's, whichever parser read it: it
// ends when the handler returns (and, so, when the app hangs up or the
// server closes; TestH1ServerCancelsTheRequestOfAnAppThatHangsUp).
func TestH1ServerGivesEveryRequestItsContext(t *testing.T) {
	contexts := make(chan context.Context, 1)
	_, addr := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		contexts <- r.Context()
	}))
	for _, tc := range []struct{ name, request string }{
		{"the fast reader's", "GET / HTTP/1.1\r\nHost: x\r\n\r\n"},
		// HTTP/1.0 is left to net/http's parser.
		{"net/http's parser's", "GET / HTTP/1.0\r\nHost: x\r\n\r\n"},
	} {
		c := dial(t, addr)
		c.send(t, tc.request)
		c.read(t, http.MethodGet)
		ctx := <-contexts
		if ctx.Done() == nil || !errors.Is(ctx.Err(), context.Canceled) {
			t.Errorf("a request read by %s: its context after the answer: Done %v, Err %v; want one the server ended", tc.name, ctx.Done(), ctx.Err())
		}
	}
}

// With RecycleRequests a kept connection reads each request into the
// space of the one before: the handler must see each request's URL,
// headers and body as they came, and nothing of an earlier one, whichever
// parser read it.
func TestH1ServerReadsEachRequestAfresh(t *testing.T) {
	_, addr := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		keys := make([]string, 0, len(r.Header))
		for k, vv := range r.Header {
			keys = append(keys, k+"="+strings.Join(vv, ","))
		}
		slices.Sort(keys)
		fmt.Fprintf(w, "%s %s?%s host=%s body=%q", r.Method, r.URL.Path, r.URL.RawQuery, r.Host, body)
		for _, k := range keys {
			fmt.Fprintf(w, " %s", k)
		}
	}), func(s *h1.Server) { s.RecycleRequests = true })
	c := dial(t, addr)
	for _, tc := range []struct{ request, want string }{
		{"POST /a?x=1 HTTP/1.1\r\nHost: one\r\nX-A: 1\r\nX-A: 2\r\nPragma: no-cache\r\nContent-Length: 3\r\n\r\nabc",
			`POST /a?x=1 host=one body="abc" Cache-Control=no-cache Content-Length=3 Pragma=no-cache X-A=1,2`},
		{"GET /b HTTP/1.1\r\nHost: two\r\nX-B: 3\r\n\r\n",
			`GET /b? host=two body="" X-B=3`},
		// A folded line is left to net/http's parser.
		{"GET /c HTTP/1.1\r\nHost: three\r\nX-C: 4\r\n 5\r\n\r\n",
			`GET /c? host=three body="" X-C=4 5`},
		{"GET /d HTTP/1.1\r\nHost: four\r\n\r\n",
			`GET /d? host=four body=""`},
	} {
		c.send(t, tc.request)
		if _, got := c.read(t, http.MethodGet); got != tc.want {
			t.Errorf("the handler saw\n%s\nwant\n%s", got, tc.want)
		}
	}
}

// The map a handler gives its answer (AdoptHeader) is lent, emptied, with
// the connection's next request, for Transport to read that answer's
// header into: each answer must still carry only its own fields, and the
// map must come back whether the transport took it or not.
func TestH1ServerLendsTheAdoptedMapToTheNextAnswer(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Upstream-"+strings.TrimPrefix(r.URL.Path, "/"), "1")
		io.WriteString(w, r.URL.Path)
	}))
	t.Cleanup(upstream.Close)
	u, _ := url.Parse(upstream.URL)
	tr, err := h1.NewTransport(u, h1.TransportConfig{ResponseHeaderTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	maps := make(chan uintptr, 1) // the answer map's identity
	_, addr := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("local") {
			maps <- 0
			io.WriteString(w, "local")
			return
		}
		out, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, upstream.URL+r.URL.Path, nil)
		resp, err := tr.RoundTrip(out)
		if err != nil {
			t.Error(err)
			maps <- 0
			return
		}
		defer resp.Body.Close()
		maps <- reflect.ValueOf(resp.Header).Pointer()
		if r.URL.Query().Has("copy") {
			for k, vv := range resp.Header {
				w.Header()[k] = vv
			}
		} else {
			w.(interface{ AdoptHeader(http.Header) }).AdoptHeader(resp.Header)
		}
		io.Copy(w, resp.Body)
	}))
	c := dial(t, addr)
	get := func(target string) (http.Header, uintptr) {
		t.Helper()
		c.send(t, "GET "+target+" HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, _ := c.read(t, http.MethodGet)
		var own []string
		for k := range resp.Header {
			if strings.HasPrefix(k, "X-Upstream-") {
				own = append(own, k)
			}
		}
		if path, _, _ := strings.Cut(target, "?"); !strings.Contains(path, "local") && (len(own) != 1 || own[0] != http.CanonicalHeaderKey("X-Upstream-"+path[1:])) {
			t.Errorf("the answer to %s has the upstream fields %q", target, own)
		}
		return resp.Header, <-maps
	}
	_, first := get("/a")
	if _, m := get("/b"); m != first {
		t.Error("the second answer was read into a new map, not the one the first answer gave back")
	}
	get("/local?local") // the map lent is not taken: it comes back
	if _, m := get("/c?copy"); m != first {
		t.Error("after an answer of the handler's own, the map lent was not the one given back before")
	}
	get("/d") // the copying handler kept the map: a new one, its fields only
}

// Without RecycleRequests (the zero value) a handler may keep a request's
// URL and header past ServeHTTP, as net/http's server lets it: a
// transport like net/http's may still be writing them.
func TestH1ServerKeepsRequestsUnlessTheyAreRecycled(t *testing.T) {
	kept := make(chan *http.Request, 2)
	_, addr := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { kept <- r }))
	c := dial(t, addr)
	c.send(t, "GET /first HTTP/1.1\r\nHost: x\r\nX-First: 1\r\n\r\n")
	c.read(t, http.MethodGet)
	first := <-kept
	c.send(t, "GET /second HTTP/1.1\r\nHost: x\r\nX-Second: 2\r\n\r\n")
	c.read(t, http.MethodGet)
	<-kept
	if first.URL.Path != "/first" || first.Header.Get("X-First") != "1" || len(first.Header) != 1 {
		t.Errorf("the first request, after the second: %s %q", first.URL.Path, first.Header)
	}
}

// What RecycleRequests is for: a request on a kept connection costs
// fewer allocations (the space and the header map: three).
func TestH1ServerRecycledRequestsAllocateLess(t *testing.T) {
	allocs := func(recycle bool) float64 {
		_, addr := startH1(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}),
			func(s *h1.Server) { s.RecycleRequests = recycle })
		c := dial(t, addr)
		get := func() {
			c.send(t, "GET /customers HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n")
			c.read(t, http.MethodGet)
		}
		for range 10 {
			get()
		}
		// The fewest of three runs: other goroutines of the test binary
		// only ever add to a count.
		n := testing.AllocsPerRun(100, get)
		for range 2 {
			n = min(n, testing.AllocsPerRun(100, get))
		}
		return n
	}
	with, without := allocs(true), allocs(false)
	t.Logf("%.1f allocations per request with RecycleRequests, %.1f without (the client's included)", with, without)
	if with > without-2 {
		t.Errorf("%.1f allocations per request with RecycleRequests, %.1f without: the recycling is lost", with, without)
	}
}
