package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// sameAsRequestWrite checks that writeRequest sends what net/http's
// transport does: it refuses a request whose header invalidField faults
// (errInvalidField), with none of it gone to the connection, and
// otherwise writes what req.Write does, header lines in any order but a
// header's values in theirs, or fails as it does, with the body read
// through the writer's buffer and through a buffer of its own (a small
// one, for many reads). newReq makes the request afresh for each, as a
// body is read.
func sameAsRequestWrite(t *testing.T, newReq func() *http.Request) {
	t.Helper()
	var want bytes.Buffer
	wantErr := newReq().Write(&want)
	_, refused := invalidField(newReq().Header)
	// A Transport passes its host as plain when it is: the same request
	// must come out whether writeRequest looks at the host or not.
	plainHosts := []string{""}
	if r := newReq(); r.URL != nil && isPlainHost(r.URL.Host) {
		plainHosts = append(plainHosts, r.URL.Host)
	}
	for _, plainHost := range plainHosts {
		for _, buf := range [][]byte{nil, make([]byte, 3)} {
			var got bytes.Buffer
			// A small writer for a head that goes out before its end.
			size := 4096
			if len(buf) > 0 {
				size = 64
			}
			bw := bufio.NewWriterSize(&got, size)
			gotErr := writeRequest(bw, newReq(), buf, plainHost)
			if refused {
				e, ok := gotErr.(errInvalidField)
				if !ok {
					t.Fatalf("writeRequest (plain host %q) error %v for a header net/http's transport refuses", plainHost, gotErr)
				}
				if e.spoiled || got.Len() > 0 {
					t.Fatalf("writeRequest (plain host %q) refused (spoiled %v) after writing %q to the connection", plainHost, e.spoiled, got.String())
				}
				continue
			}
			bw.Flush()
			if (wantErr == nil) != (gotErr == nil) {
				t.Fatalf("writeRequest (buffer of %d, plain host %q) error %v, Request.Write error %v", len(buf), plainHost, gotErr, wantErr)
			}
			if wantErr != nil {
				continue
			}
			if g, w := normalizeHead(got.String()), normalizeHead(want.String()); g != w {
				t.Errorf("writeRequest (buffer of %d, plain host %q) wrote\n%q\nRequest.Write wrote\n%q", len(buf), plainHost, g, w)
			}
		}
	}
}

// withBody makes req with a body that is not in memory as far as
// Request.Write can tell (so it flushes the head first), of length n.
func withBody(req *http.Request, body io.Reader, n int64) func() *http.Request {
	return func() *http.Request {
		r := *req
		if s, ok := body.(*strings.Reader); ok {
			s.Seek(0, io.SeekStart) // each writer reads it from the start
		}
		r.Body, r.ContentLength = io.NopCloser(struct{ io.Reader }{body}), n
		return &r
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
		make func() *http.Request // instead of req, for a request with a body
	}{
		{"GET", newOutbound("GET", "https://api.example/v3/customers?page=2", hdr("Accept", "application/json", "X-Request-Id", "req-1")), nil},
		{"empty method is GET", newOutbound("", "https://api.example/v3", nil), nil},
		{"HEAD", newOutbound("HEAD", "https://api.example/v3", hdr("Accept", "*/*")), nil},
		{"DELETE has no length", newOutbound("DELETE", "https://api.example/v3/x", hdr("Accept", "*/*")), nil},
		{"POST without a body", newOutbound("POST", "https://api.example/v3/x", hdr("Idempotency-Key", "k1")), nil},
		{"no User-Agent key: Go's", newOutbound("GET", "https://api.example/", hdr("Accept", "*/*")), nil},
		{"empty User-Agent: none", newOutbound("GET", "https://api.example/", hdr("User-Agent", "")), nil},
		{"empty User-Agent on a POST", newOutbound("POST", "https://api.example/", hdr("User-Agent", "")), nil},
		{"the first User-Agent only", newOutbound("GET", "https://api.example/", hdr("User-Agent", "app/1", "User-Agent", "app/2")), nil},
		{"values in order", newOutbound("GET", "https://api.example/", hdr("Accept", "a", "Accept", "b", "Accept", "c")), nil},
		{"CR and LF in values", newOutbound("GET", "https://api.example/", hdr("X-A", "one\r\nX-Evil: 1", "X-B", "  padded\t", "User-Agent", " ua\n")), nil},
		{"only spaces and tabs trimmed", newOutbound("GET", "https://api.example/", hdr("X-V", " \vv\f\t")), nil},
		{"invalid names dropped", newOutbound("GET", "https://api.example/", hdr("Bad Name", "v", "X:Y", "v", "Good", "v")), nil},
		{"framing headers are the request's", newOutbound("GET", "https://api.example/", hdr("Content-Length", "9", "Transfer-Encoding", "chunked", "Trailer", "X", "Host", "evil.example")), nil},
		{"escaped path", newOutbound("GET", "https://api.example/a%2Fb/c%20d?q=%41", nil), nil},
		{"empty path", newOutbound("GET", "https://api.example", nil), nil},
		{"forced empty query", newOutbound("GET", "https://api.example/x?", nil), nil},
		{"IPv6 host and port", newOutbound("GET", "https://[::1]:8443/x", nil), nil},
		// What req.Write is left with.
		{"zone in the host", newOutbound("GET", "https://[fe80::1%25eth0]:8443/x", nil), nil},
		{"non-ASCII host", newOutbound("GET", "https://bücher.example/x", nil), nil},
		{"non-ASCII Host beside a plain URL host", func() *http.Request {
			r := newOutbound("GET", "https://api.example/x", nil)
			r.Host = "bücher.example"
			return r
		}(), nil},
		{"CONNECT", newOutbound("CONNECT", "https://api.example", nil), nil},
		{"opaque URL", newOutbound("GET", "https:opaque", nil), nil},
		{"invalid method", newOutbound("GET /x HTTP/1.1\r\nX:", "https://api.example/", nil), nil},
		{"control byte in the query", &http.Request{Method: "GET", URL: &url.URL{Scheme: "https", Host: "api.example", Path: "/", RawQuery: "a\r\nb"}, Header: http.Header{}}, nil},
		{"NoBody is no body", func() *http.Request {
			r := newOutbound("POST", "https://api.example/x", hdr("Content-Type", "application/json"))
			r.Body, r.ContentLength = http.NoBody, 0
			return r
		}(), nil},
		{"POST with a body", nil, withBody(newOutbound("POST", "https://api.example/payments", hdr("Content-Type", "application/json")), strings.NewReader(`{"amount":100}`), 14)},
		{"GET with a body", nil, withBody(newOutbound("GET", "https://api.example/x", nil), strings.NewReader("abc"), 3)},
		{"body larger than the buffer", nil, withBody(newOutbound("PUT", "https://api.example/x", nil), strings.NewReader(strings.Repeat("x", 100<<10)), 100<<10)},
		{"body shorter than its length", nil, withBody(newOutbound("POST", "https://api.example/x", nil), strings.NewReader("abc"), 4)},
		{"body longer than its length", nil, withBody(newOutbound("POST", "https://api.example/x", nil), strings.NewReader("abcde"), 4)},
		{"body failing", nil, func() *http.Request {
			r := newOutbound("POST", "https://api.example/x", nil)
			failing := io.MultiReader(strings.NewReader(`{"a"`), iotest.ErrReader(errors.New("app gone")))
			r.Body, r.ContentLength = io.NopCloser(failing), 10
			return r
		}},
		// What req.Write is left with: a body of unknown length.
		{"chunked", nil, withBody(newOutbound("POST", "https://api.example/x", nil), strings.NewReader("abc"), -1)},
		{"zero length, body to probe", nil, withBody(newOutbound("POST", "https://api.example/x", nil), strings.NewReader("abc"), 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			make := tt.make
			if make == nil {
				make = func() *http.Request { return tt.req }
			}
			sameAsRequestWrite(t, make)
		})
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
		if plainRequest(req, req.URL.Host, "") {
			t.Errorf("%s %s (Close %v, ContentLength %d): plain, want it left to Request.Write", req.Method, req.URL, req.Close, req.ContentLength)
		}
	}
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	if err := writeRequest(bw, withTrace, nil, ""); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(traced, "Accept") {
		t.Errorf("the client trace saw %v, want Accept among them", traced)
	}
}

type closeRecorder struct {
	io.Reader
	closed bool
}

func (c *closeRecorder) Close() error {
	c.closed = true
	return nil
}

// Request.Write closes the body whatever happens; a RoundTripper must.
func TestWriteRequestClosesTheBody(t *testing.T) {
	for _, tc := range []struct {
		body string
		n    int64
	}{{"abc", 3}, {"abc", 4}, {"abcd", 3}} {
		body := &closeRecorder{Reader: strings.NewReader(tc.body)}
		req := newOutbound("POST", "https://api.example/x", nil)
		req.Body, req.ContentLength = body, tc.n
		writeRequest(bufio.NewWriter(io.Discard), req, nil, "")
		if !body.closed {
			t.Errorf("body %q with ContentLength %d: not closed", tc.body, tc.n)
		}
	}
}

func FuzzWriteRequest(f *testing.F) {
	f.Add("GET", "/v3/customers", "", "page=2", "Accept", "application/json", "app/1", "", int8(0))
	f.Add("DELETE", "/a/b", "/a%2Fb", "", "X-Key", " v\r\n", "", "", int8(0))
	f.Add("", "", "", "q", "Bad Name", "v", " ua ", "", int8(0))
	f.Add("GET", "/", "", "", "", "v", "-", "", int8(0)) // an empty name
	f.Add("POST", "/payments", "", "", "Content-Type", "application/json", "-", `{"amount":1}`, int8(0))
	f.Add("PUT", "/x", "", "", "Content-Length", "1", "-", "ab", int8(-1))
	f.Fuzz(func(t *testing.T, method, path, rawPath, rawQuery, key, value, ua, body string, lengthOff int8) {
		u := &url.URL{Scheme: "https", Host: "api.example", Path: path, RawPath: rawPath, RawQuery: rawQuery}
		h := http.Header{key: {value, value + "2"}}
		if ua != "-" {
			h["User-Agent"] = []string{ua}
		}
		req := &http.Request{Method: method, URL: u, Header: h}
		if body == "" && lengthOff == 0 {
			sameAsRequestWrite(t, func() *http.Request { return req })
			return
		}
		sameAsRequestWrite(t, withBody(req, strings.NewReader(body), int64(len(body))+int64(lengthOff)))
	})
}

// writeBody sends the head with the body only if Server's body says the
// body has arrived.
func TestH1ServerBodyTellsWhatHasArrived(t *testing.T) {
	got := make(chan int64, 1)
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Body.(bufferedBody).Buffered()
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	for _, tc := range []struct {
		name, request string
		want          int64
	}{
		{"arrived", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 5},
		{"half arrived", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello", 5},
		{"waiting for 100 Continue", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n", 0},
		{"chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 0},
	} {
		app, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(app, tc.request) // one write: it arrives in one piece
		if n := <-got; n != tc.want {
			t.Errorf("%s: buffered %d, want %d", tc.name, n, tc.want)
		}
		app.Close()
	}
}
