package h1

import (
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
