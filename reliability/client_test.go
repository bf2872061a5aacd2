//go:build reliability

package reliability

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// rawExchange writes req on a fresh connection and reads one response;
// the whole exchange is bounded by 10 s.
func rawExchange(addr, req string) (*http.Response, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	go io.WriteString(conn, req) // a big request may not be read whole
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, nil
}

// Clients that misbehave get an answer or a closed connection, never a
// hang, and leave nothing behind in the proxy; others are served all along.
func TestClientMisbehaviour(t *testing.T) {
	t.Parallel()
	d := newFakeDinie(t, 3600)
	p := startProxy(t, d.env())
	baseline := p.readyBaseline(t)
	ctx := context.Background()
	var figMu sync.Mutex
	figures := map[string]string{}
	figure := func(k string, v any) {
		figMu.Lock()
		figures[k] = fmt.Sprint(v)
		figMu.Unlock()
	}

	// The cases run at once, from goroutines: t.Parallel would be held to
	// -parallel (GOMAXPROCS) at a time, and the slow-loris case is 10 s of
	// waiting that the load runs alongside.
	t.Run("group", func(t *testing.T) {
		var wg sync.WaitGroup
		defer wg.Wait()
		run := func(name string, f func(t *testing.T)) { wg.Go(func() { t.Run(name, f) }) }
		run("slow-loris headers", func(t *testing.T) {
			// 50 connections send one header line a second; the proxy's
			// 10 s ReadHeaderTimeout must close every one of them.
			const conns = 50
			var wg sync.WaitGroup
			closed := make(chan time.Duration, conns)
			start := time.Now()
			for i := range conns {
				wg.Go(func() {
					conn, err := net.Dial("tcp", p.proxyAddr)
					if err != nil {
						t.Error(err)
						return
					}
					defer conn.Close()
					fmt.Fprintf(conn, "GET /ok HTTP/1.1\r\nHost: loris-%d\r\n", i)
					buf := make([]byte, 512)
					for time.Since(start) < 20*time.Second {
						conn.SetReadDeadline(time.Now().Add(time.Second))
						_, err := conn.Read(buf)
						var ne net.Error
						if errors.As(err, &ne) && ne.Timeout() {
							if _, err := io.WriteString(conn, "X-Slow: a\r\n"); err == nil {
								continue
							}
						}
						closed <- time.Since(start)
						return
					}
				})
			}
			wg.Wait()
			close(closed)
			var n int
			var last time.Duration
			for d := range closed {
				n++
				last = max(last, d)
			}
			figure("slow-loris", fmt.Sprintf("%d/%d connections closed by the proxy, the last after %v", n, conns, last.Round(100*time.Millisecond)))
			if n != conns {
				t.Errorf("%d of %d slow-loris connections still open after 20 s", conns-n, conns)
			}
		})

		run("oversized headers", func(t *testing.T) {
			big := "GET /ok HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 100<<10) + "\r\n\r\n"
			resp, err := rawExchange(p.proxyAddr, big)
			if err != nil || resp.StatusCode != 431 {
				t.Errorf("100 KiB of headers: %v %v, want 431", statusOf(resp), err)
			}
			// Just under the 64 KiB limit is served.
			r := p.do(t, ctx, "GET", "/ok", nil, "X-Big", strings.Repeat("a", 60<<10))
			if err := expectOK(r); err != nil {
				t.Errorf("60 KiB of headers: %v", err)
			}
			figure("oversized headers", fmt.Sprintf("100 KiB -> %v, 60 KiB -> %d", statusOf(resp), r.status))
		})

		run("malformed requests", func(t *testing.T) {
			upstreamAddr := strings.TrimPrefix(d.api.URL, "https://")
			cases := []struct {
				name, req string
				want      int
			}{
				{"garbage request line", "GARBAGE\r\n\r\n", 400},
				{"unknown HTTP version", "GET /ok HTTP/9.9\r\nHost: x\r\n\r\n", 505},
				{"HTTP/1.1 without Host", "GET /ok HTTP/1.1\r\n\r\n", 400},
				{"two Host headers", "GET /ok HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
				{"header without a colon", "GET /ok HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400},
				{"control bytes", "\x00\x01\x02\x03\r\n\r\n", 400},
				{"TLS to the plain port", "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", 400},
				{"negative Content-Length", "POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400},
				{"two Content-Lengths", "POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400},
				{"unknown transfer coding", "POST /ok HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501},
				{"another host in absolute form", "GET http://evil.example/steal HTTP/1.1\r\nHost: evil.example\r\n\r\n", 403},
				{"CONNECT to the upstream's TLS port", "CONNECT " + upstreamAddr + " HTTP/1.1\r\nHost: " + upstreamAddr + "\r\n\r\n", 405},
				{"CONNECT to another host", "CONNECT api.dinie.com.br:443 HTTP/1.1\r\nHost: api.dinie.com.br:443\r\n\r\n", 403},
			}
			got := map[string]string{}
			for _, c := range cases {
				resp, err := rawExchange(p.proxyAddr, c.req)
				got[c.name] = statusOf(resp)
				if err != nil || resp.StatusCode != c.want {
					t.Errorf("%s: %v %v, want %d", c.name, statusOf(resp), err, c.want)
				}
			}
			figure("malformed", got)
		})

		run("bodies that lie about their length", func(t *testing.T) {
			got := map[string]string{}
			// Shorter than announced, then the client closes its side.
			resp, err := rawExchangeHalfClose(p.proxyAddr, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nX-Expect-Length: 1000\r\n\r\n0123456789")
			got["short, then half-close"] = statusOrErr(resp, err)
			// Shorter than announced, then the client stalls 2 s and leaves.
			got["short, then stall"] = stallThenClose(p.proxyAddr, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nX-Expect-Length: 1000\r\n\r\n0123456789", 2*time.Second)
			// Longer than announced: the rest is a malformed next request.
			conn, err := net.Dial("tcp", p.proxyAddr)
			if err != nil {
				t.Fatal(err)
			}
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(conn, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-Expect-Length: 5\r\n\r\nhello, and then not a request\r\n\r\n")
			br := bufio.NewReader(conn)
			first, err1 := http.ReadResponse(br, nil)
			var body []byte
			if err1 == nil {
				body, _ = io.ReadAll(first.Body)
			}
			second, err2 := http.ReadResponse(br, nil)
			conn.Close()
			got["longer than announced"] = fmt.Sprintf("%s %q, then %s", statusOrErr(first, err1), body, statusOrErr(second, err2))
			if err1 != nil || first.StatusCode != 200 || string(body) != "5" || err2 != nil || second.StatusCode != 400 {
				t.Errorf("a body longer than its Content-Length: %s", got["longer than announced"])
			}
			// A chunked body with a broken chunk size.
			resp, err = rawExchange(p.proxyAddr, "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n")
			got["broken chunk"] = statusOrErr(resp, err)
			figure("lying bodies", got)
			// The app's broken body is its own fault, never the upstream's.
			if err != nil || resp.StatusCode != 400 {
				t.Errorf("broken chunked body: %s, want 400", got["broken chunk"])
			}
		})

		run("disconnect mid-request", func(t *testing.T) {
			var wg sync.WaitGroup
			for range 20 {
				wg.Go(func() {
					conn, err := net.Dial("tcp", p.proxyAddr)
					if err != nil {
						t.Error(err)
						return
					}
					fmt.Fprintf(conn, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nX-Expect-Length: %d\r\n\r\n", 10<<20, 10<<20)
					conn.Write(make([]byte, 1<<20))
					conn.Close()
				})
			}
			wg.Wait()
		})

		run("disconnect mid-response", func(t *testing.T) {
			var wg sync.WaitGroup
			for i := range 20 {
				wg.Go(func() {
					path := fmt.Sprintf("/download?n=%d", 50<<20)
					if i%2 == 1 {
						path = "/drip?n=1000&every=10ms"
					}
					ctx, cancel := context.WithCancel(context.Background())
					defer cancel()
					req, _ := http.NewRequestWithContext(ctx, "GET", p.proxyURL+path, nil)
					resp, err := p.client.Do(req)
					if err != nil {
						t.Error(err)
						return
					}
					io.CopyN(io.Discard, resp.Body, 3)
					cancel()
					resp.Body.Close()
				})
			}
			wg.Wait()
		})

		run("others keep being served", func(t *testing.T) {
			// As long as the slow-loris attack lasts.
			stats := runLoad(4, 1_000_000, 12*time.Second, p.okRequest(t))
			figure("others", stats)
			if stats.failures.Load() > 0 {
				t.Errorf("well-behaved clients failed: %v", stats)
			}
		})
	})

	after := p.settleGoroutines(t, baseline, fixed(5))
	waitZero(t, "fake API handlers still running (upstream requests the proxy did not end)", d.apiActive.Load)
	if n := d.truncatedAccepted.Load(); n > 0 {
		t.Errorf("%d truncated request bodies reached the API as if complete", n)
	}
	if n := metric(p.scrape(t), "dinie_proxy_requests_in_flight"); n != 0 {
		t.Errorf("%v requests still in flight", n)
	}
	if status, _ := p.adminGet("/healthz"); status != 200 {
		t.Errorf("healthz %d", status)
	}
	if err := expectOK(p.do(t, ctx, "GET", "/ok", nil)); err != nil {
		t.Errorf("after the abuse: %v", err)
	}
	t.Logf("figures: %v; upstream saw %d broken uploads, %d truncated bodies accepted; goroutines %d before, %d after",
		figures, d.uploadErrors.Load(), d.truncatedAccepted.Load(), baseline, after)
}

func statusOf(resp *http.Response) string {
	if resp == nil {
		return "no response"
	}
	return strconv.Itoa(resp.StatusCode)
}

func statusOrErr(resp *http.Response, err error) string {
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return "closed"
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return "HUNG"
		}
		return "error"
	}
	return statusOf(resp)
}

// rawExchangeHalfClose writes req, closes the writing side, and reads one
// response within 10 s.
func rawExchangeHalfClose(addr, req string) (*http.Response, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, req)
	conn.(*net.TCPConn).CloseWrite()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return resp, err
}

// stallThenClose writes req, waits, and leaves without reading.
func stallThenClose(addr, req string, stall time.Duration) string {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return "error"
	}
	io.WriteString(conn, req)
	time.Sleep(stall)
	conn.Close()
	return "left after " + stall.String()
}
