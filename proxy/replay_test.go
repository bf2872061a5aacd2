package proxy_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dinie/dinie-auth-proxy/proxy"
	"github.com/dinie/dinie-auth-proxy/tokencache"
)

// keepingTransport sends requests with base, except the replays of those
// whose X-Request-Id starts with "late": it keeps their bodies and answers
// 200 at once, as net/http's transport can return an early answer while
// its writer goroutine still has the body. With closeFirst it closes the
// body before answering, as net/http may while its writer still reads.
type keepingTransport struct {
	base       http.RoundTripper
	closeFirst bool
	head       int // bytes read before answering

	mu    sync.Mutex
	tries map[string]int
	kept  chan keptBody
}

type keptBody struct {
	body io.ReadCloser
	head []byte
	err  error
}

func (t *keepingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	id := req.Header.Get("X-Request-Id")
	t.mu.Lock()
	t.tries[id]++
	try := t.tries[id]
	t.mu.Unlock()
	if !strings.HasPrefix(id, "late") || try < 2 {
		return t.base.RoundTrip(req)
	}
	k := keptBody{body: req.Body, head: make([]byte, t.head)}
	_, k.err = io.ReadFull(req.Body, k.head)
	if t.closeFirst {
		req.Body.Close()
	}
	t.kept <- k
	return &http.Response{StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{}, Body: http.NoBody, Request: req}, nil
}

// A replay's body may be read by the transport after send returned and
// released the copy. Its buffer must not be back in the pool by then: the
// next upload would fill it, and the late read would send that upload's
// bytes upstream in place of the replayed request's.
func TestLateReadOfAReplayBodyNeverSeesAnotherRequest(t *testing.T) {
	tests := []struct {
		name       string
		closeFirst bool
	}{
		// Read on after send returned: the replayed request's own bytes.
		{"read on", false},
		// Read after Close: an error, nothing of the buffer.
		{"read after close", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &tokenClock{}
			kt := &keepingTransport{closeFirst: tt.closeFirst, head: 1 << 10, tries: map[string]int{}, kept: make(chan keptBody, 1)}
			e := newEnv(t, false, withTokenClock(clock), func(e *env, p *proxy.Config, _ *tokencache.Config) {
				kt.base = standardTransport(e.roots, p.UpstreamTimeout)
				p.Transport = kt
			})
			replayOnceAPI(e)
			// sync.Pool may drop a buffer or keep it on another P: rounds
			// enough that a buffer lent too early is found.
			for round := range 16 {
				const size = 64 << 10
				mine := bytes.Repeat([]byte{'a' + byte(round%16)}, size)
				other := bytes.Repeat([]byte{'A' + byte(round%16)}, size)

				// The first try meets a 401; the replay is kept. A 401 may
				// cause a token fetch once in 10 s.
				clock.advance(10 * time.Second)
				id := fmt.Sprintf("late-%d", round)
				resp, _ := do(t, http.DefaultClient, "POST", e.proxy.URL+"/charges", bytes.NewReader(mine), "X-Request-Id", id)
				if resp.StatusCode != 200 {
					t.Fatalf("round %d: status %d, want the kept replay's 200", round, resp.StatusCode)
				}
				k := <-kt.kept
				if k.err != nil || !bytes.Equal(k.head, mine[:len(k.head)]) {
					t.Fatalf("round %d: the replay's first bytes: %v, not the request's", round, k.err)
				}

				// Another upload of the same size, sent in full, replayed.
				clock.advance(10 * time.Second)
				resp, got := do(t, http.DefaultClient, "POST", e.proxy.URL+"/charges", bytes.NewReader(other), "X-Request-Id", fmt.Sprintf("other-%d", round))
				if resp.StatusCode != 200 || got != "ok:"+string(other) {
					t.Fatalf("round %d: the other upload: status %d, %d bytes", round, resp.StatusCode, len(got))
				}

				// The transport reads on.
				rest, err := io.ReadAll(k.body)
				if bytes.ContainsAny(rest, string(other[:1])) {
					t.Fatalf("round %d: a late read of the replay got the other request's bytes", round)
				}
				switch {
				case tt.closeFirst && (err == nil || len(rest) > 0):
					t.Fatalf("round %d: read after close: %d bytes, %v; want an error and no bytes", round, len(rest), err)
				case !tt.closeFirst && (err != nil || !bytes.Equal(rest, mine[len(k.head):])):
					t.Fatalf("round %d: read on: %d bytes, %v; want the rest of the request's body", round, len(rest), err)
				}
				k.body.Close()
			}
		})
	}
}
