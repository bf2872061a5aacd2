package h1

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestH1RefusesWhatNetHTTPRefusesToSend holds Transport to the checks
// net/http's transport makes before sending (transport.go, roundTrip):
// neither sends a request whose method, header or trailer could not go
// out as it is. The proxy's own headers (the token) are what could be
// wrong here, since both servers refuse such requests from the app.
func TestH1RefusesWhatNetHTTPRefusesToSend(t *testing.T) {
	var received atomic.Int64
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) { received.Add(1) })
	u, _ := url.Parse(srv.URL)
	h1, err := NewTransport(u, TransportConfig{ResponseHeaderTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h1.CloseIdleConnections)
	std := &http.Transport{}
	t.Cleanup(std.CloseIdleConnections)

	tests := []struct {
		name   string
		modify func(r *http.Request)
	}{
		{"LF in a value", func(r *http.Request) { r.Header.Set("Authorization", "Bearer fake\nX-Injected: 1") }},
		{"NUL in a value", func(r *http.Request) { r.Header["X-A"] = []string{"a\x00b"} }},
		{"DEL in a value", func(r *http.Request) { r.Header["X-A"] = []string{"a\x7fb"} }},
		{"space in a name", func(r *http.Request) { r.Header["Content-Length "] = []string{"5"} }},
		{"colon in a name", func(r *http.Request) { r.Header["X-A: 1\r\nX-B"] = []string{"2"} }},
		{"empty name", func(r *http.Request) { r.Header[""] = []string{"v"} }},
		{"method not a token", func(r *http.Request) { r.Method = "GET /x HTTP/1.1\r\n" }},
		{"LF in a trailer", func(r *http.Request) {
			r.Method = http.MethodPost
			r.Body = http.NoBody
			r.Trailer = http.Header{"X-T": {"a\nb"}}
		}},
	}
	for _, tt := range tests {
		for _, tr := range []struct {
			name string
			rt   http.RoundTripper
		}{{"Transport", h1}, {"net/http", std}} {
			t.Run(tt.name+"/"+tr.name, func(t *testing.T) {
				req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/x", nil)
				tt.modify(req)
				resp, err := tr.rt.RoundTrip(req)
				if err == nil {
					resp.Body.Close()
					t.Fatalf("sent, status %d", resp.StatusCode)
				}
				if strings.Contains(err.Error(), "fake") {
					t.Error("the error shows the header's value")
				}
			})
		}
	}
	if n := received.Load(); n != 0 {
		t.Errorf("the upstream received %d requests", n)
	}
}

// validFieldValue's word-at-a-time check must say what the byte loop
// says, whatever the bytes and wherever they sit in a word.
func FuzzValidFieldValue(f *testing.F) {
	for _, s := range []string{"", "Bearer fake-token-for-tests", "a\tb", "abcdefg\x7f", "abcdefgh\x00ijk",
		"\x1f", "\x80\x9f\xff\x7e\x20\x21", strings.Repeat("x", 1024) + "\r", "tab\tinside a long value\t"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if got, want := validFieldValue(v), validFieldBytes(v); got != want {
			t.Fatalf("validFieldValue(%q) = %v, the byte loop says %v", v, got, want)
		}
	})
}

// Every byte value, at every offset of a word, is judged as the byte
// loop judges it.
func TestValidFieldValueEveryByteEverywhere(t *testing.T) {
	base := []byte("0123456789abcdefghij")
	for c := range 256 {
		for at := range len(base) {
			v := append([]byte(nil), base...)
			v[at] = byte(c)
			if got, want := validFieldValue(string(v)), validFieldBytes(string(v)); got != want {
				t.Fatalf("byte %#x at %d: validFieldValue says %v, the byte loop %v", c, at, got, want)
			}
		}
	}
}

func BenchmarkValidFieldValue(b *testing.B) {
	token := "Bearer " + strings.Repeat("eyJhbGciOiJSUzI1NiJ9", 50) // the size of a real access token
	for b.Loop() {
		if !validFieldValue(token) {
			b.Fatal("a clean token refused")
		}
	}
}

// A refused request must not cost the connection it was about to go out
// on (a token that cannot be sent would otherwise open a connection per
// request), must close its body as net/http's transport does, and must
// never reach the upstream, not even in part when its head is larger than
// the writer's buffer.
func TestH1KeepsTheConnectionOfARefusedRequest(t *testing.T) {
	var received atomic.Int64
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) { received.Add(1) })
	tr, client := h1For(t, srv)
	get := func() {
		t.Helper()
		if status, _ := fetch(t, client, http.MethodGet, srv.URL+"/ok", nil); status != http.StatusOK {
			t.Fatalf("a valid GET: status %d", status)
		}
	}
	get()
	for _, tc := range []struct {
		name   string
		modify func(r *http.Request)
	}{
		{"LF in the token", func(r *http.Request) { r.Header.Set("Authorization", "Bearer fake\nX-Injected: 1") }},
		{"space in a name", func(r *http.Request) { r.Header["X-A B"] = []string{"1"} }},
		{"LF in a second User-Agent", func(r *http.Request) { r.Header["User-Agent"] = []string{"app/1", "a\nb"} }},
		{"LF in a Host field, which is not written", func(r *http.Request) { r.Header["Host"] = []string{"a\nb"} }},
	} {
		for _, withBody := range []bool{false, true} {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/x", nil)
			body := &closeRecorder{Reader: strings.NewReader("abc")}
			if withBody {
				req.Method, req.Body, req.ContentLength = http.MethodPost, body, 3
			}
			// A valid field that may come before the bad one.
			req.Header["Accept"] = []string{"application/json"}
			tc.modify(req)
			if resp, err := tr.RoundTrip(req); err == nil {
				resp.Body.Close()
				t.Fatalf("%s: sent, status %d", tc.name, resp.StatusCode)
			} else if _, ok := err.(errInvalidField); !ok {
				t.Errorf("%s: error %v, want errInvalidField", tc.name, err)
			}
			if withBody && !body.closed {
				t.Errorf("%s: the body of the refused request was not closed", tc.name)
			}
		}
	}
	// Half the map orders put the bad field after the large one, which
	// fills the writer's 16 KiB buffer first.
	for range 8 {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/x", nil)
		req.Header["X-Large"] = []string{strings.Repeat("v", 20<<10)}
		req.Header["X-Bad"] = []string{"a\r\nX-Injected: 1"}
		if resp, err := tr.RoundTrip(req); err == nil {
			resp.Body.Close()
			t.Fatal("a large head with a bad field was sent")
		}
	}
	get()
	if n := conns.Load(); n != 1 {
		t.Errorf("the refused requests cost connections: %d made, want 1", n)
	}
	if n := received.Load(); n != 2 {
		t.Errorf("the upstream received %d requests, want the 2 valid GETs", n)
	}
}

// A request refused after its context ended leaves a connection whose
// deadline the end poisoned: it must close, not go back to the pool,
// where the next request would time out on it.
func TestH1RefusedAfterItsEndDoesNotPoisonThePool(t *testing.T) {
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {})
	tr, client := h1For(t, srv)
	if status, _ := fetch(t, client, http.MethodGet, srv.URL+"/ok", nil); status != http.StatusOK {
		t.Fatalf("a valid GET: status %d", status)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/x", nil)
	req.Header["X-Bad"] = []string{"a\nb"}
	if resp, err := tr.RoundTrip(req); err == nil {
		resp.Body.Close()
		t.Fatal("a request with a bad field was sent")
	}
	if status, _ := fetch(t, client, http.MethodGet, srv.URL+"/ok", nil); status != http.StatusOK {
		t.Fatalf("the GET after the refusal: status %d", status)
	}
}
