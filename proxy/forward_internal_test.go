package proxy

import (
	"maps"
	"net/http"
	"net/url"
	"reflect"
	"testing"
)

// lookupOutboundHeader is outbound's header as one lookup per decision
// makes it: the straightforward form that outbound's single pass must
// match.
func lookupOutboundHeader(h *Handler, in http.Header, id string) http.Header {
	hdr := http.Header{}
	for k, vv := range in {
		if forwardedRequestHeader(k) {
			hdr[k] = vv
		}
	}
	removeConnectionListed(hdr, in["Connection"])
	copyIdempotencyKey(hdr)
	if containsToken(in["Te"], "trailers") {
		hdr["Te"] = h.teTrailers
	}
	if _, ok := hdr["User-Agent"]; !ok {
		hdr["User-Agent"] = h.noUserAgent
	}
	if v := hdr["X-Request-Id"]; len(v) == 0 || v[0] == "" {
		hdr["X-Request-Id"] = []string{id}
	}
	return hdr
}

func sameOutboundHeader(t *testing.T, in http.Header) {
	t.Helper()
	h := &Handler{upstream: &url.URL{Scheme: "https", Host: "api.example"}, teTrailers: []string{"trailers"}, noUserAgent: []string{""}}
	want := lookupOutboundHeader(h, maps.Clone(in), "generated-id")
	x := &exchange{}
	out := h.outbound(x, &http.Request{Method: "POST", URL: &url.URL{Path: "/x"}, Header: maps.Clone(in)}, "generated-id", routeAbsolute)
	if !reflect.DeepEqual(out.Header, want) {
		t.Errorf("outbound of %q:\n got %q\nwant %q", in, out.Header, want)
	}
}

var headerNames = []string{
	"Connection", "Te", "User-Agent", "X-Request-Id", "Idempotency-Key", "X-Idempotency-Key",
	"Authorization", "Forwarded", "X-Forwarded-For", "Keep-Alive", "Proxy-Authorization", "Trailer",
	"Accept", "Content-Type", "X-Dinie-Sdk-Language", "user-agent", "x-request-id",
}

func TestOutboundDecidesAsTheLookupsDo(t *testing.T) {
	tests := []http.Header{
		nil,
		{},
		{"Accept": {"*/*"}},
		{"User-Agent": {"app/1"}, "X-Request-Id": {"app-id"}},
		{"User-Agent": {""}, "X-Request-Id": {""}},
		{"User-Agent": nil, "X-Request-Id": nil},
		{"X-Request-Id": {"", "second"}},
		{"user-agent": {"lower"}, "x-request-id": {"lower"}},
		{"Idempotency-Key": {"k1"}},
		{"Idempotency-Key": {"k1"}, "X-Idempotency-Key": {"k2"}},
		{"Idempotency-Key": {""}, "X-Idempotency-Key": {""}},
		{"Idempotency-Key": {"k1"}, "X-Idempotency-Key": {""}},
		{"X-Idempotency-Key": nil},
		{"Te": {"trailers"}},
		{"Te": {"gzip, Trailers"}},
		{"Te": {"gzip"}},
		{"Connection": {"keep-alive"}, "User-Agent": {"app/1"}},
		{"Connection": {"close"}},
		{"Connection": {"User-Agent"}, "User-Agent": {"app/1"}},
		{"Connection": {"x-request-id, keep-alive"}, "X-Request-Id": {"app-id"}},
		{"Connection": {"Idempotency-Key"}, "Idempotency-Key": {"k1"}},
		{"Connection": {"x-idempotency-key"}, "X-Idempotency-Key": {"k2"}, "Idempotency-Key": {"k1"}},
		{"Connection": {"Te"}, "Te": {"trailers"}},
		{"Connection": {"X-Other"}, "X-Other": {"1"}, "User-Agent": {"app/1"}},
		{"Authorization": {"Bearer fake"}, "Forwarded": {"for=1.2.3.4"}, "X-Forwarded-For": {"1.2.3.4"}, "Keep-Alive": {"timeout=5"}, "Trailer": {"X"}},
	}
	for _, in := range tests {
		sameOutboundHeader(t, in)
	}
}

func FuzzOutboundHeader(f *testing.F) {
	f.Add([]byte{0, 2, 3}, "User-Agent", "v")
	f.Add([]byte{1, 4, 5}, "trailers", "")
	f.Add([]byte{0, 5, 4}, "idempotency-key, keep-alive", "k")
	f.Fuzz(func(t *testing.T, names []byte, v1, v2 string) {
		in := http.Header{}
		for i, n := range names {
			k := headerNames[int(n)%len(headerNames)]
			switch i % 3 {
			case 0:
				in[k] = append(in[k], v1)
			case 1:
				in[k] = append(in[k], v2)
			default:
				in[k] = nil
			}
		}
		sameOutboundHeader(t, in)
	})
}

// takeResponseHeader gives an adopting writer (h1.Server's) the same
// header as a copying one (net/http's): the upstream's end-to-end headers,
// over those the handler set before, which stay where the upstream set
// none; the upstream's Connection names only its own headers.
func TestTakeResponseHeader(t *testing.T) {
	tests := []http.Header{
		{},
		{"Content-Type": {"text/event-stream"}, "Content-Length": {"3"}},
		{"Content-Type": nil},
		{"content-type": {"not canonical"}},
		{"Connection": {"Content-Type, X-Hop"}, "Content-Type": {"application/json"}, "X-Hop": {"1"}, "X-Kept": {"2"}},
		{"Connection": {"keep-alive"}, "Keep-Alive": {"timeout=5"}, "Transfer-Encoding": {"chunked"}, "Date": {"x"}},
		{"Connection": {"X-Set-Before"}, "X-Before-Too": {"the upstream's"}},
	}
	before := http.Header{"X-Set-Before": {"the handler's"}, "X-Before-Too": {"the handler's"}}
	for _, src := range tests {
		// The upstream's end-to-end headers, then the handler's beneath.
		upstream := http.Header{}
		for k, vv := range src {
			if !hopByHop(k) {
				upstream[k] = vv
			}
		}
		removeConnectionListed(upstream, src["Connection"])
		want := before.Clone()
		maps.Copy(want, upstream)
		for name, w := range map[string]interface {
			http.ResponseWriter
			result() http.Header
		}{
			"copying":  &copyingWriter{header: before.Clone()},
			"adopting": &adoptingWriter{copyingWriter{header: before.Clone()}},
		} {
			ct := takeResponseHeader(w, src.Clone()).contentType
			if got := w.result(); !reflect.DeepEqual(got, want) {
				t.Errorf("%s writer, answer header %q: got %q, want %q", name, src, got, want)
			}
			if !reflect.DeepEqual(ct, src["Content-Type"]) {
				t.Errorf("%s writer, answer header %q: Content-Type %q, want %q", name, src, ct, src["Content-Type"])
			}
		}
	}
}

// copyingWriter has only a header map, as net/http's writer.
type copyingWriter struct {
	http.ResponseWriter // nil: only Header is used
	header              http.Header
}

func (w *copyingWriter) Header() http.Header { return w.header }
func (w *copyingWriter) result() http.Header { return w.header }

// adoptingWriter takes a header map over, as h1.Server's writer.
type adoptingWriter struct{ copyingWriter }

func (w *adoptingWriter) AdoptHeader(h http.Header) { w.header = h }

// removeConnectionListed drops the headers a Connection header names,
// whatever their case and the spaces around them, and says whether it
// named any; keep-alive and close, alone or in a list, name none.
func TestRemoveConnectionListed(t *testing.T) {
	for _, tc := range []struct {
		connection []string
		dropped    []string
		named      bool
	}{
		{nil, nil, false},
		{[]string{"keep-alive"}, nil, false},
		{[]string{"Keep-Alive"}, nil, false},
		{[]string{"CLOSE"}, nil, false},
		{[]string{"keep-alive, close"}, nil, false},
		{[]string{"keep-alive", "close"}, nil, false},
		{[]string{"x-a"}, []string{"X-A"}, true},
		{[]string{"keep-alive, X-A"}, []string{"X-A"}, true},
		{[]string{"keep-alive", " X-B ,, x-a"}, []string{"X-A", "X-B"}, true},
		{[]string{"keep-alive-x"}, nil, true}, // a header of that name, which h has not
	} {
		h := http.Header{"X-A": {"1"}, "X-B": {"2"}, "X-Kept": {"3"}}
		want := h.Clone()
		for _, k := range tc.dropped {
			delete(want, k)
		}
		if named := removeConnectionListed(h, tc.connection); named != tc.named || !reflect.DeepEqual(h, want) {
			t.Errorf("Connection %q: left %v, named %v; want %v, %v", tc.connection, h, named, want, tc.named)
		}
	}
}
