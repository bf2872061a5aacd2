//go:build reliability

package reliability

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// deployMemoryLimit reads the sidecar's memory limit from the manifest the
// project ships, so that the test holds the proxy to the number users run.
func deployMemoryLimit(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("../deploy/components/sidecar/sidecar.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The sidecar is the first container of the file, its limits the
	// first "limits:" block.
	m := regexp.MustCompile(`(?s)limits:\s*\n(?:\s+cpu:[^\n]*\n)?\s+memory:\s*(\d+)Mi`).FindSubmatch(b)
	if m == nil {
		t.Fatal("no memory limit in deploy/components/sidecar/sidecar.yaml")
	}
	n, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return n << 20
}

// raiseFileLimit lets this process hold thousands of connections at once.
func raiseFileLimit(t *testing.T, need uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= need {
		return
	}
	old := lim
	lim.Cur = min(need, lim.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur < need {
		t.Skipf("cannot raise the file descriptor limit to %d (hard limit %d): %v", need, lim.Max, err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

// burstStats counts the answers of one burst.
type burstStats struct {
	ok, overloaded, failed atomic.Int64
	mu                     sync.Mutex
	samples                []string
}

func (s *burstStats) fail(format string, args ...any) {
	s.failed.Add(1)
	s.mu.Lock()
	if len(s.samples) < 5 {
		s.samples = append(s.samples, fmt.Sprintf(format, args...))
	}
	s.mu.Unlock()
}

// burst sends n requests at once, each on a connection of its own, in raw
// HTTP/1.1: one goroutine per request, nothing pooled, and any reset or
// cut answer is seen as it is. want is the body of a served request.
func burst(t *testing.T, addr string, n int, method, path string, body []byte, want string) *burstStats {
	t.Helper()
	s := &burstStats{}
	head := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", method, path, addr)
	if body != nil {
		head += fmt.Sprintf("Content-Type: application/octet-stream\r\nContent-Length: %d\r\n", len(body))
	}
	head += "\r\n"
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			<-start
			conn, err := net.DialTimeout("tcp", addr, 30*time.Second)
			if err != nil {
				s.fail("dial: %v", err)
				return
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(40 * time.Second))
			if _, err := io.MultiReader(bytes.NewReader([]byte(head)), bytes.NewReader(body)).(io.WriterTo).WriteTo(conn); err != nil {
				s.fail("write: %v", err)
				return
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				s.fail("read the answer: %v", err)
				return
			}
			b, err := io.ReadAll(resp.Body)
			r := result{status: resp.StatusCode, body: b, ctype: resp.Header.Get("Content-Type"), err: err}
			switch {
			case r.err != nil:
				s.fail("read the body: %v", r.err)
			case r.status == 200 && string(b) == want:
				s.ok.Add(1)
			case r.status == 503:
				if p, ok := r.problem(); ok && p.Code == "overloaded" && resp.Header.Get("Retry-After") == "1" {
					s.overloaded.Add(1)
					return
				}
				s.fail("503 that is not overloaded")
			default:
				p, _ := r.problem()
				s.fail("status %d %s %s", r.status, p.Code, p.Detail)
			}
		})
	}
	close(start)
	wg.Wait()
	return s
}

// TestBurstsStayWithinTheDeployMemoryLimit drives the real binary, with
// GOMEMLIMIT at 90% of the manifest's memory limit, in front of a Dinie
// that takes 2 s to answer, with bursts far beyond limits.max_in_flight:
// every request gets its answer or a fast 503 overloaded, and peak RSS
// stays under the manifest's limit (docs/development.md, "Reliability").
func TestBurstsStayWithinTheDeployMemoryLimit(t *testing.T) {
	limit := deployMemoryLimit(t)
	raiseFileLimit(t, 16384)
	d := newFakeDinie(t, 3600)
	p := startProxy(t, d.env(
		"GOMEMLIMIT", strconv.FormatInt(limit*9/10, 10),
		"DINIE_PROXY_LOG_LEVEL", "info",
	))
	p.waitReady(t, 10*time.Second)
	if err := expectOK(p.do(t, t.Context(), "GET", "/ok", nil)); err != nil {
		t.Fatal(err)
	}
	p.client.CloseIdleConnections()

	phases := []struct {
		name   string
		n      int
		method string
		path   string
		size   int
	}{
		{"GET", 5000, "GET", "/slow?ms=2000", 0},
		{"64 KiB POST", 2000, "POST", "/slow-upload?ms=2000", 64 << 10},
		{"1 MiB POST", 200, "POST", "/slow-upload?ms=2000", 1 << 20},
	}
	for _, ph := range phases {
		var body []byte
		want := "ok"
		if ph.size > 0 {
			body = bytes.Repeat([]byte("b"), ph.size)
			want = strconv.Itoa(ph.size)
		}
		start := time.Now()
		s := burst(t, p.proxyAddr, ph.n, ph.method, ph.path, body, want)
		_, hwm := p.rss(t)
		t.Logf("%d concurrent %s: %d served, %d overloaded, %d failed in %v; peak RSS so far %d MiB",
			ph.n, ph.name, s.ok.Load(), s.overloaded.Load(), s.failed.Load(), time.Since(start).Round(time.Millisecond), hwm>>10)
		if s.failed.Load() > 0 {
			t.Errorf("%s: %d requests got neither their answer nor 503 overloaded: %v", ph.name, s.failed.Load(), s.samples)
		}
		if s.ok.Load() == 0 {
			t.Errorf("%s: no request served", ph.name)
		}
		select {
		case <-p.exited:
			t.Fatalf("the proxy died in the %s burst: %v", ph.name, p.exitErr)
		default:
		}
	}
	if err := expectOK(p.do(t, t.Context(), "GET", "/ok", nil)); err != nil {
		t.Errorf("right after the bursts: %v", err)
	}
	_, hwm := p.rss(t)
	t.Logf("peak RSS %d MiB, deploy limit %d MiB, GOMEMLIMIT %d MiB", hwm>>10, limit>>20, limit*9/10>>20)
	if hwm<<10 >= limit {
		t.Errorf("peak RSS %d MiB reached the deploy limit of %d MiB", hwm>>10, limit>>20)
	}
	if n := metric(p.scrape(t), "dinie_proxy_overloaded_total"); n == 0 {
		t.Error("dinie_proxy_overloaded_total did not count the bursts' overload")
	}
}
