package proxy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/dinie/dinie-auth-proxy/proxy"
	"github.com/dinie/dinie-auth-proxy/tokencache"
)

// The handler's own cost per request: ServeHTTP called directly, against an
// in-process upstream on loopback, so no client sits in the measurement.
func BenchmarkHandler(b *testing.B) {
	for _, tr := range transports {
		b.Run(tr.name, func(b *testing.B) {
			e := newEnv(b, false, tr.opt)
			e.setAPI(func(w http.ResponseWriter, r *http.Request, s seen) { io.WriteString(w, `{"id":"cus_fake"}`) })
			benchmarkRequests(b, e, "GET", "")
		})
	}
}

// BenchmarkReplay401 measures the slow path: the fake upstream accepts each
// token once, so every request meets a 401, fetches a new token and is
// replayed, body included. Each 401 moves the token cache's clock 10 s on:
// a 401 may cause one fetch per 10 s.
func BenchmarkReplay401(b *testing.B) {
	clock := &tokenClock{}
	e := newEnv(b, false, withTokenClock(clock))
	used := map[string]bool{}
	e.setAPI(func(w http.ResponseWriter, r *http.Request, s seen) {
		if used[s.Auth] {
			clock.advance(10 * time.Second)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		used[s.Auth] = true
		io.WriteString(w, "ok")
	})
	benchmarkRequests(b, e, "POST", `{"amount":1000}`)
}

// BenchmarkPost64K is the bench's 64 KiB upload (bench/README.md) through
// the handler: each body is kept for a replay (upstream.max_replay_bytes)
// while it streams upstream, so its bytes per op show what that copy
// costs.
func BenchmarkPost64K(b *testing.B) {
	body := strings.Repeat("x", 64<<10)
	for _, tr := range transports {
		b.Run(tr.name, func(b *testing.B) {
			e := newEnv(b, false, tr.opt, func(e *env, _ *proxy.Config, _ *tokencache.Config) { e.discardBodies = true })
			benchmarkRequests(b, e, "POST", body)
		})
	}
}

func benchmarkRequests(b *testing.B, e *env, method, body string) {
	b.ReportAllocs()
	for b.Loop() {
		var r io.Reader
		if body != "" {
			r = strings.NewReader(body)
		}
		req := httptest.NewRequest(method, "/customers", r)
		w := httptest.NewRecorder()
		e.handler.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("status %d", w.Code)
		}
	}
}

// BenchmarkHandlerParallel is the same under 16 concurrent requests, where
// the transports' goroutine hand-offs show.
func BenchmarkHandlerParallel(b *testing.B) {
	for _, tr := range transports {
		b.Run(tr.name, func(b *testing.B) {
			e := newEnv(b, false, tr.opt)
			e.setAPI(func(w http.ResponseWriter, r *http.Request, s seen) { io.WriteString(w, `{"id":"cus_fake"}`) })
			b.ReportAllocs()
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req := httptest.NewRequest("GET", "/customers", nil)
					w := httptest.NewRecorder()
					e.handler.ServeHTTP(w, req)
					if w.Code != http.StatusOK {
						b.Errorf("status %d", w.Code)
						return
					}
				}
			})
		})
	}
}

// BenchmarkServe is the whole hot path as an app sees it: GETs written on
// one kept-alive connection to the proxy, behind each server, to an
// in-process upstream. It shows what the server costs per request, which
// BenchmarkHandler leaves out.
func BenchmarkServe(b *testing.B) {
	for _, srv := range servers {
		b.Run(srv.name, func(b *testing.B) {
			e := newEnv(b, false, srv.opt)
			e.setAPI(func(w http.ResponseWriter, r *http.Request, s seen) { io.WriteString(w, `{"id":"cus_fake"}`) })
			c, err := net.Dial("tcp", strings.TrimPrefix(e.proxy.URL, "http://"))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReader(c)
			get := &http.Request{Method: "GET"}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := io.WriteString(c, "GET /customers HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
					b.Fatal(err)
				}
				resp, err := http.ReadResponse(br, get)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	}
}
