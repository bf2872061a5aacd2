package h1

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"go/ast"
	"go/constant"
	"go/parser"
	"go/token"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

// trickyHeads are heads at the edge of the fast path's subset, for the
// differential fuzzers' seed corpus beside proxy/differential_test.go's.
var trickyHeads = []string{
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain; charset=utf-8\r\nDate: Sun, 06 Dec 2026 11:00:00 GMT\r\n\r\nok",
	"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nCONTENT-TYPE: a\r\nx-request-id: 1\r\nETag: \"x\"\r\nWWW-Authenticate: Bearer\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nX-A: 1\r\nx-a: 2\r\nX-A:3\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nHost: x\r\nContent-Length: 2\r\n\r\nok", // kept in an answer's map, unlike a request's
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-REQUEST-ID: 1\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Request-iD: 1\r\nX--A: 1\r\n-X: 1\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nX-A: a\r\n\tb\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\n\r\nok",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\nok",
	"HTTP/1.1 200 OK\r\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nX-A: b\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nX-A: b\rContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nX-A: b\r\n\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nX-A: b\x01\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nX-A: b\n\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\rX\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nX-A: b \t\r\nX-B:\t c d \r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 2\r\n\r\n",
	"HTTP/1.1 20\r\n\r\n",
	"HTTP/1.1 20 OK\r\n\r\n",
	"HTTP/1.1 200OK\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200\tOK\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 O\x01K\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nContent-Length: 999999999999999999\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nContent-Length: 0002\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nContent-Length: 2 \r\n\r\nok",
	"HTTP/1.1 200 OK\r\nContent-Length:\t2\t\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nContent-Length: 1_0\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nX-Empty:\r\nX-Space:   \r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nX-Utf8: caf\xc3\xa9\r\nX-Latin1: \xe9\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nX-\xc3\xa9: 1\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nX-Del: a\x7fb\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nX-Nul: a\x00b\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\n: empty name\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nno colon\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nConnection: keep-alive, CLOSE\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nConnection: clos\xc3\xa9\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nPragma: no-cache\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nPragma: no-cache\r\nCache-Control: max-age=1\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nTrailer: X-A\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\ntransfer-encoding: identity\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1  200 OK\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 +20 OK\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 099 OK\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 999 X\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 204 No Content\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 304 Not Modified\r\n\r\n",
	"HTTP/1.1 200 OK\r\n\r\nuntil close",
	"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n",
	"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Le",
	" HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\n X-A: 1\r\nContent-Length: 2\r\n\r\nok",

	"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET / HTTP/1.1\nHost: x\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nhOST: y\r\n\r\n",
	"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET HTTP/1.1\r\nHost: x\r\n\r\n",
	" HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET / HTTP/1.1 \r\nHost: x\r\n\r\n",
	"GET /a?b=c&d#e HTTP/1.1\r\nhost: x\r\nuser-agent: y\r\naccept: */*\r\n\r\n",
	"GET http://x/a HTTP/1.1\r\nHost: y\r\n\r\n",
	"GET //x/a HTTP/1.1\r\nHost: y\r\n\r\n",
	"GET * HTTP/1.1\r\nHost: y\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: y\r\n\r\n",
	"GET a HTTP/1.1\r\nHost: y\r\n\r\n",
	"GET /%zz HTTP/1.1\r\nHost: y\r\n\r\n",
	"GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
	"GET /a HTTP/1.1\r\nHost:\r\n\r\n",
	"GET /a HTTP/1.1\r\n\r\n",
	"GET  /a HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET /a  HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET /a HTTP/1.10\r\nHost: x\r\n\r\n",
	"G(T /a HTTP/1.1\r\nHost: x\r\n\r\n",
	"get /a HTTP/1.1\r\nHost: x\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
	"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhel",
	"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
	"POST /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
	"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
	"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	"GET /a HTTP/1.1\r\nHost: x\r\nPragma: no-cache\r\n\r\n",
	"GET /a HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n",
}

// differentialSeeds returns the string constants of proxy/differential_test.go
// that look like HTTP messages: the requests and answers of the
// differential corpus, concatenations and named constants folded.
func differentialSeeds(tb testing.TB) []string {
	tb.Helper()
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, "../../proxy/differential_test.go", nil, 0)
	if err != nil {
		tb.Fatalf("reading the differential corpus: %v", err)
	}
	consts := map[string]constant.Value{}
	var eval func(e ast.Expr) constant.Value
	eval = func(e ast.Expr) constant.Value {
		switch e := e.(type) {
		case *ast.BasicLit:
			if e.Kind == token.STRING {
				return constant.MakeFromLiteral(e.Value, e.Kind, 0)
			}
		case *ast.Ident:
			return consts[e.Name]
		case *ast.ParenExpr:
			return eval(e.X)
		case *ast.BinaryExpr:
			if e.Op == token.ADD {
				if x, y := eval(e.X), eval(e.Y); x != nil && y != nil {
					return constant.BinaryOp(x, token.ADD, y)
				}
			}
		}
		return nil
	}
	for _, d := range file.Decls {
		if g, ok := d.(*ast.GenDecl); ok && g.Tok == token.CONST {
			for _, spec := range g.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if i < len(vs.Values) {
						if v := eval(vs.Values[i]); v != nil {
							consts[name.Name] = v
						}
					}
				}
			}
		}
	}
	seen := map[string]bool{}
	var seeds []string
	ast.Inspect(file, func(n ast.Node) bool {
		if e, ok := n.(ast.Expr); ok {
			if v := eval(e); v != nil && v.Kind() == constant.String {
				if s := constant.StringVal(v); strings.Contains(s, "HTTP/") && !seen[s] {
					seen[s] = true
					seeds = append(seeds, s)
				}
			}
		}
		return true
	})
	if len(seeds) < 50 {
		tb.Fatalf("only %d messages found in the differential corpus: the extraction is broken", len(seeds))
	}
	return seeds
}

// filled returns a reader over raw whose buffer holds what a connection's
// first read would: up to its 4 KiB.
func filled(raw []byte) (*bufio.Reader, *bytes.Reader) {
	src := bytes.NewReader(raw)
	br := bufio.NewReaderSize(src, 4<<10)
	br.Peek(1)
	return br, src
}

// consumed is how much of the input a reader has taken.
func consumed(br *bufio.Reader, src *bytes.Reader, total int) int {
	return total - src.Len() - br.Buffered()
}

// capsDiffer names a key whose values' capacity differs between two
// headers: textproto cuts it to their length, so that appending to one
// key's values cannot write over another's.
func capsDiffer(got, want http.Header) string {
	for k, vv := range want {
		if cap(got[k]) != cap(vv) {
			return fmt.Sprintf("%s: cap %d, net/http's %d", k, cap(got[k]), cap(vv))
		}
	}
	return ""
}

// readTrace reads body to its end in small reads, then once more, closes
// it and reads once after: every result, in order.
func readTrace(body io.ReadCloser) string {
	var b strings.Builder
	p := make([]byte, 7)
	for i := 0; i < 1<<12; i++ {
		n, err := body.Read(p)
		fmt.Fprintf(&b, "%q %v|", p[:n], err)
		if err != nil {
			break
		}
	}
	n, err := body.Read(p)
	fmt.Fprintf(&b, "again %q %v|", p[:n], err)
	fmt.Fprintf(&b, "close %v|", body.Close())
	n, err = body.Read(p)
	fmt.Fprintf(&b, "after close %d %v", n, err)
	return b.String()
}

// checkFastResponse fails t if the fast reader takes raw and reads it
// otherwise than http.ReadResponse does.
func checkFastResponse(t *testing.T, raw []byte, method string) {
	var req *http.Request
	if method != "" {
		req = &http.Request{Method: method, URL: &url.URL{Path: "/"}}
	}
	// Read into a map lent as the server lends one: used and emptied.
	spare := http.Header{"X-Prior": {"1"}, "Content-Length": {"5"}}
	clear(spare)
	checkFast(t, raw, "responses",
		func(br *bufio.Reader) (*http.Response, bool) { return fastReadResponse(br, req, spare) },
		func(br *bufio.Reader) (*http.Response, error) { return http.ReadResponse(br, req) },
		func(m *http.Response) (*io.ReadCloser, http.Header) { return &m.Body, m.Header })
}

// checkFastRequest fails t if the fast reader takes raw and reads it
// otherwise than http.ReadRequest does.
func checkFastRequest(t *testing.T, raw []byte) {
	// Both requests must carry the context given to the fast reader.
	ctx := context.WithValue(context.Background(), fastContextKey{}, "the request's")
	// Read into space that held a request before, as a server
	// connection's has: nothing of that one may show in this one.
	fr := new(fastRequest)
	prior, _ := filled([]byte(priorRequest))
	if _, ok := fastReadRequest(prior, ctx, fr); !ok {
		t.Fatal("the fast reader refused the prior request")
	}
	fr.release()
	checkFast(t, raw, "requests",
		func(br *bufio.Reader) (*http.Request, bool) { return fastReadRequest(br, ctx, fr) },
		func(br *bufio.Reader) (*http.Request, error) {
			req, err := http.ReadRequest(br)
			if err != nil {
				return nil, err
			}
			return req.WithContext(ctx), nil
		},
		func(m *http.Request) (*io.ReadCloser, http.Header) { return &m.Body, m.Header })
}

type fastContextKey struct{}

// priorRequest fills every part of a fastRequest: a URL with a query, a
// body, a repeated name, the Pragma that adds Cache-Control, and more
// fields than fastVals.
const priorRequest = "POST /prior/path?q=1 HTTP/1.1\r\nHost: prior\r\nX-Prior: 1\r\nX-Prior: 2\r\n" +
	"Pragma: no-cache\r\nAccept: a\r\nX-B: b\r\nX-C: c\r\nX-D: d\r\nX-E: e\r\nX-F: f\r\nX-G: g\r\n" +
	"Content-Length: 5\r\n\r\nprior"

// checkFast holds a fast reader to net/http's on raw: if it gives up, it
// consumed nothing; if it takes raw, net/http takes it too, consuming as
// many bytes, with equal fields, header capacities and body reads.
func checkFast[M any](t *testing.T, raw []byte, kind string, fastRead func(*bufio.Reader) (*M, bool),
	netRead func(*bufio.Reader) (*M, error), parts func(*M) (*io.ReadCloser, http.Header)) {
	t.Helper()
	br, src := filled(raw)
	before := br.Buffered()
	fast, ok := fastRead(br)
	if !ok {
		if br.Buffered() != before || src.Len() != len(raw)-before {
			t.Fatalf("the fast reader gave up but consumed input")
		}
		return
	}
	wbr, wsrc := filled(raw)
	want, err := netRead(wbr)
	if err != nil {
		t.Fatalf("the fast reader took a head net/http refuses (%v)", err)
	}
	if got, exp := consumed(br, src, len(raw)), consumed(wbr, wsrc, len(raw)); got != exp {
		t.Fatalf("head: fast reader consumed %d bytes, net/http %d", got, exp)
	}
	fastBodyField, fastHeader := parts(fast)
	wantBodyField, wantHeader := parts(want)
	fastBody, wantBody := *fastBodyField, *wantBodyField
	if (fastBody == http.NoBody) != (wantBody == http.NoBody) {
		t.Fatalf("Body: fast reader's NoBody is %v, net/http's %v", fastBody == http.NoBody, wantBody == http.NoBody)
	}
	*fastBodyField, *wantBodyField = nil, nil
	if !reflect.DeepEqual(fast, want) {
		t.Fatalf("%s differ:\nfast     %#v\nnet/http %#v", kind, *fast, *want)
	}
	if k := capsDiffer(fastHeader, wantHeader); k != "" {
		t.Fatalf("header values' capacity differs: %s", k)
	}
	if got, exp := readTrace(fastBody), readTrace(wantBody); got != exp {
		t.Fatalf("bodies read differently:\nfast     %s\nnet/http %s", got, exp)
	}
	if got, exp := consumed(br, src, len(raw)), consumed(wbr, wsrc, len(raw)); got != exp {
		t.Fatalf("body: fast reader consumed %d bytes in all, net/http %d", got, exp)
	}
}

// FuzzFastResponseHead holds the fast answer reader to http.ReadResponse:
// whatever it takes, net/http reads the same way, to the last body byte
// and error.
func FuzzFastResponseHead(f *testing.F) {
	for _, s := range append(differentialSeeds(f), trickyHeads...) {
		f.Add([]byte(s), "GET")
		f.Add([]byte(s), "HEAD")
	}
	f.Fuzz(func(t *testing.T, raw []byte, method string) {
		checkFastResponse(t, raw, method)
	})
}

// FuzzFastRequestHead holds the fast request reader to http.ReadRequest.
func FuzzFastRequestHead(f *testing.F) {
	for _, s := range append(differentialSeeds(f), trickyHeads...) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		checkFastRequest(t, raw)
	})
}

// TestFastHeadTakesTheOrdinary guards the win: if the fast readers stop
// taking the ordinary answer and request, every request pays net/http's
// parser again, with every other test still passing.
func TestFastHeadTakesTheOrdinary(t *testing.T) {
	answers := []string{
		// net/http's server, and nginx.
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain; charset=utf-8\r\nDate: Sun, 06 Dec 2026 11:00:00 GMT\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sun, 06 Dec 2026 11:00:00 GMT\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: keep-alive\r\nETag: \"1\"\r\n\r\n{}",
		"HTTP/1.1 204 No Content\r\nDate: Sun, 06 Dec 2026 11:00:00 GMT\r\n\r\n",
		"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nContent-Length: 0\r\n\r\n",
	}
	requests := []string{
		"GET /customers HTTP/1.1\r\nHost: proxy\r\n\r\n",
		"GET /v1/customers?limit=10 HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: Go-http-client/1.1\r\nAccept-Encoding: gzip\r\n\r\n",
		"POST /charges HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"amount\":1}",
	}
	checkTaken(t, answers, requests, true)
}

// TestFastHeadLeavesTheUnusual guards the other side: a head whose framing
// or syntax is out of the ordinary is net/http's to read (and the server's
// checks around it to judge), never the fast path's.
func TestFastHeadLeavesTheUnusual(t *testing.T) {
	answers := []string{
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTrailer: X-A\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\n\r\nuntil close",
		"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Le",
	}
	requests := []string{
		"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
		"GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
		"GET /a HTTP/1.1\nHost: x\n\n",
		"GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
		"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
		"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello",
		// The server checks names for tokens only on what net/http read.
		"GET /a HTTP/1.1\r\nHost: x\r\nX A: 1\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: x\r\nX\"A: 1\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: x\r\nX-\xe9: 1\r\n\r\n",
		"GET /a HTTP/1.0\r\n\r\n",
		"GET /a HTTP/1.2\r\nHost: x\r\n\r\n",
		"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: x\r\n",
	}
	checkTaken(t, answers, requests, false)
}

// checkTaken fails unless the fast readers take each of answers and
// requests (want) or leave each to net/http (!want).
func checkTaken(t *testing.T, answers, requests []string, want bool) {
	t.Helper()
	verdict := map[bool]string{true: "took", false: "gave up on"}
	for _, a := range answers {
		br, _ := filled([]byte(a))
		if _, ok := fastReadResponse(br, nil, nil); ok != want {
			t.Errorf("the fast reader %s the answer:\n%q", verdict[ok], a)
		}
	}
	for _, r := range requests {
		br, _ := filled([]byte(r))
		if _, ok := fastReadRequest(br, context.Background(), nil); ok != want {
			t.Errorf("the fast reader %s the request:\n%q", verdict[ok], r)
		}
	}
}

// TestFastPathIsTaken guards the fast readers' place in Transport and
// Server: an ordinary answer's body and an ordinary POST's body are the
// fast reader's.
func TestFastPathIsTaken(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	tr, err := NewTransport(u, TransportConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, up.URL+"/a", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if b, ok := resp.Body.(*h1body); !ok {
		t.Errorf("the answer's body is a %T, not the transport's", resp.Body)
	} else if _, ok := b.rc.(*fastBody); !ok {
		t.Errorf("an ordinary answer was read by net/http (its body is a %T)", b.rc)
	}
	if body, err := io.ReadAll(resp.Body); err != nil || string(body) != "ok" {
		t.Fatalf("the answer's body is %q (%v)", body, err)
	}
	resp.Body.Close()

	// The handler's verdict, sent before the answer: there by the time the
	// answer is read.
	verdict := make(chan error, 1)
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var err error
		if b, ok := r.Body.(*serverBody); !ok {
			err = fmt.Errorf("the request's body is a %T, not the server's", r.Body)
		} else if _, ok := b.rc.(*fastBody); !ok {
			err = fmt.Errorf("an ordinary request was read by net/http (its body is a %T)", b.rc)
		}
		verdict <- err
		io.Copy(io.Discard, r.Body)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	defer s.Close()
	resp, err = http.Post("http://"+ln.Addr().String()+"/charges", "application/json", strings.NewReader(`{"amount":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	select {
	case err := <-verdict:
		if err != nil {
			t.Error(err)
		}
	default:
		t.Fatalf("the POST was not handled: %s", resp.Status)
	}
}

// TestFastHeadAllocates guards what the fast readers cost in garbage on an
// ordinary head: fewer allocations than net/http's readers, and about as
// many bytes. The head is one string, names and separators included,
// where net/http copies only the values and interns common names, so a
// quarter more is allowed; the scan's own bookkeeping once escaped to the
// heap, a kilobyte per head, which this catches.
func TestFastHeadAllocates(t *testing.T) {
	const answer = "HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sun, 06 Dec 2026 11:00:00 GMT\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n{}"
	const request = "GET /v1/customers?limit=10 HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: Go-http-client/1.1\r\nAccept-Encoding: gzip\r\n\r\n"
	get := &http.Request{Method: http.MethodGet}
	cost := func(raw string, read func(*bufio.Reader) bool) (allocs, bytes float64) {
		src := strings.NewReader(raw)
		br := bufio.NewReaderSize(src, 4<<10)
		run := func() {
			src.Reset(raw)
			br.Reset(src)
			br.Peek(1)
			if !read(br) {
				t.Fatalf("not read: %q", raw)
			}
		}
		run()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		const runs = 100
		for range runs {
			run()
		}
		runtime.ReadMemStats(&after)
		return float64(after.Mallocs-before.Mallocs) / runs, float64(after.TotalAlloc-before.TotalAlloc) / runs
	}
	for _, tt := range []struct {
		name, raw  string
		fast, slow func(*bufio.Reader) bool
	}{
		{"answer", answer,
			func(br *bufio.Reader) bool { _, ok := fastReadResponse(br, get, nil); return ok },
			func(br *bufio.Reader) bool { _, err := http.ReadResponse(br, get); return err == nil }},
		{"request", request,
			func(br *bufio.Reader) bool { _, ok := fastReadRequest(br, context.Background(), nil); return ok },
			func(br *bufio.Reader) bool { _, err := http.ReadRequest(br); return err == nil }},
	} {
		fa, fb := cost(tt.raw, tt.fast)
		sa, sb := cost(tt.raw, tt.slow)
		t.Logf("%s: fast %.1f allocations, %.0f bytes; net/http %.1f, %.0f", tt.name, fa, fb, sa, sb)
		if fa >= sa || fb > 1.25*sb {
			t.Errorf("%s: the fast reader allocates %.1f times, %.0f bytes; net/http %.1f times, %.0f bytes", tt.name, fa, fb, sa, sb)
		}
	}
	// A server connection reads each request into the space of the one
	// before, and each answer into the map its last answer gave back
	// (Server): neither the space nor the map is then an allocation, and
	// only the head's string and the Request or Response are.
	fr := new(fastRequest)
	spare := http.Header{}
	for _, tt := range []struct {
		name, raw string
		read      func(*bufio.Reader) bool
	}{
		{"request into reused space", request, func(br *bufio.Reader) bool {
			_, ok := fastReadRequest(br, context.Background(), fr)
			fr.release()
			return ok
		}},
		{"answer into a lent map", answer, func(br *bufio.Reader) bool {
			_, ok := fastReadResponse(br, get, spare)
			clear(spare)
			return ok
		}},
	} {
		// The fewest of three runs: other goroutines of the test binary
		// only ever add to a count.
		n := math.Inf(1)
		for range 3 {
			a, _ := cost(tt.raw, tt.read)
			n = min(n, a)
		}
		if n > 2 {
			t.Errorf("%s: %.2f allocations, want 2", tt.name, n)
		}
	}
}

// plainTargets are request targets at the edge of plainTarget's subset.
var plainTargets = []string{
	"/", "/api/v3/customers", "/v1/customers?limit=10", "/a?b=c&d=e", "/a?", "/a??", "/a?b?", "/?", "/??",
	"//x/y", "///x", "/a%20b", "/a%2Fb", "/a%zz", "/a+b", "/a#f", "/a?b#c", "/a!b", "/a*b", "/a'b", "/a(b)",
	"/~u/..;=@$&+,:", "/a/./b/../c", "*", "a", "http://x/y", "/a?%zz", "/a?b c", "/a\\b", "/a|b", "/a{b}",
	"/a[b]", "/a^b", "/a`b", "/a\"b", "/a<b>", "/a?\"<>{}|\\^`",
}

// checkPlainTarget holds plainTarget to url.ParseRequestURI for a target
// the head's scan lets through (visible ASCII, no space): where it takes
// one, it sets exactly what the parser would.
func checkPlainTarget(t *testing.T, target string) {
	if target == "" || strings.ContainsFunc(target, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
		return
	}
	var u url.URL
	if !plainTarget(&u, target) {
		return
	}
	want, err := url.ParseRequestURI(target)
	if err != nil {
		t.Fatalf("plainTarget took %q, which url.ParseRequestURI refuses: %v", target, err)
	}
	if !reflect.DeepEqual(&u, want) {
		t.Fatalf("plainTarget(%q) = %#v, url.ParseRequestURI %#v", target, u, *want)
	}
}

func FuzzPlainTarget(f *testing.F) {
	for _, s := range plainTargets {
		f.Add(s)
	}
	f.Fuzz(checkPlainTarget)
}

func TestPlainTarget(t *testing.T) {
	targets := plainTargets
	for c := byte(0x21); c < 0x7f; c++ {
		targets = append(targets, "/a"+string(c)+"b", "/a?"+string(c), "/"+string(c), string(c)+"/a")
	}
	for _, target := range targets {
		checkPlainTarget(t, target)
	}
	// The subset must hold what apps send, or the parser runs again for
	// every request with every other test still passing.
	for _, target := range []string{"/", "/api/v3/customers", "/v1/customers?limit=10&after=cus_1", "/a?", "/v3/x@y:z;w=1,2+3$&~._-"} {
		if !plainTarget(new(url.URL), target) {
			t.Errorf("plainTarget left %q to the parser", target)
		}
	}
}

// BenchmarkFastRead reads, from a filled buffer, heads like bench/run.sh's
// GET: nginx's answer and an app's request with a few headers. Under
// callgrind it counts a reader's instructions without the network
// (bench/README.md).
func BenchmarkFastRead(b *testing.B) {
	answer := []byte("HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 06 Dec 2026 11:00:00 GMT\r\nContent-Type: application/json\r\nContent-Length: 27\r\nConnection: keep-alive\r\n\r\n{\"data\":[],\"has_more\":false}")
	request := []byte("GET /api/v3/customers HTTP/1.1\r\nHost: 127.0.0.1:18701\r\nUser-Agent: app/1.0\r\nAccept: */*\r\n\r\n")
	src := bytes.NewReader(nil)
	br := bufio.NewReaderSize(src, 4096)
	fill := func(head []byte) {
		src.Reset(head)
		br.Reset(src)
		br.Peek(1) // the fast readers take only what is buffered
	}
	get := &http.Request{Method: http.MethodGet}
	b.Run("answer", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			fill(answer)
			if _, ok := fastReadResponse(br, get, nil); !ok {
				b.Fatal("the answer was left to net/http")
			}
		}
	})
	b.Run("request", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			fill(request)
			if _, ok := fastReadRequest(br, context.Background(), nil); !ok {
				b.Fatal("the request was left to net/http")
			}
		}
	})
}
