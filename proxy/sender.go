package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
)

// TokenSource hands out the access token and drops it when the upstream
// refuses it. *tokencache.Cache is one.
type TokenSource interface {
	// Token returns a valid token, waiting a bounded time for a fetch.
	Token(ctx context.Context) (string, error)
	// Invalidate drops token only if it is still the current one.
	Invalidate(token string) bool
}

// tokenError marks a failure to get a token, so that classify tells it
// from an upstream failure.
type tokenError struct{ err error }

func (e *tokenError) Error() string { return e.err.Error() }
func (e *tokenError) Unwrap() error { return e.err }

// sender sends a request upstream with the Bearer token, keeping a bounded
// copy of its body so that it can be sent again: once after an upstream 401
// (docs/operations.md, "How the token is handled": the token used is
// invalidated, compare-and-clear, and the request goes again with a fresh
// one; a second 401 goes back to the app), and after transient failures
// (docs/operations.md, "Retries").
//
// It only ever sees the Handler's outbound requests, which are private
// copies, so it sets the header in place instead of cloning again.
type sender struct {
	base      http.RoundTripper
	tokens    TokenSource
	maxReplay int64
	budget    *replayBudget
	metrics   *metrics
	retry     *retryPolicy
	// pool recycles the copies' buffers.
	pool replayPool

	// bearer is the header value of the token last used: the token changes
	// once an hour, so building "Bearer "+token belongs there, not on every
	// request.
	bearer atomic.Pointer[bearerHeader]
}

// bearerHeader is the Authorization header of one token, as the value
// slice that every request with that token shares (read-only, like
// Handler.noUserAgent).
type bearerHeader struct {
	token string
	value []string
}

func (s *sender) header(token string) []string {
	if b := s.bearer.Load(); b != nil && b.token == token {
		return b.value
	}
	b := &bearerHeader{token: token, value: []string{"Bearer " + token}}
	s.bearer.Store(b)
	return b.value
}

// sendStats is what the access log says of a request's way upstream.
type sendStats struct {
	attempts int  // sends upstream, the 401 replay and retries included
	replayed bool // sent again with a fresh token after a 401
}

// send sends req upstream. Its Authorization is the partner token, or,
// when pass is set, that header unchanged: a session token's request is
// neither given the partner token nor replayed with it after a 401
// (docs/modes-and-clients.md, "Session tokens"). A resend-safe request is
// sent again after a transient failure (docs/operations.md, "Retries"):
// each try takes the current token and its own copy of the request, and
// the last answer goes back as it came.
func (s *sender) send(req *http.Request, pass []string, sdk bool) (*http.Response, sendStats, error) {
	ctx := req.Context()
	try := s.retry.begin(req, sdk)
	tok, err := s.token(ctx, pass)
	if err != nil {
		return nil, sendStats{}, err
	}
	body := s.hold(req)
	if body != nil {
		// Once send returns, no replay can come: the copy goes, and its
		// bytes go back to the budget.
		defer body.release()
	}
	var st sendStats
	for out := req; ; {
		s.authorize(out, pass, tok)
		st.attempts++
		resp, err := s.base.RoundTrip(out)
		if err != nil {
			// Transports wrap a body's read error in types of their own; ask
			// the body whether it was the culprit.
			if berr := body.readError(); berr != nil {
				return nil, st, &clientBodyError{berr}
			}
		} else {
			if resp.StatusCode == http.StatusUnauthorized && pass == nil && !st.replayed {
				fresh, replay, ok := s.after401(ctx, req, body, tok)
				if !ok {
					return resp, st, nil
				}
				// The replay is not a retry: it has a fresh token, not the
				// same request later. A second 401 is the app's to handle:
				// retrying again could loop, and invalidating again would let
				// one bad endpoint drive token fetches.
				s.metrics.observeRateLimit(resp.Header)
				discard(resp.Body)
				s.metrics.replays401.Inc()
				st.replayed = true
				out, tok = req.Clone(ctx), fresh
				out.Body = replay
				continue
			}
		}
		replay, retry, err := s.again(ctx, &try, req, body, resp, err)
		if !retry {
			return resp, st, err
		}
		if err != nil {
			return nil, st, err
		}
		// The token may have been refreshed during the wait.
		if tok, err = s.token(ctx, pass); err != nil {
			return nil, st, err
		}
		out = req.Clone(ctx)
		out.Body = replay
	}
}

// token is the partner token to send a request with, or none when the
// app's own Authorization (pass) goes instead.
func (s *sender) token(ctx context.Context, pass []string) (string, error) {
	if pass != nil {
		return "", nil
	}
	tok, err := s.tokens.Token(ctx)
	if err != nil {
		return "", &tokenError{err}
	}
	return tok, nil
}

// authorize sets out's Authorization: the app's own, passed on, or the
// partner token's.
func (s *sender) authorize(out *http.Request, pass []string, tok string) {
	if pass != nil {
		out.Header["Authorization"] = pass
		return
	}
	out.Header["Authorization"] = s.header(tok)
}

// hold puts req's body behind a requestBody that keeps a copy of it, as
// much as maxReplay and the shared budget allow; nil when it has none.
func (s *sender) hold(req *http.Request) *requestBody {
	if req.Body == nil || req.Body == http.NoBody {
		return nil
	}
	body := &requestBody{body: req.Body, budget: s.budget, pool: &s.pool}
	if s.maxReplay > 0 && req.ContentLength <= s.maxReplay {
		body.max = s.maxReplay
		if req.ContentLength > 0 {
			// The length is known: hold exactly that, or nothing when the
			// budget is spent.
			body.max = req.ContentLength
			if !body.grow(int(req.ContentLength)) {
				body.max = 0
			}
		}
	}
	req.Body = body
	return body
}

// after401 drops tok, which the upstream refused, and returns the token
// and body to send req again with; false means the 401 goes to the app as
// it came: the body was not kept, no token can be had, or the token
// cache kept tok (a 401 within 10 s of a fetch that a 401 caused), so that
// no newer token than the one refused is held.
func (s *sender) after401(ctx context.Context, req *http.Request, body *requestBody, tok string) (string, io.ReadCloser, bool) {
	s.tokens.Invalidate(tok)
	replay, ok := replayable(req, body)
	if !ok {
		return "", nil, false
	}
	fresh, err := s.tokens.Token(ctx)
	if err != nil || fresh == tok {
		return "", nil, false
	}
	return fresh, replay, true
}

// again decides whether the answer to a try (resp, or the failure
// failed) is followed by another: the failure is transient, the body can
// go again and the retry budget has room. Then it drops resp, waits, and
// returns the body to send with true; an error then means that the wait
// was cut short (the app went away). False hands back failed: resp, or
// failed, is the app's answer.
func (s *sender) again(ctx context.Context, try *retryState, req *http.Request, body *requestBody, resp *http.Response, failed error) (io.ReadCloser, bool, error) {
	reason, wait, ok := s.retry.next(ctx, try, resp, failed)
	if !ok {
		return nil, false, failed
	}
	replay, ok := replayable(req, body)
	if !ok || !s.retry.admit() {
		// The body was not kept whole (too large, over the budget, or not
		// all read yet), or retries are already a fifth of the load.
		return nil, false, failed
	}
	if resp != nil {
		s.metrics.observeRateLimit(resp.Header)
		discard(resp.Body)
	}
	if err := s.retry.wait(ctx, try, reason, wait); err != nil {
		return nil, true, err
	}
	return replay, true, nil
}

// replayable returns a fresh body for a retry, if the original can be sent
// again in full.
func replayable(req *http.Request, body *requestBody) (io.ReadCloser, bool) {
	if body == nil {
		return req.Body, true // none, or http.NoBody
	}
	replay := body.replay()
	if replay == nil {
		return nil, false
	}
	return replay, true
}

// errReplayClosed is what a replay body gives a read after its Close.
var errReplayClosed = errors.New("proxy: replay body read after close")

// replayBody is a kept request body on its way again. It is all in memory,
// which a transport that knows bufferedBody takes as leave to send it with
// the request's head.
//
// Its buffer is the pool's, lent to the request, and a transport may read
// the body after RoundTrip returned (net/http's writes it on a goroutine of
// its own, which goes on after an early answer), even after send returned
// and released the copy: were the buffer back in the pool by then, that
// read would send another request's bytes upstream. So it reads under
// the requestBody's lock, and the buffer goes back to the pool only once
// the copy is released and every replayBody has been read to its end or
// closed; a read after Close is an error, not a read of the buffer.
// Transports close request bodies when they are done with them; one that
// never did would only keep its buffer from the pool.
type replayBody struct {
	b    *requestBody
	buf  []byte // the kept body; read under b.mu, and only while !done
	off  int
	done bool // read to the end or closed: buf is not read again
}

func (r *replayBody) Read(p []byte) (int, error) {
	r.b.mu.Lock()
	defer r.b.mu.Unlock()
	switch {
	case r.off == len(r.buf):
		return 0, io.EOF
	case r.done:
		return 0, errReplayClosed
	}
	n := copy(p, r.buf[r.off:])
	r.off += n
	if r.off == len(r.buf) {
		r.finish()
	}
	return n, nil
}

func (r *replayBody) Close() error {
	r.b.mu.Lock()
	if !r.done {
		r.finish()
	}
	r.b.mu.Unlock()
	return nil
}

func (r *replayBody) Buffered() int64 {
	r.b.mu.Lock()
	defer r.b.mu.Unlock()
	if r.done {
		return 0
	}
	return int64(len(r.buf) - r.off)
}

// finish ends r's reads of the buffer, and gives the buffer back to the
// pool if r was its last reader after the copy was released. b.mu is
// held.
func (r *replayBody) finish() {
	r.done = true
	r.b.readers--
	if r.b.overflow {
		r.b.recycle()
	}
}

// discard reads a little of an unwanted body so that its connection can be
// reused, then closes it.
func discard(body io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, body, 64<<10)
	body.Close()
}

// requestBody is the app's request body on its way upstream. It tells a
// failure to read it (a broken chunked coding, a client gone mid-body), the
// app's fault, from a failure of the upstream; and it keeps a copy of up to
// max bytes to replay the request after a 401 (max 0: no copy), its room
// reserved from the budget that all requests share. The transport may read
// it on its own goroutine, hence the lock.
type requestBody struct {
	body   io.ReadCloser
	max    int64
	budget *replayBudget
	pool   *replayPool

	mu       sync.Mutex
	buf      []byte
	held     *[]byte // buf's buffer, to go back to pool; nil if not the pool's
	reserved int64   // the capacity of buf's buffer, taken from budget
	readers  int     // replayBodies that may still read buf's buffer
	overflow bool    // the copy was given up (drop)
	eof      bool
	err      error // a read error other than EOF
}

// clientBodyError is a failure to read the app's request body.
type clientBodyError struct{ err error }

func (e *clientBodyError) Error() string { return "read request body: " + e.err.Error() }
func (e *clientBodyError) Unwrap() error { return e.err }

func (b *requestBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	b.mu.Lock()
	if !b.overflow && b.max > 0 && n > 0 {
		if int64(len(b.buf)+n) > b.max || !b.grow(len(b.buf)+n) {
			b.drop()
		} else {
			b.buf = append(b.buf, p[:n]...)
		}
	}
	switch {
	case err == io.EOF:
		b.eof = true
	case err != nil:
		b.err = err
	}
	b.mu.Unlock()
	return n, err
}

func (b *requestBody) readError() error {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// bufferedBody is a request body that knows how many of its bytes can be
// read without waiting for the app (h1.Server's). A transport that finds
// it on a request (h1.Transport) sends that many with the request's head.
type bufferedBody interface{ Buffered() int64 }

// Buffered passes on what the app's body says has arrived
// (bufferedBody).
func (b *requestBody) Buffered() int64 {
	if bb, ok := b.body.(bufferedBody); ok {
		return bb.Buffered()
	}
	return 0
}

// Close leaves the app's body open: the server closes it once the handler
// returns. Closing it earlier, as a transport does when it gives up, would
// make the server read the rest of it, and a client waiting for
// "100 Continue" would never send it.
func (b *requestBody) Close() error { return nil }

// grow makes room for need bytes in buf, reserving the buffer's capacity
// from the budget; false means the budget is spent. A body of unknown
// length grows by doubling, from 4 KiB, but never past max, rounded up to
// the pool's size class. b.mu is held, or b is not shared yet.
func (b *requestBody) grow(need int) bool {
	if int64(need) <= b.reserved {
		return true
	}
	size := int(min(int64(max(need, 2*int(b.reserved), 4<<10)), b.max))
	room := int64(b.pool.room(size))
	if !b.budget.reserve(room - b.reserved) {
		return false
	}
	buf, held := b.pool.get(size)
	buf = append(buf, b.buf...)
	b.recycle()
	b.buf, b.held, b.reserved = buf, held, room
	return true
}

// drop gives up the copy: the request is not replayable. b.mu is held.
func (b *requestBody) drop() {
	b.overflow, b.buf = true, nil
	b.budget.release(b.reserved)
	b.reserved = 0
	b.recycle()
}

// recycle gives buf's buffer back to the pool unless a replayBody may
// still read it; then the last one to finish does (replayBody). b.mu is
// held.
func (b *requestBody) recycle() {
	if b.readers == 0 {
		b.pool.put(b.held)
		b.held = nil
	}
}

// release drops the copy once no replay can come; reads that the
// transport still makes are not copied.
func (b *requestBody) release() {
	b.mu.Lock()
	b.drop()
	b.mu.Unlock()
}

// replayBudget is the room for replay copies that all requests share
// (upstream.replay_budget_bytes): an atomic count, so that a reservation
// takes no lock.
type replayBudget struct{ free atomic.Int64 }

func newReplayBudget(n int64) *replayBudget {
	b := &replayBudget{}
	b.free.Store(n)
	return b
}

// reserve takes n bytes from the budget, or nothing and false when they
// are not there. A nil budget has no bound.
func (b *replayBudget) reserve(n int64) bool {
	if b == nil {
		return true
	}
	for {
		free := b.free.Load()
		if free < n {
			return false
		}
		if b.free.CompareAndSwap(free, free-n) {
			return true
		}
	}
}

func (b *replayBudget) release(n int64) {
	if b != nil && n > 0 {
		b.free.Add(n)
	}
}

// replay returns a reader of the whole body, if it was read to the end
// and kept; nil otherwise.
func (b *requestBody) replay() *replayBody {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.eof || b.overflow || b.max == 0 {
		return nil
	}
	r := &replayBody{b: b, buf: b.buf}
	if len(b.buf) == 0 {
		r.done = true // it never reads the buffer
	} else {
		b.readers++
	}
	return r
}
