package h1

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// Transport is an HTTP/1.1 RoundTripper for one upstream host that does
// its I/O on the calling goroutine, over a pool of keep-alive connections.
//
// http.Transport hands every request between three goroutines (the
// caller's, and the connection's read and write loops), the largest cost of
// a small request after its system calls. Here the caller's goroutine
// writes the request and reads the answer itself, with net/http's parser
// and Request.Write's rules, so the wire format is the standard library's.
// HTTP/2 needs net/http's transport.
type Transport struct {
	addr, host string
	// plainHost is host when isPlainHost says so: every request's Host,
	// looked at once here rather than byte by byte for each (writeRequest).
	plainHost             string
	tls                   *tls.Config // nil for plain http
	responseHeaderTimeout time.Duration
	dialContext           func(ctx context.Context, network, addr string) (net.Conn, error)
	resendable            func(*http.Request) bool

	maxDialing int

	mu   sync.Mutex
	idle []*h1conn // a stack: the most recently used on top, so it is warm
	// dialing counts the dials in progress, at most maxDialing; waiters
	// are the requests that found neither an idle connection nor a free
	// dial, first come first served.
	dialing int
	waiters []connWaiter

	// bodyBufs lends the buffers that request bodies larger than a
	// connection's writer are read through (writeBody).
	bodyBufs sync.Pool
}

// bodyBufSize is the size of a bodyBufs buffer: the largest read that
// loopback's 64 KiB packets can fill at once.
const bodyBufSize = 64 << 10

// TransportConfig configures NewTransport. The zero value works.
type TransportConfig struct {
	// ResponseHeaderTimeout bounds the wait for the response headers once
	// the request is written (or up to a sixteenth less, at most a second:
	// the deadline is not moved for every request). Zero means no bound.
	ResponseHeaderTimeout time.Duration
	// RootCAs are the roots trusted for an https upstream. Nil means the
	// system's.
	RootCAs *x509.CertPool
	// DialContext connects to the upstream's address. Nil means a
	// net.Dialer with TCP keep-alives.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// MaxDialing bounds the connections being opened at once, TLS
	// handshakes included. A request that finds no idle connection and no
	// free dial waits for whichever comes first: a connection another
	// request is done with, or a dial of its own. Zero means 16.
	MaxDialing int
	// Resendable says whether a request without a body may go again on a
	// fresh connection when a kept-alive one turns out to have been closed
	// before any byte of the answer came: the server may have read it. Nil
	// means net/http's rule: GET, HEAD, OPTIONS or TRACE, or an
	// Idempotency-Key or X-Idempotency-Key header. A request with a body
	// never goes again, whatever this says: no copy of it is kept.
	Resendable func(*http.Request) bool
}

// The pool's bounds: one upstream host, so one pool sized for hundreds of
// concurrent requests to it.
const (
	dialTimeout  = 10 * time.Second // connecting, TLS handshake included
	idleTimeout  = 90 * time.Second // a pooled connection older is closed
	maxIdleConns = 512
	// A burst of new requests would otherwise open a connection each at
	// once, and their handshakes take the proxy's CPU in one block, a
	// stall for every request in flight (bench/README.md, "Opening
	// connections"); the requests beyond the bound mostly get a connection
	// that another request is done with before a dial would finish.
	defaultMaxDialing = 16
)

// DialError is a failure to connect to the upstream, TLS handshake
// included: nothing of the request was sent.
type DialError struct {
	Addr string
	Err  error
}

func (e *DialError) Error() string { return "dial " + e.Addr + ": " + e.Err.Error() }
func (e *DialError) Unwrap() error { return e.Err }

// Unreachable marks the error as the upstream's unreachability, for
// callers that classify errors by behaviour rather than by this type.
func (e *DialError) Unreachable() bool { return true }

// NewTransport returns a Transport for upstream's scheme and host.
func NewTransport(upstream *url.URL, cfg TransportConfig) (*Transport, error) {
	t := &Transport{host: upstream.Host, responseHeaderTimeout: cfg.ResponseHeaderTimeout, dialContext: cfg.DialContext,
		resendable: cfg.Resendable, maxDialing: cfg.MaxDialing}
	if isPlainHost(t.host) {
		t.plainHost = t.host
	}
	if t.maxDialing <= 0 {
		t.maxDialing = defaultMaxDialing
	}
	if t.resendable == nil {
		t.resendable = netHTTPResendable
	}
	if t.dialContext == nil {
		t.dialContext = (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext
	}
	t.bodyBufs.New = func() any {
		b := make([]byte, bodyBufSize)
		return &b
	}
	port := upstream.Port()
	switch upstream.Scheme {
	case "https":
		t.tls = &tls.Config{
			ServerName: upstream.Hostname(),
			RootCAs:    cfg.RootCAs,
			MinVersion: tls.VersionTLS12,
			// Offer only HTTP/1.1: this transport speaks nothing else.
			NextProtos:         []string{"http/1.1"},
			ClientSessionCache: tls.NewLRUClientSessionCache(64),
		}
		if port == "" {
			port = "443"
		}
	case "http":
		if port == "" {
			port = "80"
		}
	default:
		return nil, fmt.Errorf("h1: upstream scheme %q is not http or https", upstream.Scheme)
	}
	t.addr = net.JoinHostPort(upstream.Hostname(), port)
	return t, nil
}

type h1conn struct {
	conn      net.Conn
	raw       net.Conn    // the TCP connection under TLS, for the liveness check
	lr        limitReader // bounds response headers, as net/http's transport does
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
	deadline  readDeadline
	// poison aborts blocked I/O on the connection; made once per
	// connection rather than as a closure per request.
	poison func()
	// under is the TCP connection as TLS reads it; nil for plain http.
	under *noWaitConn
	// alive's peek (conncheck_linux.go), made once per connection.
	rawConn  syscall.RawConn
	peekFD   func(fd uintptr)
	peekByte byte
	peekIdle bool
}

// errNothingRead marks a failure other than a timeout before the first
// byte of the response: on a reused connection it means the server had
// closed it while idle, and an idempotent request can safely be sent
// again.
type errNothingRead struct{ err error }

func (e errNothingRead) Error() string { return e.err.Error() }
func (e errNothingRead) Unwrap() error { return e.err }

// NothingReceived marks the error as a failure before any byte of the
// answer, for callers that decide by behaviour whether to send a request
// again.
func (e errNothingRead) NothingReceived() bool { return true }

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != t.host {
		closeBody(req)
		return nil, fmt.Errorf("h1: Transport for %s got a request for %s", t.host, req.URL.Host)
	}
	ctx := req.Context()
	if err := checkOutbound(req); err != nil {
		closeBody(req)
		return nil, err
	}
	resendable := (req.Body == nil || req.Body == http.NoBody) && t.resendable(req)
	for attempt := 0; ; attempt++ {
		pc, reused, err := t.conn(ctx)
		if err != nil {
			closeBody(req)
			return nil, err
		}
		resp, err := t.exchange(ctx, pc, req)
		if err == nil {
			return resp, nil
		}
		if refused, ok := err.(errInvalidField); ok {
			// Refused before it went out, as net/http's transport refuses
			// before sending: the connection is not the request's fault.
			closeBody(req)
			if !refused.spoiled {
				t.put(pc)
				return nil, err
			}
		}
		pc.conn.Close()
		if _, stale := errors.AsType[errNothingRead](err); stale && reused && attempt == 0 && resendable && ctx.Err() == nil {
			continue
		}
		return nil, err
	}
}

// ErrSwitchingProtocols is the error of a request answered 101 Switching
// Protocols though it asked for no upgrade: what follows on the connection
// is no longer HTTP/1.1, so there is no answer to hand back. Its
// SwitchedProtocols method lets callers that know no h1 type tell it.
var ErrSwitchingProtocols error = switchedProtocols{}

type switchedProtocols struct{}

func (switchedProtocols) Error() string {
	return "h1: the upstream answered 101 Switching Protocols to a request that asked for no upgrade"
}

// SwitchedProtocols marks the error as an unrequested 101.
func (switchedProtocols) SwitchedProtocols() bool { return true }

// netHTTPResendable is net/http's rule for sending a request again on a
// fresh connection (Request.isReplayable), its body aside.
func netHTTPResendable(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, key := req.Header["Idempotency-Key"]
	_, xkey := req.Header["X-Idempotency-Key"]
	return key || xkey
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// longAgo is a deadline in the past: setting it aborts blocked I/O.
var longAgo = time.Unix(1, 0)

func (t *Transport) exchange(ctx context.Context, pc *h1conn, req *http.Request) (*http.Response, error) {
	// A cancelled request (the app went away) must not leave this goroutine
	// blocked on the upstream: poisoning the deadline wakes it up.
	w := watchCancel(ctx, pc)
	fail := func(err error) (*http.Response, error) {
		w.release()
		return nil, err
	}
	var lent *[]byte
	var buf []byte
	if req.ContentLength > int64(pc.bw.Available()) {
		lent = t.bodyBufs.Get().(*[]byte)
		buf = *lent
	}
	err := writeRequest(pc.bw, req, buf, t.plainHost)
	if lent != nil {
		t.bodyBufs.Put(lent)
	}
	if refused, ok := err.(errInvalidField); ok {
		pc.bw.Reset(pc.conn) // drops what it had written of the head
		refused.spoiled = !w.release()
		return nil, refused
	}
	if err != nil {
		return fail(err)
	}
	if err := pc.bw.Flush(); err != nil {
		return fail(err)
	}
	// Moving the deadline undoes a poisoning that came before it: the
	// context tells (here and below).
	if t.responseHeaderTimeout > 0 && pc.deadline.extend(pc.conn, time.Now().Add(t.responseHeaderTimeout), t.responseHeaderTimeout) && ctx.Err() != nil {
		return fail(ctx.Err())
	}
	// Let the other requests run before reading the answer: it is rarely
	// there yet, and a read that finds nothing costs a system call and a
	// park through the netpoller (measured in bench/README.md).
	runtime.Gosched()
	resp, err := readResponse(pc, req)
	if err != nil {
		return fail(err)
	}
	// A body that is all in the buffer is read without the connection,
	// so the deadline may stay for the next request; any other must be
	// free to take as long as it takes (a stream of events).
	if t.responseHeaderTimeout > 0 && !bodyBuffered(resp, pc.br) && pc.deadline.set(pc.conn, time.Time{}) && ctx.Err() != nil {
		return fail(ctx.Err())
	}
	body := &h1body{rc: resp.Body, pc: pc, t: t, watch: w, keepAlive: !resp.Close && !req.Close}
	if resp.Body == http.NoBody {
		body.finish(true)
		return resp, nil
	}
	resp.Body = body
	return resp, nil
}

// readResponse reads the answer's head, past any 1xx (100 Continue, 103
// Early Hints).
func readResponse(pc *h1conn, req *http.Request) (*http.Response, error) {
	pc.lr.remain = maxResponseHeaderBytes
	defer func() { pc.lr.remain = math.MaxInt64 }()
	if _, err := pc.br.Peek(1); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// The upstream has the request and is slow with it (or the
			// context poisoned the deadline): sending it again would make
			// it do the work twice.
			return nil, err
		}
		return nil, errNothingRead{err}
	}
	spare := spareHeader(req.Context())
	for {
		// The ordinary answer is read by the strict fast reader
		// (fasthead.go); anything else, from the same unread bytes, by
		// net/http.
		resp, ok := fastReadResponse(pc.br, req, spare)
		if ok {
			return resp, nil
		}
		resp, err := http.ReadResponse(pc.br, req)
		if err != nil {
			if pc.lr.remain <= 0 {
				err = fmt.Errorf("h1: upstream response headers exceeded %d bytes: %w", maxResponseHeaderBytes, err)
			}
			return nil, err
		}
		switch {
		case resp.StatusCode == http.StatusSwitchingProtocols:
			return nil, ErrSwitchingProtocols
		case resp.StatusCode < 100 || resp.StatusCode >= 200:
			return resp, nil
		}
	}
}

// bodyBuffered reports whether resp's body is wholly in br already.
func bodyBuffered(resp *http.Response, br *bufio.Reader) bool {
	return resp.Body == http.NoBody || len(resp.TransferEncoding) == 0 && resp.ContentLength >= 0 && int64(br.Buffered()) >= resp.ContentLength
}

// h1body hands the connection back to the pool once the response body has
// been read to the end, and closes it otherwise.
type h1body struct {
	rc        io.ReadCloser
	pc        *h1conn
	t         *Transport
	watch     cancelWatch
	keepAlive bool
	done      bool
}

func (b *h1body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.finish(true)
	}
	return n, err
}

func (b *h1body) Close() error {
	if !b.done {
		// Not read to the end: the rest is still on the wire, and draining it
		// could take as long as the upstream likes. Drop the connection.
		b.finish(false)
	}
	return nil
}

func (b *h1body) finish(complete bool) {
	b.done = true
	// release reports false if the request's context already poisoned the
	// connection's deadline: such a connection cannot be reused.
	if complete && b.watch.release() && b.keepAlive && b.pc.drained() {
		b.t.put(b.pc)
		return
	}
	b.watch.release()
	b.pc.conn.Close()
}

// connWaiter is how a waiting request gets its turn: a connection
// another request is done with, or nil, leave to dial one of its own (a
// dial slot handed over).
type connWaiter chan *h1conn

// conn returns a pooled connection, or a new one.
func (t *Transport) conn(ctx context.Context) (*h1conn, bool, error) {
	for {
		t.mu.Lock()
		if n := len(t.idle); n > 0 {
			pc := t.idle[n-1]
			t.idle[n-1] = nil
			t.idle = t.idle[:n-1]
			t.mu.Unlock()
			if t.usable(pc) {
				return pc, true, nil
			}
			continue
		}
		if t.dialing < t.maxDialing {
			t.dialing++
			t.mu.Unlock()
			return t.dialInSlot(ctx)
		}
		w := make(connWaiter, 1)
		t.waiters = append(t.waiters, w)
		t.mu.Unlock()
		select {
		case pc := <-w:
			if pc == nil {
				return t.dialInSlot(ctx)
			}
			if t.usable(pc) {
				return pc, true, nil
			}
		case <-ctx.Done():
			if !t.leave(w) {
				// Its turn came as it gave up: pass the turn on.
				if pc := <-w; pc != nil {
					t.put(pc)
				} else {
					t.dialEnded()
				}
			}
			return nil, false, &DialError{Addr: t.addr, Err: ctx.Err()}
		}
	}
}

// usable checks a connection about to be reused, and closes it if it
// cannot be. Every reuse is checked, however briefly the connection was
// idle: a byte that arrived meanwhile is not an answer to anything (RFC
// 9112, section 6.3), and read as the next request's answer it would shift
// every later answer by one (a response-queue desync). The non-blocking
// peek also finds a connection the server closed.
func (t *Transport) usable(pc *h1conn) bool {
	if time.Since(pc.idleSince) < idleTimeout && pc.alive() {
		return true
	}
	pc.conn.Close()
	return false
}

// dialInSlot dials in a dial slot already taken, then frees it.
func (t *Transport) dialInSlot(ctx context.Context) (*h1conn, bool, error) {
	pc, err := t.dial(ctx)
	t.dialEnded()
	return pc, false, err
}

// dialEnded frees a dial slot, handing it to the first waiter if any.
func (t *Transport) dialEnded() {
	t.mu.Lock()
	if w, ok := t.nextWaiter(); ok {
		t.mu.Unlock()
		w <- nil
		return
	}
	t.dialing--
	t.mu.Unlock()
}

// nextWaiter takes the first waiter off the queue. t.mu is held.
func (t *Transport) nextWaiter() (connWaiter, bool) {
	if len(t.waiters) == 0 {
		return nil, false
	}
	w := t.waiters[0]
	t.waiters[0] = nil
	t.waiters = t.waiters[1:]
	if len(t.waiters) == 0 {
		t.waiters = nil // let the array go once the burst is over
	}
	return w, true
}

// leave takes w off the queue; false means it was no longer there: its
// turn has been sent.
func (t *Transport) leave(w connWaiter) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, o := range t.waiters {
		if o == w {
			t.waiters = append(t.waiters[:i], t.waiters[i+1:]...)
			return true
		}
	}
	return false
}

// put gives a connection that is done with its request to the first
// waiter, or to the pool.
func (t *Transport) put(pc *h1conn) {
	pc.idleSince = time.Now()
	t.mu.Lock()
	if w, ok := t.nextWaiter(); ok {
		t.mu.Unlock()
		w <- pc
		return
	}
	var evicted *h1conn
	if len(t.idle) >= maxIdleConns {
		evicted = t.idle[0]
		t.idle = append(t.idle[:0], t.idle[1:]...)
	}
	t.idle = append(t.idle, pc)
	t.mu.Unlock()
	if evicted != nil {
		evicted.conn.Close()
	}
}

// CloseIdleConnections closes the pooled connections.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, pc := range idle {
		pc.conn.Close()
	}
}

func (t *Transport) dial(ctx context.Context) (*h1conn, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	raw, err := t.dialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, &DialError{Addr: t.addr, Err: err}
	}
	conn := raw
	var under *noWaitConn
	if t.tls != nil {
		under = &noWaitConn{Conn: newSysConn(raw)}
		tc := tls.Client(under, t.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, &DialError{Addr: t.addr, Err: fmt.Errorf("tls: %w", err)}
		}
		conn = tc
	} else {
		conn = newSysConn(raw)
	}
	pc := &h1conn{
		conn:   conn,
		raw:    raw,
		under:  under,
		poison: func() { conn.SetDeadline(longAgo) },
		// The writer is larger than the reader because TLS writes a
		// record, and the kernel a packet, per flush.
		bw: bufio.NewWriterSize(conn, 16<<10),
	}
	// Response headers fit in 4 KiB and bodies are read in 32 KiB chunks
	// that bypass the buffer.
	pc.lr = limitReader{r: conn, remain: math.MaxInt64}
	pc.br = bufio.NewReaderSize(&pc.lr, 4<<10)
	pc.initPeek()
	return pc, nil
}

// maxResponseHeaderBytes bounds an answer's headers, 1xx answers before it
// included: net/http's transport default.
const maxResponseHeaderBytes = 10 << 20

// drained reports whether nothing follows the answer just read: a byte
// after its end (a body longer than its Content-Length, anything after an
// answer to HEAD or a 204) is not an answer to anything, and the
// connection must not be reused (RFC 9112, section 6.3). Bytes still in
// the kernel are for alive to find at the next reuse; bytes that TLS has
// already taken from the kernel only a read of the TLS connection finds,
// made here with the TCP connection under it refusing to wait.
func (pc *h1conn) drained() bool {
	if pc.br.Buffered() > 0 {
		return false
	}
	if pc.under == nil {
		return true
	}
	pc.under.noWait = true
	_, err := pc.br.Peek(1)
	pc.under.noWait = false
	return err == errWouldWait
}

// noWaitConn is the TCP connection under TLS. While noWait is set its
// reads fail at once, without a system call, with an error that TLS takes
// for a passing one (a timeout), not for the end of the connection.
type noWaitConn struct {
	net.Conn
	noWait bool
}

func (c *noWaitConn) Read(p []byte) (int, error) {
	if c.noWait {
		return 0, errWouldWait
	}
	return c.Conn.Read(p)
}

var errWouldWait error = wouldWaitError{}

type wouldWaitError struct{}

func (wouldWaitError) Error() string   { return "h1: a read would wait" }
func (wouldWaitError) Timeout() bool   { return true }
func (wouldWaitError) Temporary() bool { return true }

// checkOutbound refuses what net/http's transport refuses before sending
// (transport.go, roundTrip): a method that is not a token, and trailer
// names and values that could not go out as they are. The header's are
// checked by writeRequest, in the pass that writes them.
func checkOutbound(req *http.Request) error {
	if req.Method != "" && !validFieldName(req.Method) {
		return fmt.Errorf("h1: invalid method %q", req.Method)
	}
	if len(req.Trailer) > 0 {
		if k, bad := invalidField(req.Trailer); bad {
			return fmt.Errorf("h1: invalid trailer field %q", k)
		}
	}
	return nil
}

// errInvalidField is a request refused for a header field that could not
// go out as it is (invalidField); nothing of it went to the connection.
// spoiled says the connection is no longer as it was all the same: the
// request's end poisoned its deadline.
type errInvalidField struct {
	name    string // never the value: it may be a credential
	spoiled bool
}

func (e errInvalidField) Error() string { return fmt.Sprintf("h1: invalid header field %q", e.name) }

// invalidField returns the name of the first field of h whose name is not
// a token (the empty one included) or whose value has a control byte
// other than a tab, and true; the value itself is never shown, since it
// may be a credential.
func invalidField(h http.Header) (string, bool) {
	for k, vv := range h {
		if !validFieldName(k) || !validValues(vv) {
			return k, true
		}
	}
	return "", false
}

// validValues reports whether every one of vv passes validFieldValue.
func validValues(vv []string) bool {
	for _, v := range vv {
		if !validFieldValue(v) {
			return false
		}
	}
	return true
}

// validFieldValue reports whether v has no control byte but tab (RFC 9110,
// section 5.5).
//
// It runs on every value of every request, the bearer token (a JWT of
// hundreds of bytes) included, so it looks at eight bytes at a time: a word with no byte
// below 0x20 and none equal to 0x7f is clean, and only a word that may
// have one (a tab, or a false alarm past a byte that has) is looked at
// byte by byte.
func validFieldValue(v string) bool {
	i := 0
	for ; i+8 <= len(v); i += 8 {
		// One load: the compiler merges these eight.
		x := uint64(v[i]) | uint64(v[i+1])<<8 | uint64(v[i+2])<<16 | uint64(v[i+3])<<24 |
			uint64(v[i+4])<<32 | uint64(v[i+5])<<40 | uint64(v[i+6])<<48 | uint64(v[i+7])<<56
		if controlBytes(x) == 0 {
			continue
		}
		if !validFieldBytes(v[i : i+8]) {
			return false
		}
	}
	return validFieldBytes(v[i:])
}

// validFieldBytes is validFieldValue's byte-by-byte check.
func validFieldBytes(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
