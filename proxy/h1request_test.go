package proxy

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// sameAsRequestWrite checks that writeRequest writes what req.Write does,
// header lines in any order but a header's values in theirs, or fails as
// it does.
func sameAsRequestWrite(t *testing.T, req *http.Request) {
	t.Helper()
	var want, got bytes.Buffer
	wantErr := req.Write(&want)
	bw := bufio.NewWriter(&got)
	gotErr := writeRequest(bw, req)
	bw.Flush()
	if (wantErr == nil) != (gotErr == nil) {
		t.Fatalf("writeRequest error %v, Request.Write error %v", gotErr, wantErr)
	}
	if wantErr != nil {
		return
	}
	if g, w := normalizeHead(got.String()), normalizeHead(want.String()); g != w {
		t.Errorf("writeRequest wrote\n%q\nRequest.Write wrote\n%q", g, w)
	}
}

// normalizeHead sorts a request's header lines by name, keeping the order
// of the lines of one name, so that map order does not count.
func normalizeHead(msg string) string {
	head, body, _ := strings.Cut(msg, "\r\n\r\n")
	lines := strings.Split(head, "\r\n")
	fields := lines[1:]
	slices.SortStableFunc(fields, func(a, b string) int {
		ka, _, _ := strings.Cut(a, ":")
		kb, _, _ := strings.Cut(b, ":")
		return strings.Compare(ka, kb)
	})
	return strings.Join(lines, "\r\n") + "\r\n\r\n" + body
}

func newOutbound(method, target string, h http.Header) *http.Request {
	u, err := url.Parse(target)
	if err != nil {
		panic(err)
	}
	return &http.Request{Method: method, URL: u, Host: "", Header: h, ProtoMajor: 1, ProtoMinor: 1}
}

func TestWriteRequestWritesWhatRequestWriteDoes(t *testing.T) {
	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h[kv[i]] = append(h[kv[i]], kv[i+1])
		}
		return h
	}
	tests := []struct {
		name string
		req  *http.Request
	}{
		{"GET", newOutbound("GET", "https://api.example/v3/customers?page=2", hdr("Accept", "application/json", "X-Request-Id", "req-1"))},
		{"empty method is GET", newOutbound("", "https://api.example/v3", nil)},
		{"HEAD", newOutbound("HEAD", "https://api.example/v3", hdr("Accept", "*/*"))},
		{"DELETE has no length", newOutbound("DELETE", "https://api.example/v3/x", hdr("Accept", "*/*"))},
		{"POST without a body", newOutbound("POST", "https://api.example/v3/x", hdr("Idempotency-Key", "k1"))},
		{"no User-Agent key: Go's", newOutbound("GET", "https://api.example/", hdr("Accept", "*/*"))},
		{"empty User-Agent: none", newOutbound("GET", "https://api.example/", hdr("User-Agent", ""))},
		{"the first User-Agent only", newOutbound("GET", "https://api.example/", hdr("User-Agent", "app/1", "User-Agent", "app/2"))},
		{"values in order", newOutbound("GET", "https://api.example/", hdr("Accept", "a", "Accept", "b", "Accept", "c"))},
		{"CR and LF in values", newOutbound("GET", "https://api.example/", hdr("X-A", "one\r\nX-Evil: 1", "X-B", "  padded\t", "User-Agent", " ua\n"))},
		{"only spaces and tabs trimmed", newOutbound("GET", "https://api.example/", hdr("X-V", " \vv\f\t"))},
		{"invalid names dropped", newOutbound("GET", "https://api.example/", hdr("Bad Name", "v", "X:Y", "v", "Good", "v"))},
		{"framing headers are the request's", newOutbound("GET", "https://api.example/", hdr("Content-Length", "9", "Transfer-Encoding", "chunked", "Trailer", "X", "Host", "evil.example"))},
		{"escaped path", newOutbound("GET", "https://api.example/a%2Fb/c%20d?q=%41", nil)},
		{"empty path", newOutbound("GET", "https://api.example", nil)},
		{"forced empty query", newOutbound("GET", "https://api.example/x?", nil)},
		{"IPv6 host and port", newOutbound("GET", "https://[::1]:8443/x", nil)},
		// What req.Write is left with.
		{"zone in the host", newOutbound("GET", "https://[fe80::1%25eth0]:8443/x", nil)},
		{"non-ASCII host", newOutbound("GET", "https://bücher.example/x", nil)},
		{"CONNECT", newOutbound("CONNECT", "https://api.example", nil)},
		{"opaque URL", newOutbound("GET", "https:opaque", nil)},
		{"invalid method", newOutbound("GET /x HTTP/1.1\r\nX:", "https://api.example/", nil)},
		{"control byte in the query", &http.Request{Method: "GET", URL: &url.URL{Scheme: "https", Host: "api.example", Path: "/", RawQuery: "a\r\nb"}, Header: http.Header{}}},
		{"NoBody is no body", func() *http.Request {
			r := newOutbound("POST", "https://api.example/x", hdr("Content-Type", "application/json"))
			r.Body, r.ContentLength = http.NoBody, 0
			return r
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { sameAsRequestWrite(t, tt.req) })
	}
}

// The cases writeRequest leaves to req.Write differ from Request.Write's
// output only if that hand-off fails, so they are checked to go there:
// with a body, closing, and under a client trace, which must see the
// request's headers being written.
func TestWriteRequestLeavesTheUnusualToRequestWrite(t *testing.T) {
	withBody := newOutbound("POST", "https://api.example/x", http.Header{"User-Agent": {""}})
	withBody.Body, withBody.ContentLength = http.NoBody, 3
	closing := newOutbound("GET", "https://api.example/x", http.Header{})
	closing.Close = true
	var traced []string
	trace := &httptrace.ClientTrace{WroteHeaderField: func(k string, _ []string) { traced = append(traced, k) }}
	withTrace := newOutbound("GET", "https://api.example/x", http.Header{"Accept": {"*/*"}}).
		WithContext(httptrace.WithClientTrace(context.Background(), trace))
	for _, req := range []*http.Request{withBody, closing, withTrace} {
		if plainRequest(req) {
			t.Errorf("%s %s (Close %v, ContentLength %d): plain, want it left to Request.Write", req.Method, req.URL, req.Close, req.ContentLength)
		}
	}
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	if err := writeRequest(bw, withTrace); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(traced, "Accept") {
		t.Errorf("the client trace saw %v, want Accept among them", traced)
	}
}

func FuzzWriteRequest(f *testing.F) {
	f.Add("GET", "/v3/customers", "", "page=2", "Accept", "application/json", "app/1")
	f.Add("DELETE", "/a/b", "/a%2Fb", "", "X-Key", " v\r\n", "")
	f.Add("", "", "", "q", "Bad Name", "v", " ua ")
	f.Fuzz(func(t *testing.T, method, path, rawPath, rawQuery, key, value, ua string) {
		u := &url.URL{Scheme: "https", Host: "api.example", Path: path, RawPath: rawPath, RawQuery: rawQuery}
		h := http.Header{key: {value, value + "2"}}
		if ua != "-" {
			h["User-Agent"] = []string{ua}
		}
		sameAsRequestWrite(t, &http.Request{Method: method, URL: u, Header: h})
	})
}
