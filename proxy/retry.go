package proxy

import (
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Clock is the time the retry logic waits by. Tests pass a fake one, so
// that a wait of seconds takes none.
type Clock interface {
	Now() time.Time
	// Sleep waits d, or until ctx is done, and then returns ctx.Err().
	Sleep(ctx context.Context, d time.Duration) error
}

// systemClock is the real time.
type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// retryReason is why a request was sent again: the label of
// dinie_proxy_upstream_retries_total.
type retryReason int

const (
	retryUnreachable retryReason = iota // no answer: the connection failed or closed before one
	retryUnavailable                    // 502, 503 or 504
	retryRateLimited                    // 429 with a short Retry-After
	retryReasons
)

var retryReasonLabels = [retryReasons]string{"unreachable", "unavailable", "rate_limited"}

// firstBackoff is the bound of the first jittered wait; each next one
// doubles, up to maxWait (docs/operations.md, "Retries"). minBackoff is the least
// wait: full jitter may draw nothing, and a retry is never at once.
const (
	firstBackoff = 200 * time.Millisecond
	minBackoff   = 10 * time.Millisecond
)

// retryPolicy says which requests are sent again after a transient failure of
// the upstream, and after how long (docs/operations.md, "Retries"). The
// decision for a request that succeeds at once is a few comparisons and the
// budget's count.
type retryPolicy struct {
	retries  int           // more tries after the first; 0: never
	maxWait  time.Duration // longest single wait
	timeout  time.Duration // no retry starts later than this after arrival
	autoKeys bool          // upstream.idempotency_keys: auto
	clock    Clock
	budget   *retryBudget // nil when retries is 0
	counters [retryReasons]prometheus.Counter
	// exhausted counts the failures that went to the app because the
	// budget was spent.
	exhausted prometheus.Counter
}

// retryState is one request's account of its retries.
type retryState struct {
	left    int // retries still allowed; 0 for a request that is never sent again
	done    int // retries made
	arrived time.Time
}

// begin decides, before anything is sent, whether req may be sent again;
// with idempotency_keys auto it first gives a POST, PUT, PATCH or DELETE
// without a key one of its own, which every try then carries (req.Header is
// the outbound request's private map). sdk says req is an SDK's (fromSDK).
// Every request counts towards the retry budget, SDK requests too: they
// are the apps' load.
func (p *retryPolicy) begin(req *http.Request, sdk bool) retryState {
	var now time.Time
	if p.budget != nil {
		now = p.clock.Now()
		p.budget.request(now)
	}
	h := req.Header
	// Dinie's SDKs retry on their own: retrying under them would multiply
	// their tries, and they send their own keys.
	if sdk {
		return retryState{}
	}
	if p.autoKeys && needsKey(req.Method) && !hasIdempotencyKey(h) {
		h["X-Idempotency-Key"] = []string{newIdempotencyKey()}
	}
	if p.retries <= 0 || !Resendable(req) {
		return retryState{}
	}
	// p.retries > 0, so p.budget is set and now was read.
	return retryState{left: p.retries, arrived: now}
}

// sdkAgentPrefix starts the User-Agent of both official SDKs
// (Dinie-SDK-JS/..., Dinie-SDK-Python/...).
const sdkAgentPrefix = "Dinie-SDK-"

// fromSDK reports whether a request comes from one of Dinie's SDKs: the JS
// SDK sends X-Dinie-Sdk-Language on every try, the Python SDK only its
// User-Agent (and X-Dinie-Retry-Count from its second try on). outbound
// asks sdkHeader of each header in its pass over the app's, and calls
// this only when the app's Connection header dropped some of them.
func fromSDK(h http.Header) bool {
	for k, vv := range h {
		if sdkHeader(k, vv) {
			return true
		}
	}
	return false
}

// sdkHeader reports whether the header k, with values vv, marks a
// request as an SDK's.
func sdkHeader(k string, vv []string) bool {
	switch k {
	case "X-Dinie-Sdk-Language", "X-Dinie-Retry-Count":
		return len(vv) > 0
	case "User-Agent":
		return len(vv) > 0 && len(vv[0]) >= len(sdkAgentPrefix) && strings.EqualFold(vv[0][:len(sdkAgentPrefix)], sdkAgentPrefix)
	}
	return false
}

// Resendable reports whether req, as the proxy sends it upstream, may be sent
// twice (docs/operations.md, "Retries"): its method is GET, HEAD or OPTIONS, or
// it carries Dinie's X-Idempotency-Key. An app's bare Idempotency-Key does not
// count: the proxy has copied it into X-Idempotency-Key by then, and Dinie
// documents no other. Whether its body can go again is the caller's to check.
// It is the rule to give h1.Transport's resend on a stale connection
// (h1.TransportConfig.Resendable).
func Resendable(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return true
	}
	return hasIdempotencyKey(req.Header)
}

// copyIdempotencyKey drops empty idempotency keys and puts an app's Idempotency-Key (the IETF draft's name,
// which Dinie's Python SDK sends) into X-Idempotency-Key, the header Dinie
// documents, unless the app sent that one too: a retry of a request whose
// key Dinie ignored would be a second loan or payment.
func copyIdempotencyKey(h http.Header) {
	// An empty key is no key, to Dinie and to the proxy: dropped, so that
	// net/http's transport, which counts the header's mere presence, does
	// not send the request twice on a stale connection either.
	for _, name := range [...]string{"Idempotency-Key", "X-Idempotency-Key"} {
		if v, ok := h[name]; ok && (len(v) == 0 || v[0] == "") {
			delete(h, name)
		}
	}
	if v := h["Idempotency-Key"]; len(v) > 0 && v[0] != "" && !hasIdempotencyKey(h) {
		h["X-Idempotency-Key"] = v[:1:1]
	}
}

func needsKey(method string) bool {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

// newIdempotencyKey is "dinie-auth-proxy-" and a random (version 4) UUID,
// RFC 9562, section 5.4.
func newIdempotencyKey() string {
	var u [16]byte
	crand.Read(u[:]) // never fails
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	const prefix = "dinie-auth-proxy-"
	b := make([]byte, len(prefix)+36)
	copy(b, prefix)
	d := b[len(prefix):]
	hex.Encode(d[0:8], u[0:4])
	d[8] = '-'
	hex.Encode(d[9:13], u[4:6])
	d[13] = '-'
	hex.Encode(d[14:18], u[6:8])
	d[18] = '-'
	hex.Encode(d[19:23], u[8:10])
	d[23] = '-'
	hex.Encode(d[24:], u[10:])
	return string(b)
}

// next decides whether the answer to a try (resp, or the failure err) is
// transient and another try may follow, and how long to wait for it. It
// changes nothing: the caller still checks that the body can be replayed.
func (p *retryPolicy) next(ctx context.Context, st *retryState, resp *http.Response, err error) (retryReason, time.Duration, bool) {
	if st.left <= 0 || ctx.Err() != nil {
		return 0, 0, false
	}
	var reason retryReason
	var wait time.Duration
	if err != nil {
		if !nothingReceived(err) {
			return 0, 0, false
		}
		reason, wait = retryUnreachable, p.backoff(st.done)
	} else {
		switch resp.StatusCode {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			reason, wait = retryUnavailable, p.backoff(st.done)
			// A Retry-After of 0 or in the past asks for no wait: the
			// backoff stands, so that a failing Dinie is not hit again at
			// once.
			if d, ok := retryAfter(resp.Header, p.clock); ok && d > 0 {
				wait = d
			}
		case http.StatusTooManyRequests:
			// Without a Retry-After nothing says when Dinie will take it:
			// the app decides.
			d, ok := retryAfter(resp.Header, p.clock)
			if !ok {
				return 0, 0, false
			}
			if d <= 0 {
				d = p.backoff(st.done)
			}
			reason, wait = retryRateLimited, d
		default:
			return 0, 0, false
		}
	}
	// Dinie asked for a longer wait than we may take: retrying sooner would
	// only be refused again.
	if wait > p.maxWait {
		return 0, 0, false
	}
	if p.clock.Now().Add(wait).Sub(st.arrived) > p.timeout {
		return 0, 0, false
	}
	return reason, wait, true
}

// backoff is the wait before retry n (from 0) when the upstream named
// none: full jitter, from minBackoff up to firstBackoff doubled n times,
// capped at maxWait.
func (p *retryPolicy) backoff(n int) time.Duration {
	bound := p.maxWait
	if n < 32 {
		bound = min(bound, firstBackoff<<n)
	}
	if bound <= minBackoff {
		return minBackoff
	}
	return max(time.Duration(rand.Int64N(int64(bound))), minBackoff)
}

// retryAfter reads Retry-After, delay-seconds or an HTTP-date (RFC 9110,
// section 10.2.3); a date in the past is no wait.
func retryAfter(h http.Header, clock Clock) (time.Duration, bool) {
	v := h["Retry-After"]
	if len(v) == 0 || v[0] == "" {
		return 0, false
	}
	if s, err := strconv.ParseUint(v[0], 10, 32); err == nil {
		return time.Duration(s) * time.Second, true
	}
	t, err := http.ParseTime(v[0])
	if err != nil {
		return 0, false
	}
	return max(t.Sub(clock.Now()), 0), true
}

// nothingReceivedError is a transport's failure before the first byte of
// an answer, other than a timeout (h1.Transport's).
type nothingReceivedError interface {
	error
	NothingReceived() bool
}

// hasIdempotencyKey reports whether the request carries Dinie's
// idempotency header.
func hasIdempotencyKey(h http.Header) bool {
	return len(h["X-Idempotency-Key"]) > 0 && h["X-Idempotency-Key"][0] != ""
}

// nothingReceived reports whether err means the upstream sent no byte of
// an answer: the connection failed, or it closed or broke before the
// first byte. A timeout waiting for the answer (the proxy's own 504) is none
// of these, nor is a failure that cannot be placed: neither is retried.
func nothingReceived(err error) bool {
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return false // trying again changes nothing
	}
	if e, ok := errors.AsType[nothingReceivedError](err); ok && e.NothingReceived() {
		return true // h1.Transport: no response byte
	}
	if e, ok := errors.AsType[unreachableError](err); ok && e.Unreachable() {
		return true // h1.Transport: the dial failed
	}
	if op, ok := errors.AsType[*net.OpError](err); ok && op.Op == "dial" {
		return true // net/http's transport: the dial failed
	}
	// net/http's transport: its failed first read of an answer comes back
	// as that read's error; a clean close there is io.EOF (after a first
	// byte, a cut answer is io.ErrUnexpectedEOF). A reset is not placed:
	// it may have come in the middle of the headers. A kept-alive
	// connection that the server closed just as the request took it has a
	// message of its own (errServerClosedIdle, unexported).
	return errors.Is(err, io.EOF) || err.Error() == "http: server closed idle connection"
}

// admit takes a retry from the budget, or counts a failure that goes to
// the app because the budget is spent.
func (p *retryPolicy) admit() bool {
	if p.budget.take() {
		return true
	}
	p.exhausted.Inc()
	return false
}

// wait waits d before retrying after reason, and counts the retry; it
// fails when the app goes away meanwhile.
func (p *retryPolicy) wait(ctx context.Context, st *retryState, reason retryReason, d time.Duration) error {
	if err := p.clock.Sleep(ctx, d); err != nil {
		return err
	}
	st.left--
	st.done++
	p.counters[reason].Inc()
	return nil
}
