package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TransportConfig configures NewTransport. The zero value works.
type TransportConfig struct {
	// ResponseHeaderTimeout bounds the wait for the upstream's response
	// headers (upstream.timeout). Zero means no bound.
	ResponseHeaderTimeout time.Duration
	// RootCAs are the roots trusted for the upstream. Nil means the
	// system's.
	RootCAs *x509.CertPool
}

// NewTransport returns the upstream transport of a sidecar: every request
// of one app goes to one host, so the keep-alive pool is sized for hundreds
// of concurrent requests to it, and HTTP/2 is used when the upstream offers
// it.
func NewTransport(cfg TransportConfig) *http.Transport {
	return &http.Transport{
		// Never the environment's HTTP_PROXY: a pod that sets it for the app
		// points it at us, and we would send requests to ourselves.
		Proxy: nil,
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2: true,
		// A proxy passes the app's Accept-Encoding on as it is, and the answer
		// back as it came: no transparent gzip.
		DisableCompression:    true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   512,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: cfg.ResponseHeaderTimeout,
		TLSClientConfig:       &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12},
	}
}

// TokenSource hands out the access token and drops it when the upstream
// refuses it. *tokencache.Cache is one.
type TokenSource interface {
	// Token returns a valid token, waiting a bounded time for a fetch.
	Token(ctx context.Context) (string, error)
	// Invalidate drops token only if it is still the current one.
	Invalidate(token string) bool
}

// tokenError marks a failure to get a token, so that the ErrorHandler can
// tell it from an upstream failure.
type tokenError struct{ err error }

func (e *tokenError) Error() string { return e.err.Error() }
func (e *tokenError) Unwrap() error { return e.err }

// authTransport injects the Bearer token and handles an upstream 401 (SPEC.md,
// "Token lifecycle"): the token used is invalidated, compare-and-clear, and
// the request is sent once more with a fresh token when its body can be
// replayed. A second 401 goes back to the app.
//
// It only ever sees the outbound requests of our own ReverseProxy, which are
// private copies, so it sets the header in place instead of cloning again on
// every request.
type authTransport struct {
	base      http.RoundTripper
	tokens    TokenSource
	maxReplay int64
	metrics   *metrics
}

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	tok, err := t.tokens.Token(req.Context())
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, &tokenError{err}
	}
	var body *replayBody
	if req.Body != nil && req.Body != http.NoBody && t.maxReplay > 0 && req.ContentLength <= t.maxReplay {
		body = &replayBody{body: req.Body, max: t.maxReplay}
		if req.ContentLength > 0 {
			body.buf = make([]byte, 0, req.ContentLength)
		}
		req.Body = body
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	t.metrics.observeRateLimit(resp.Header)
	if resp.StatusCode != http.StatusUnauthorized {
		return resp, nil
	}

	t.tokens.Invalidate(tok)
	replay, ok := replayable(req, body)
	if !ok {
		return resp, nil
	}
	fresh, err := t.tokens.Token(req.Context())
	if err != nil {
		// No better answer than the one we have: let the app see the 401.
		return resp, nil
	}
	discard(resp.Body)
	t.metrics.retries.Inc()
	if s, ok := req.Context().Value(stateKey{}).(*requestState); ok {
		s.retried = true
	}
	retry := req.Clone(req.Context())
	retry.Body = replay
	retry.Header.Set("Authorization", "Bearer "+fresh)
	resp, err = t.base.RoundTrip(retry)
	if err != nil {
		return nil, err
	}
	t.metrics.observeRateLimit(resp.Header)
	// A second 401 is the app's to handle: retrying again could loop, and
	// invalidating again would let one bad endpoint drive token fetches.
	return resp, nil
}

// replayable returns a fresh body for a retry, if the original can be sent
// again in full.
func replayable(req *http.Request, body *replayBody) (io.ReadCloser, bool) {
	if req.Body == nil || req.Body == http.NoBody {
		return req.Body, true
	}
	if body == nil {
		return nil, false
	}
	buf, ok := body.complete()
	if !ok {
		return nil, false
	}
	return io.NopCloser(bytes.NewReader(buf)), true
}

// discard reads a little of an unwanted body so that its connection can be
// reused, then closes it.
func discard(body io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, body, 64<<10)
	body.Close()
}

// replayBody streams the request body upstream while keeping a copy of it,
// up to max bytes, for a retry after a 401. The transport reads it on its
// own goroutine, hence the lock.
type replayBody struct {
	body io.ReadCloser
	max  int64

	mu       sync.Mutex
	buf      []byte
	overflow bool
	eof      bool
}

func (b *replayBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	b.mu.Lock()
	if !b.overflow {
		if int64(len(b.buf)+n) > b.max {
			b.overflow, b.buf = true, nil
		} else {
			b.buf = append(b.buf, p[:n]...)
		}
	}
	if err == io.EOF {
		b.eof = true
	}
	b.mu.Unlock()
	return n, err
}

func (b *replayBody) Close() error { return b.body.Close() }

// complete returns the whole body, if it was read to the end within max.
func (b *replayBody) complete() ([]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf, b.eof && !b.overflow
}

// observeRateLimit exports Dinie's rate-limit headers. Absent headers leave
// the gauges as they are; malformed ones are ignored.
func (m *metrics) observeRateLimit(h http.Header) {
	setFromHeader(m.rateLimit, h, "X-RateLimit-Limit")
	setFromHeader(m.rateRemaining, h, "X-RateLimit-Remaining")
	setFromHeader(m.rateReset, h, "X-RateLimit-Reset")
}

func setFromHeader(g prometheus.Gauge, h http.Header, key string) {
	v := h.Get(key)
	if v == "" {
		return
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
		return
	}
	g.Set(f)
}
