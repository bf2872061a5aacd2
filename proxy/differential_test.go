package proxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dinie/dinie-auth-proxy/internal/h1"
	"github.com/dinie/dinie-auth-proxy/proxy"
)

// The differential tests send hostile bytes through the proxy in every
// set-up and compare the framing decisions: the proxy's own HTTP/1.1 server
// against net/http's (same raw requests), and its own transport against
// net/http's (same lying upstream). Where a set-up is meant to differ, the
// case says so and why; the difference must then be there, so that this
// list, and the one in docs/modes-and-clients.md, stay exact. The one intended difference that is
// not about framing has a test of its own: TestDifferentialContentType.
//
// The checks net/http makes outside its parsers, and the cases for each:
//
// server.go, readRequest and serve, made by h1.Server too:
//   - CR/LF after a POST dropped: "stray CRLF after a POST body" (and PUT);
//   - HTTP/1.x only, else 505: "HTTP/2.0 line", "HTTP/2 preface" (an
//     intended difference: net/http lets the preface through for h2c);
//   - Host present in HTTP/1.1 and valid: the "Host" cases;
//   - header names are tokens: "space before colon ...", "space in a name";
//   - header values without control bytes: not repeated by h1.Server, as
//     the parser refuses them first: "NUL/CR/DEL in a value";
//   - only the first Expect counts, empty is none, else 417: the "Expect"
//     cases;
//   - OPTIONS * answered by the server: "OPTIONS *" (the proxy's handler
//     answers as net/http's server does, for h1.Server);
//   - headers too large, 431: "headers too large".
//
// transport.go, made by h1.Transport too:
//   - method a token, header and trailer fields valid:
//     TestH1RefusesWhatNetHTTPRefusesToSend;
//   - a URL with the host: TestH1RefusesOtherHosts;
//   - response headers, 1xx included, within 10 MiB: "headers too large";
//   - bytes on an idle connection close it: the corpus's leftover cases;
//   - 1xx skipped, a 101 ends the exchange: "100 Continue ...", "103 ...",
//     "unrequested 101" (a 502 in every set-up);
//   - Connection: close, HTTP/1.0 and bodies ended by closing end the
//     connection: "HTTP/1.0 answer", "body until close".
//
// Not made by h1.Transport: waiting up to a second for 100 Continue before
// sending a body (RFC 9110, section 10.1.1 lets a client send it at once;
// no framing depends on it).

// serverCase is a request, or several, as raw bytes from an app.
type serverCase struct {
	name string
	raw  string
	// want is the outcome's summary in every set-up, unless wantH1 is set:
	// then want is net/http's server's and wantH1 h1.Server's, and why says
	// why they differ.
	want, wantH1, why string
	// check looks at the outcome beyond the summary.
	check func(t *testing.T, o serverOutcome)
}

// serverOutcome is what the app and the upstream saw.
type serverOutcome struct {
	answers  []string // the status of each answer, 1xx included
	open     bool     // the connection served one more request after the case
	upstream []string // each request the upstream parsed: line, headers but X-Request-Id, body, trailers
}

func (o serverOutcome) summary() string {
	state := "closed"
	if o.open {
		state = "open"
	}
	return fmt.Sprintf("%s %s upstream=%d", strings.Join(o.answers, ","), state, len(o.upstream))
}

const (
	h11      = " HTTP/1.1\r\nHost: x\r\n"
	trailers = "Trailer: Authorization, X-Forwarded-For\r\n"
)

var serverCorpus = []serverCase{
	{name: "plain GET", raw: "GET /a" + h11 + "\r\n", want: "200 open upstream=1"},
	{name: "pipelined GETs", raw: "GET /a" + h11 + "\r\nGET /b" + h11 + "\r\n", want: "200,200 open upstream=2"},
	{name: "POST with Content-Length", raw: "POST /a" + h11 + "Content-Length: 5\r\n\r\nhello", want: "200 open upstream=1"},
	{name: "GET with a body, pipelined", raw: "GET /a" + h11 + "Content-Length: 5\r\n\r\nhelloGET /b" + h11 + "\r\n", want: "200,200 open upstream=2"},

	// Content-Length.
	{name: "duplicate equal Content-Length", raw: "POST /a" + h11 + "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", want: "200 open upstream=1"},
	{name: "conflicting Content-Length", raw: "POST /a" + h11 + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", want: "400 closed upstream=0"},
	{name: "Content-Length list", raw: "POST /a" + h11 + "Content-Length: 5, 5\r\n\r\nhello", want: "400 closed upstream=0"},
	{name: "signed Content-Length", raw: "POST /a" + h11 + "Content-Length: +5\r\n\r\nhello", want: "400 closed upstream=0"},
	{name: "negative Content-Length", raw: "POST /a" + h11 + "Content-Length: -1\r\n\r\n", want: "400 closed upstream=0"},
	{name: "Content-Length overflow", raw: "POST /a" + h11 + "Content-Length: 99999999999999999999\r\n\r\n", want: "400 closed upstream=0"},
	{name: "space before colon in Content-Length", raw: "POST /x" + h11 + "Content-Length : 35\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n", want: "400 closed upstream=0"},
	{name: "space before colon in Transfer-Encoding", raw: "POST /x" + h11 + "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", want: "400 closed upstream=0"},
	{name: "space inside a name", raw: "GET /a" + h11 + "X A: 1\r\n\r\n", want: "400 closed upstream=0"},
	{name: "quote in a name", raw: "GET /a" + h11 + "X\"A: 1\r\n\r\n", want: "400 closed upstream=0"},

	// Transfer-Encoding.
	{name: "chunked POST", raw: "POST /a" + h11 + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		want: "200 closed upstream=1", wantH1: "200 open upstream=1",
		why: "net/http's server drops a Content-Length beside Transfer-Encoding before the handler sees the request: behind it every chunked request closes its connection after the answer; h1.Server sees the header and closes only when there was one"},
	{name: "chunked with extension", raw: "POST /a" + h11 + "Transfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\n\r\n",
		want: "200 closed upstream=1", wantH1: "200 open upstream=1", why: "as chunked POST"},
	{name: "chunked in upper case", raw: "POST /a" + h11 + "Transfer-Encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		want: "200 closed upstream=1", wantH1: "200 open upstream=1", why: "as chunked POST"},
	{name: "Content-Length and Transfer-Encoding", raw: "POST /a" + h11 + "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled" + h11 + "\r\n",
		want: "200 closed upstream=1"},
	{name: "chunked, identity", raw: "POST /a" + h11 + "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", want: "501 closed upstream=0"},
	{name: "identity, chunked", raw: "POST /a" + h11 + "Transfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n", want: "501 closed upstream=0"},
	{name: "two Transfer-Encoding headers", raw: "POST /a" + h11 + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", want: "501 closed upstream=0"},
	{name: "gzip coding", raw: "POST /a" + h11 + "Transfer-Encoding: gzip\r\n\r\n", want: "501 closed upstream=0"},
	{name: "chunk size overflow", raw: "POST /a" + h11 + "Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nhello\r\n0\r\n\r\n", want: "400 closed upstream=1"},
	{name: "chunk size not hex", raw: "POST /a" + h11 + "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", want: "400 closed upstream=1"},
	{name: "chunk without its CRLF", raw: "POST /a" + h11 + "Transfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n", want: "400 closed upstream=1"},
	{name: "declared request trailers", raw: "POST /a" + h11 + "Transfer-Encoding: chunked\r\n" + trailers + "\r\n5\r\nhello\r\n0\r\nAuthorization: Bearer fake-app-token\r\nX-Forwarded-For: 10.9.9.9\r\n\r\n",
		want: "200 closed upstream=1", wantH1: "200 open upstream=1", why: "as chunked POST",
		check: func(t *testing.T, o serverOutcome) {
			for _, u := range o.upstream {
				if strings.Contains(u, "fake-app-token") || strings.Contains(u, "10.9.9.9") {
					t.Errorf("the app's trailers reached the upstream:\n%s", u)
				}
			}
		}},
	{name: "HTTP/1.0 with Transfer-Encoding", raw: "POST /a HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.0\r\n\r\n",
		want: "200 closed upstream=1", wantH1: "400 closed upstream=0",
		why: "net/http's server ignores Transfer-Encoding in HTTP/1.0 and drops it before the handler sees it: behind it the proxy can only close the connection after the answer; h1.Server refuses the faulty framing (RFC 9112, section 6.1)"},

	// Connection handling.
	{name: "HTTP/1.0", raw: "GET /a HTTP/1.0\r\n\r\n", want: "200 closed upstream=1"},
	{name: "HTTP/1.0 keep-alive", raw: "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		want: "200 closed upstream=1", wantH1: "200 open upstream=1", why: "as HTTP/1.0 with Transfer-Encoding"},
	{name: "Connection: close", raw: "GET /a" + h11 + "Connection: close\r\n\r\nGET /b" + h11 + "\r\n", want: "200 closed upstream=1"},
	{name: "stray CRLF after a POST body", raw: "POST /a" + h11 + "Content-Length: 5\r\n\r\nhello\r\nGET /b" + h11 + "\r\n", want: "200,200 open upstream=2"},
	{name: "stray CRLF after a PUT body", raw: "PUT /a" + h11 + "Content-Length: 5\r\n\r\nhello\r\nGET /b" + h11 + "\r\n", want: "200,400 closed upstream=1"},
	{name: "CRLF before the first request", raw: "\r\nGET /a" + h11 + "\r\n", want: "400 closed upstream=0"},

	// Host.
	{name: "no Host", raw: "GET /a HTTP/1.1\r\n\r\n", want: "400 closed upstream=0"},
	{name: "empty Host", raw: "GET /a HTTP/1.1\r\nHost:\r\n\r\n", want: "200 open upstream=1"},
	{name: "two Hosts", raw: "GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", want: "400 closed upstream=0"},
	{name: "malformed Host", raw: "GET /a HTTP/1.1\r\nHost: x/y\r\n\r\n", want: "400 closed upstream=0"},
	{name: "HTTP/1.0 without Host", raw: "GET /a HTTP/1.0\r\n\r\n", want: "200 closed upstream=1"},
	{name: "absolute form without Host", raw: "GET http://upstream.invalid/a HTTP/1.1\r\n\r\n", want: "400 closed upstream=0"},
	{name: "absolute form with malformed Host", raw: "GET http://upstream.invalid/a HTTP/1.1\r\nHost: a b\r\n\r\n", want: "400 closed upstream=0"},
	{name: "absolute form, other host", raw: "GET http://other.invalid/a HTTP/1.1\r\nHost: other.invalid\r\n\r\n",
		want: "403 closed upstream=0", wantH1: "403 open upstream=0",
		why: "net/http's server cannot set the refusal's reason phrase: it is written on the hijacked connection, which then closes"},

	// Header syntax.
	{name: "obs-fold", raw: "GET /a" + h11 + "X-Folded: a\r\n b\r\n\r\n", want: "200 open upstream=1"},
	{name: "bare LF", raw: "GET /a HTTP/1.1\nHost: x\nX-A: 1\n\n", want: "200 open upstream=1"},
	{name: "NUL in a value", raw: "GET /a" + h11 + "X-A: a\x00b\r\n\r\n", want: "400 closed upstream=0"},
	{name: "CR in a value", raw: "GET /a" + h11 + "X-A: a\rb\r\n\r\n", want: "400 closed upstream=0"},
	{name: "DEL in a value", raw: "GET /a" + h11 + "X-A: a\x7fb\r\n\r\n", want: "400 closed upstream=0"},
	{name: "tab in a name", raw: "GET /a" + h11 + "X\tA: 1\r\n\r\n", want: "400 closed upstream=0"},
	{name: "space in a name", raw: "GET /a" + h11 + "X A: 1\r\n\r\n", want: "400 closed upstream=0"},
	{name: "no colon", raw: "GET /a" + h11 + "X-A\r\n\r\n", want: "400 closed upstream=0"},
	{name: "HTTP/2.0 line", raw: "GET /a HTTP/2.0\r\nHost: x\r\n\r\n", want: "505 closed upstream=0"},
	{name: "HTTP/1.2", raw: "GET /a HTTP/1.2\r\nHost: x\r\n\r\n", want: "200 open upstream=1"},
	{name: "HTTP/2 preface", raw: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", want: "400 closed upstream=0", wantH1: "505 closed upstream=0",
		why: "net/http's server passes the preface of HTTP/2 to the handler (for h2c), which refuses a request for * that is not OPTIONS; h1.Server speaks HTTP/1.x only"},
	{name: "GET *", raw: "GET *" + h11 + "\r\n", want: "400 open upstream=0"},
	{name: "headers too large", raw: "GET /a" + h11 + "X-Big: " + strings.Repeat("a", 1<<20+8192) + "\r\n\r\n", want: "431 closed upstream=0"},
	{name: "lower-case method", raw: "get /a" + h11 + "\r\n", want: "200 open upstream=1"},

	// Expect.
	{name: "100-continue", raw: "POST /a" + h11 + "Expect: 100-continue\r\nContent-Length: 5\r\n\r\nhello", want: "100,200 open upstream=1"},
	{name: "100-continue without a body", raw: "GET /a" + h11 + "Expect: 100-continue\r\n\r\n", want: "200 open upstream=1"},
	{name: "empty Expect", raw: "POST /a" + h11 + "Expect:\r\nContent-Length: 5\r\n\r\nhello", want: "200 open upstream=1"},
	{name: "unknown Expect", raw: "POST /a" + h11 + "Expect: teapot\r\nContent-Length: 5\r\n\r\nhello", want: "417 closed upstream=0"},
	{name: "100-continue as second Expect", raw: "POST /a" + h11 + "Expect: teapot\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello", want: "417 closed upstream=0"},

	// Targets the proxy answers itself.
	{name: "OPTIONS *", raw: "OPTIONS *" + h11 + "\r\n", want: "200 open upstream=0"},
	{name: "OPTIONS * with a body", raw: "OPTIONS *" + h11 + "Content-Length: 5\r\n\r\nhelloGET /a" + h11 + "\r\n", want: "200,200 open upstream=1"},
	{name: "CONNECT to another host", raw: "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", want: "403 closed upstream=0"},
	{name: "OPTIONS * with Content-Length and Transfer-Encoding", raw: "OPTIONS *" + h11 + "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled" + h11 + "\r\n",
		want: "200 closed upstream=0"},

	// Tunnels: a refused CONNECT closes its connection, whatever the app
	// sent behind it; a CONNECT with a body opens no tunnel.
	{name: "request behind a refused CONNECT", raw: "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\nPOST /payments HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 0\r\n\r\n",
		want: "403 closed upstream=0"},
	{name: "request behind a CONNECT to the TLS port", raw: "CONNECT upstreamhost.invalid:443 HTTP/1.1\r\nHost: x\r\n\r\nPOST /payments HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 0\r\n\r\n",
		want: "405 closed upstream=0"},
	{name: "CONNECT with Content-Length", raw: "CONNECT upstream.invalid HTTP/1.1\r\nHost: upstream.invalid\r\nContent-Length: 37\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
		want: "400 closed upstream=0"},
	{name: "CONNECT with Transfer-Encoding", raw: "CONNECT upstream.invalid HTTP/1.1\r\nHost: upstream.invalid\r\nTransfer-Encoding: chunked\r\n\r\n25\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n\r\n0\r\n\r\n",
		want: "400 closed upstream=0"},

	// Requests the proxy answers itself close the connection as forwarded
	// ones do.
	{name: "token request with Content-Length and Transfer-Encoding", raw: "POST /auth/token" + h11 + "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled" + h11 + "\r\n",
		want: "200 closed upstream=0"},
	{name: "HTTP/1.0 token request with Transfer-Encoding", raw: "POST /auth/token HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.0\r\n\r\n",
		want: "200 closed upstream=0", wantH1: "400 closed upstream=0", why: "as HTTP/1.0 with Transfer-Encoding"},
}

// TestDifferentialServers runs the corpus against h1.Server and net/http's
// server, with the same transport behind them. The exchanges run all at
// once, each on a proxy of its own, and are compared afterwards.
func TestDifferentialServers(t *testing.T) {
	outcomes := make([][]*serverOutcome, len(serverCorpus))
	var wg sync.WaitGroup
	for i, c := range serverCorpus {
		for _, srv := range servers {
			run := prepareServerCase(t, c, srv.opt)
			outcomes[i] = append(outcomes[i], &run.o)
			wg.Go(run.exchange)
		}
	}
	wg.Wait()
	for i, c := range serverCorpus {
		t.Run(c.name, func(t *testing.T) {
			h1s, std := *outcomes[i][0], *outcomes[i][1] // the order of servers
			wantH1 := c.want
			if c.wantH1 != "" {
				wantH1 = c.wantH1
				if c.why == "" {
					t.Error("an intended difference without its reason")
				}
			}
			if got := std.summary(); got != c.want {
				t.Errorf("net/http's server: %s, want %s", got, c.want)
			}
			if got := h1s.summary(); got != wantH1 {
				t.Errorf("h1.Server: %s, want %s", got, wantH1)
			}
			if c.wantH1 == "" && !slices.Equal(h1s.upstream, std.upstream) {
				t.Errorf("the upstream received\n%q\nbehind h1.Server, and\n%q\nbehind net/http's server", h1s.upstream, std.upstream)
			}
			if c.check != nil {
				c.check(t, h1s)
				c.check(t, std)
			}
		})
	}
}

// serverRun is one case on one proxy; exchange fills o.
type serverRun struct {
	o        serverOutcome
	exchange func()
}

func prepareServerCase(t *testing.T, c serverCase, setup envOption) *serverRun {
	e := newEnv(t, false, setup)
	run := &serverRun{}
	var mu sync.Mutex
	e.setAPI(func(w http.ResponseWriter, r *http.Request, s seen) {
		if r.URL.Path == "/api/v3/__probe" {
			io.WriteString(w, "probe")
			return
		}
		mu.Lock()
		run.o.upstream = append(run.o.upstream, upstreamRecord(r, s.Body))
		mu.Unlock()
		io.WriteString(w, "ok")
	})
	// The absolute-form cases name this host.
	raw := strings.ReplaceAll(c.raw, "upstream.invalid", strings.TrimPrefix(e.upstream.URL, "http://"))
	raw = strings.ReplaceAll(raw, "upstreamhost.invalid", "127.0.0.1")
	run.exchange = func() {
		answers, open := rawAnswers(strings.TrimPrefix(e.proxy.URL, "http://"), raw)
		mu.Lock()
		defer mu.Unlock()
		run.o.answers, run.o.open = answers, open
	}
	return run
}

// upstreamRecord is a request as the upstream parsed it, headers sorted.
func upstreamRecord(r *http.Request, body string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s\n", r.Method, r.RequestURI, r.Proto)
	writeSorted(&b, r.Header)
	fmt.Fprintf(&b, "\n%s\n", body)
	writeSorted(&b, r.Trailer)
	return b.String()
}

func writeSorted(b *strings.Builder, h http.Header) {
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range h {
			if k != "X-Request-Id" && !yield(k) {
				return
			}
		}
	}) {
		fmt.Fprintf(b, "%s: %q\n", k, h[k])
	}
}

// probe is a request sent once the case's answers have stopped coming:
// answered, it shows that the connection stayed open.
const probe = "GET /__probe HTTP/1.1\r\nHost: x\r\n\r\n"

// rawAnswers sends raw on a new connection and reads the answers. When
// none comes for a moment and the connection is still open, it sends the
// probe: answers in order tell a late answer of the case from the
// probe's, so the moment only decides when the probe goes, not the
// outcome.
func rawAnswers(addr, raw string) (answers []string, open bool) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return []string{"dial: " + err.Error()}, false
	}
	defer c.Close()
	if _, err := io.WriteString(c, raw); err != nil {
		return []string{"write: " + err.Error()}, false
	}
	br := bufio.NewReader(c)
	probed := false
	for {
		if !probed {
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			_, err := br.Peek(1)
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				probed = true
				if _, err := io.WriteString(c, probe); err != nil {
					return answers, false
				}
				continue
			}
			if err != nil {
				return answers, false // EOF, or a reset: closed
			}
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				answers = append(answers, "timeout")
			}
			return answers, false
		}
		// A read error is not counted: net/http's server closes at once
		// after a 400, and a reset may cut the body it ends by closing.
		body, _ := io.ReadAll(resp.Body)
		if probed && resp.StatusCode == http.StatusOK && string(body) == "probe" {
			return answers, true
		}
		answers = append(answers, strconv.Itoa(resp.StatusCode))
	}
}

// transportCase is an upstream's answer to GET (or method) /lie, after
// which the app asks for /a and /b: each must get its own answer.
type transportCase struct {
	name   string
	method string   // of the request for /lie; GET when empty
	answer []string // written at once, one write each
	// later is written once the app has the answer to /lie: bytes that
	// arrive while the connection is idle.
	later string
	// hangUp closes the connection after the answer (and later).
	hangUp bool
	// leftover says bytes follow the answer: the connection must close.
	leftover bool
	tls      bool
	// want is what the app gets for /lie, /a and /b.
	want string
}

const smuggled = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED"

var transportCorpus = []transportCase{
	{name: "honest", answer: []string{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"}, want: "200 hello|200 /api/v3/a|200 /api/v3/b"},
	{name: "body longer than Content-Length", answer: []string{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" + smuggled}, leftover: true,
		want: "200 hello|200 /api/v3/a|200 /api/v3/b"},
	{name: "body longer than Content-Length, later", answer: []string{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"}, later: smuggled, leftover: true,
		want: "200 hello|200 /api/v3/a|200 /api/v3/b"},
	{name: "bytes after the last chunk", answer: []string{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + smuggled}, leftover: true,
		want: "200 hello|200 /api/v3/a|200 /api/v3/b"},
	{name: "body after an answer to HEAD", method: "HEAD", answer: []string{"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n" + "SMUGGLED"}, leftover: true,
		want: "200 |200 /api/v3/a|200 /api/v3/b"},
	{name: "answer after an answer to HEAD", method: "HEAD", answer: []string{"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n" + smuggled}, leftover: true,
		want: "200 |200 /api/v3/a|200 /api/v3/b"},
	{name: "body after a 204", answer: []string{"HTTP/1.1 204 No Content\r\nContent-Length: 8\r\n\r\n" + "SMUGGLED"}, leftover: true,
		want: "204 |200 /api/v3/a|200 /api/v3/b"},
	{name: "body after a 304", answer: []string{"HTTP/1.1 304 Not Modified\r\n\r\n" + smuggled}, leftover: true,
		want: "304 |200 /api/v3/a|200 /api/v3/b"},
	{name: "a byte while idle", answer: []string{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"}, later: "\r\n", leftover: true,
		want: "200 hello|200 /api/v3/a|200 /api/v3/b"},
	{name: "TLS, answer in the record of the body", tls: true,
		answer:   []string{"HTTP/1.1 200 OK\r\nContent-Length: 8192\r\n\r\n", strings.Repeat("x", 8192) + smuggled},
		leftover: true, want: "200 " + strings.Repeat("x", 8192) + "|200 /api/v3/a|200 /api/v3/b"},
	{name: "unrequested 101", answer: []string{"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n" + smuggled}, leftover: true,
		want: "502 upstream_unreachable|200 /api/v3/a|200 /api/v3/b"},
	{name: "100 Continue, then the answer", answer: []string{"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"},
		want: "200 hello|200 /api/v3/a|200 /api/v3/b"},
	{name: "103 Early Hints, then the answer", answer: []string{"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"},
		want: "200 hello|200 /api/v3/a|200 /api/v3/b"},
	{name: "conflicting Content-Length", answer: []string{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"}, leftover: true,
		want: "502 upstream_unreachable|200 /api/v3/a|200 /api/v3/b"},
	{name: "Content-Length and chunked", answer: []string{"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		want: "200 hello|200 /api/v3/a|200 /api/v3/b"},
	{name: "chunk size overflow", answer: []string{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nhello\r\n0\r\n\r\n"}, leftover: true,
		want: "200 !|200 /api/v3/a|200 /api/v3/b"},
	{name: "obs-fold", answer: []string{"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 5\r\n\r\nhello"},
		want: "200 hello|200 /api/v3/a|200 /api/v3/b"},
	{name: "bare LF", answer: []string{"HTTP/1.1 200 OK\nContent-Length: 5\n\nhello"},
		want: "200 hello|200 /api/v3/a|200 /api/v3/b"},
	{name: "NUL in a value", answer: []string{"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 5\r\n\r\nhello"}, leftover: true,
		want: "502 upstream_unreachable|200 /api/v3/a|200 /api/v3/b"},
	{name: "HTTP/1.0 answer", answer: []string{"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello"}, hangUp: true,
		want: "200 hello|200 /api/v3/a|200 /api/v3/b"},
	{name: "HTTP/1.0 keep-alive answer", answer: []string{"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello"},
		want: "200 hello|200 /api/v3/a|200 /api/v3/b"},
	{name: "body until close", answer: []string{"HTTP/1.1 200 OK\r\n\r\nhello"}, hangUp: true,
		want: "200 hello|200 /api/v3/a|200 /api/v3/b"},
	{name: "closed mid-body", answer: []string{"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel"}, hangUp: true,
		want: "200 hel!|200 /api/v3/a|200 /api/v3/b"},
	{name: "closed mid-headers", answer: []string{"HTTP/1.1 200 OK\r\nContent-Le"}, hangUp: true,
		want: "502 upstream_unreachable|200 /api/v3/a|200 /api/v3/b"},
	{name: "headers too large", answer: []string{"HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", 10<<20) + "\r\n\r\n"}, leftover: true,
		want: "502 upstream_unreachable|200 /api/v3/a|200 /api/v3/b"},
	{name: "closed before answering", hangUp: true,
		want: "502 upstream_unreachable|200 /api/v3/a|200 /api/v3/b"},
}

// TestDifferentialTransports runs the corpus of lying answers through
// h1.Transport and net/http's transport, behind the same server, all at
// once.
func TestDifferentialTransports(t *testing.T) {
	outcomes := make([][2]string, len(transportCorpus))
	var wg sync.WaitGroup
	for i, c := range transportCorpus {
		for k, useH1 := range []bool{true, false} {
			run := prepareTransportCase(t, c, useH1)
			wg.Go(func() { outcomes[i][k] = run() })
		}
	}
	wg.Wait()
	for i, c := range transportCorpus {
		t.Run(c.name, func(t *testing.T) {
			want := c.want + " " + transportTail(c)
			for k, name := range []string{"h1.Transport", "net/http's transport"} {
				if got := outcomes[i][k]; got != want {
					t.Errorf("%s:\n got %q\nwant %q", name, got, want)
				}
			}
		})
	}
}

// transportTail is what the upstream must have seen: the three requests,
// on a new connection after any that had to close.
func transportTail(c transportCase) string {
	conns := 1
	if c.leftover || c.hangUp {
		conns = 2
	}
	method := c.method
	if method == "" {
		method = "GET"
	}
	return fmt.Sprintf("conns=%d [%s /api/v3/lie GET /api/v3/a GET /api/v3/b]", conns, method)
}

type fakeTokens struct{}

func (fakeTokens) Token(context.Context) (string, error) { return "fake-token", nil }
func (fakeTokens) Invalidate(string) bool                { return false }

// lyingUpstream answers /lie with its case's bytes and anything else
// honestly, with the path as the body.
type lyingUpstream struct {
	c        transportCase
	url      string
	roots    *x509.CertPool
	answered chan struct{} // /lie answered; later is waiting for release
	release  chan struct{}
	wrote    chan struct{} // later written
	closed   chan struct{} // a connection was closed by the proxy or the upstream
	mu       sync.Mutex
	got      []string
	conns    int // that carried a request
}

func startLyingUpstream(t *testing.T, c transportCase) *lyingUpstream {
	t.Helper()
	u := &lyingUpstream{c: c, answered: make(chan struct{}), release: make(chan struct{}), wrote: make(chan struct{}), closed: make(chan struct{}, 8)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.url = "http://" + ln.Addr().String()
	if c.tls {
		var cfg *tls.Config
		cfg, u.roots = httptestTLS()
		ln = tls.NewListener(ln, cfg)
		u.url = "https://" + strings.TrimPrefix(u.url, "http://")
	}
	serveEach(t, ln, u.serve)
	return u
}

func (u *lyingUpstream) serve(conn net.Conn) {
	defer func() {
		conn.Close()
		select {
		case u.closed <- struct{}{}:
		default: // nobody waits for more than one
		}
	}()
	br := bufio.NewReader(conn)
	for n := 0; ; n++ {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		u.mu.Lock()
		u.got = append(u.got, req.Method+" "+req.URL.Path)
		if n == 0 {
			u.conns++ // net/http's transport may dial one it does not use
		}
		u.mu.Unlock()
		if !strings.HasSuffix(req.URL.Path, "/lie") {
			fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(req.URL.Path), req.URL.Path)
			continue
		}
		for _, part := range u.c.answer {
			io.WriteString(conn, part)
		}
		if u.c.later != "" {
			close(u.answered)
			<-u.release
			io.WriteString(conn, u.c.later)
			close(u.wrote)
		}
		if u.c.hangUp {
			return
		}
	}
}

// prepareTransportCase starts the upstream and a proxy with h1.Transport
// or net/http's; the function it returns asks for /lie, /a and /b and
// returns what the app got and what the upstream saw.
func prepareTransportCase(t *testing.T, c transportCase, useH1 bool) func() string {
	up := startLyingUpstream(t, c)
	upURL, _ := url.Parse(up.url + "/api/v3")
	var tr http.RoundTripper
	if useH1 {
		h1t, err := h1.NewTransport(upURL, h1.TransportConfig{ResponseHeaderTimeout: 10 * time.Second, RootCAs: up.roots})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h1t.CloseIdleConnections)
		tr = h1t
	} else {
		std := standardTransport(up.roots, 10*time.Second)
		t.Cleanup(std.CloseIdleConnections)
		tr = std
	}
	// Retries off (the zero value): each lying answer is seen once, as it
	// would reach the app after the last try; retry_test.go tests retries.
	h, err := proxy.New(proxy.Config{Upstream: upURL, Tokens: fakeTokens{}, Transport: tr, RecycleRequests: useH1,
		UpstreamTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	p := serve(t, h, false, useH1)
	app := &http.Transport{}
	t.Cleanup(app.CloseIdleConnections)
	client := &http.Client{Transport: app}
	ctx := t.Context()

	return func() string {
		method := c.method
		if method == "" {
			method = http.MethodGet
		}
		answers := []string{appAnswer(ctx, client, method, p.URL+"/lie")}
		if c.later != "" {
			close(up.release)
			if !waitFor(up.wrote) {
				return "the upstream did not write its late bytes"
			}
		}
		// net/http's transport finds bytes after an answer in its
		// connection's read loop, on a goroutine of its own: until then,
		// net/http itself would read them as the next answer. Waiting for
		// the connection to close keeps this test about the proxy.
		// h1.Transport checks at the next use, which for bytes that came
		// late is the next request.
		if c.leftover && !c.hangUp && (!useH1 || c.later == "") && !waitFor(up.closed) {
			return "the connection with bytes after the answer was not closed"
		}
		for _, path := range []string{"/a", "/b"} {
			answers = append(answers, appAnswer(ctx, client, http.MethodGet, p.URL+path))
		}
		up.mu.Lock()
		defer up.mu.Unlock()
		return fmt.Sprintf("%s conns=%d %v", strings.Join(answers, "|"), up.conns, up.got)
	}
}

func waitFor(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	case <-time.After(10 * time.Second):
		return false
	}
}

// appAnswer is an answer as the app sees it: the status and the body, or
// for a problem its code; "!" marks a body cut short.
func appAnswer(ctx context.Context, client *http.Client, method, target string) string {
	req, err := http.NewRequestWithContext(ctx, method, target, nil)
	if err != nil {
		return "error: " + err.Error()
	}
	resp, err := client.Do(req)
	if err != nil {
		return "error"
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	s := string(body)
	if resp.Header.Get("Content-Type") == "application/problem+json" {
		if _, rest, ok := strings.Cut(s, `"code":"`); ok {
			s, _, _ = strings.Cut(rest, `"`)
		}
	}
	if err != nil {
		s += "!"
	}
	return fmt.Sprintf("%d %s", resp.StatusCode, s)
}

// TestDifferentialContentType holds the one intended difference outside
// framing: an answer without Content-Type is passed on without one by
// h1.Server (a proxy passes the answer on as it came), where net/http's
// server guesses one from the body.
func TestDifferentialContentType(t *testing.T) {
	want := map[string]string{"h1server": "", "netserver": "text/html; charset=utf-8"}
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			e := newEnv(t, false, srv.opt)
			e.setAPI(func(w http.ResponseWriter, r *http.Request, s seen) {
				w.Header()["Content-Type"] = nil // the upstream's server must not guess either
				io.WriteString(w, "<html>hello</html>")
			})
			resp, _ := do(t, http.DefaultClient, "GET", e.proxy.URL+"/a", nil)
			if got := resp.Header.Get("Content-Type"); got != want[srv.name] {
				t.Errorf("Content-Type = %q, want %q", got, want[srv.name])
			}
		})
	}
}
