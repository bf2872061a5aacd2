package h1

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/textproto"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Server serves an http.Handler over HTTP/1.x, the counterpart of
// Transport on the app's side.
//
// net/http's server starts a goroutine per request only to learn whether
// the app hangs up, and clones and sorts the response headers, a large
// share of a small request's cost (bench/README.md). Here one goroutine per
// connection reads each request with net/http's parser (the ordinary head
// with a strict reader held to its result, fasthead.go), runs the handler
// and writes the answer; an app that hangs up while its request waits is
// found by a shared watcher that peeks at such connections a few times a
// second.
//
// It speaks HTTP/1.0 and 1.1 only (no h2c, no upgrades), which is all an
// app talking to a local sidecar in plain HTTP uses. Hijack is there for
// CONNECT tunnels.
//
// With RecycleRequests, a connection reads each request into the space
// of the one before (see there).
type Server struct {
	Handler http.Handler
	// RecycleRequests reads each request on a connection into the URL,
	// header map and values of the one before, emptied once its answer is
	// out: three allocations fewer per request. It asks of the handler
	// that nothing keep the Request's URL or Header, or the values in
	// them, past ServeHTTP, including whatever it handed them to: a
	// Transport of this package keeps nothing of a request once it has
	// returned its answer, net/http's may still be writing it. A
	// hijacked connection's request is never reused.
	RecycleRequests bool
	// ReadHeaderTimeout bounds the wait for a request's line and headers,
	// counted from its first byte. Zero means no bound.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a connection that waits longer than this for its
	// next request (or up to a sixteenth less, at most a second: the
	// deadline is not moved for every request). Zero means 90 s.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's line and headers; larger ones are
	// answered 431. Zero means 1 MiB.
	MaxHeaderBytes int
	// WriteStallTimeout closes a connection whose answer made no progress
	// for this long: an app that stopped reading must not hold its
	// request for ever, while one that reads slowly (a long download,
	// Server-Sent Events) is never cut. Zero means 60 s.
	WriteStallTimeout time.Duration
	// Logger receives handler panics and accept errors. Nil means none.
	Logger *zap.Logger

	initOnce sync.Once
	done     chan struct{} // closed when the watcher must stop
	// writers lends connections their buffered writer while they answer:
	// an idle keep-alive connection needs none.
	writers  sync.Pool
	stopOnce sync.Once

	mu         sync.Mutex
	listeners  map[net.Listener]struct{}
	conns      map[*serverConn]struct{}
	noConns    chan struct{} // closed when conns empties after shutdown began; nil before
	inShutdown atomic.Bool
}

// goneCheckInterval is how often connections with a request in the
// handler and nothing more to read are peeked at for a hang-up.
const goneCheckInterval = 200 * time.Millisecond

// pendingMax is how much of a body of unknown length is held back before
// the headers go out: an answer that fits gets a Content-Length instead
// of chunks (net/http's bufferBeforeChunkingSize).
const pendingMax = 2048

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.done = make(chan struct{})
		s.listeners = map[net.Listener]struct{}{}
		s.conns = map[*serverConn]struct{}{}
		if s.Logger == nil {
			s.Logger = zap.NewNop()
		}
		go s.watch()
	})
}

// Serve accepts connections on ln until Shutdown or Close, and then
// returns http.ErrServerClosed, as http.Server.Serve does.
func (s *Server) Serve(ln net.Listener) error {
	s.init()
	s.mu.Lock()
	if s.inShutdown.Load() {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		rwc, err := ln.Accept()
		if err != nil {
			if s.inShutdown.Load() {
				return http.ErrServerClosed
			}
			if te, ok := err.(interface{ Temporary() bool }); !ok || !te.Temporary() {
				return err
			}
			// Out of file descriptors and the like: wait, as net/http does,
			// rather than spin or give up on the listener.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.Logger.Warn("accept failed; retrying", zap.Duration("in", backoff), zap.Error(err))
			select {
			case <-time.After(backoff):
			case <-s.done:
			}
			continue
		}
		backoff = 0
		c := s.newConn(rwc)
		if c == nil {
			rwc.Close()
			return http.ErrServerClosed
		}
		go c.serve()
	}
}

// Shutdown stops accepting, closes idle connections, lets requests in
// flight finish (their connections close after the answer) and returns
// when none is left, or with ctx's error when it ends first.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.mu.Lock()
	s.stopAccepting()
	if s.noConns == nil {
		s.noConns = make(chan struct{})
		if len(s.conns) == 0 {
			close(s.noConns)
		}
	}
	for c := range s.conns {
		c.closeIfIdle()
	}
	noConns := s.noConns
	s.mu.Unlock()
	select {
	case <-noConns:
		s.stopWatch()
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops accepting and closes every connection at once; requests in
// flight see their context cancelled.
func (s *Server) Close() error {
	s.init()
	s.mu.Lock()
	s.stopAccepting()
	for c := range s.conns {
		c.rwc.Close()
		c.abandon()
	}
	s.mu.Unlock()
	s.stopWatch()
	return nil
}

// stopAccepting marks the server as shutting down and closes its
// listeners; s.mu is held.
func (s *Server) stopAccepting() {
	s.inShutdown.Store(true)
	for ln := range s.listeners {
		ln.Close()
	}
}

func (s *Server) stopWatch() { s.stopOnce.Do(func() { close(s.done) }) }

// watch cancels the requests of apps that hung up while their request was
// in the handler. The handler may be waiting for a token or the upstream
// for a long time; without this it would learn of the hang-up only when it
// writes the answer.
func (s *Server) watch() {
	t := time.NewTicker(goneCheckInterval)
	defer t.Stop()
	var watched []*serverConn
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		s.mu.Lock()
		for c := range s.conns {
			if c.watched.Load() && !c.gone.Load() {
				watched = append(watched, c)
			}
		}
		s.mu.Unlock()
		for _, c := range watched {
			if peerGone(c.rwc) {
				c.abandon()
			}
		}
		clear(watched)
		watched = watched[:0]
	}
}

func (s *Server) newConn(rwc net.Conn) *serverConn {
	maxHeader := s.MaxHeaderBytes
	if maxHeader <= 0 {
		maxHeader = 1 << 20
	}
	c := &serverConn{s: s, rwc: rwc, remoteAddr: rwc.RemoteAddr().String(), headerLimit: int64(maxHeader) + 4096}
	c.sock = newSysConn(rwc)
	c.lr.r, c.lr.remain = c.sock, c.headerLimit
	c.sw.conn, c.sw.timeout = c.sock, s.WriteStallTimeout
	if c.sw.timeout <= 0 {
		c.sw.timeout = 60 * time.Second
	}
	c.br = bufio.NewReaderSize(&c.lr, 4<<10)
	c.res.own = make(http.Header, 8)
	c.res.header = c.res.own
	if tc, ok := rwc.(*tls.Conn); ok {
		// An intercepted tunnel, handshake done: its state is the same for
		// every request on it, so it is taken once, as net/http does.
		st := tc.ConnectionState()
		c.tlsState = &st
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inShutdown.Load() {
		return nil
	}
	s.conns[c] = struct{}{}
	return c
}

const (
	stateIdle   int32 = iota // waiting for a request's first byte
	stateActive              // reading, handling or answering a request
	stateClosed              // closed by Shutdown while idle
)

// serverConn is one app connection, served by one goroutine.
type serverConn struct {
	s           *Server
	rwc         net.Conn
	sock        net.Conn // rwc, or the same socket with cheaper reads and writes (sysconn_linux.go)
	remoteAddr  string
	tlsState    *tls.ConnectionState // set for a *tls.Conn: every request's TLS
	lr          limitReader
	br          *bufio.Reader
	bw          *bufio.Writer // from s.writers, from a request's first byte to its answer
	sw          stallWriter   // what bw writes to
	headerLimit int64
	deadline    readDeadline
	// current is the context of the request in the handler, for the
	// watcher and Close to end; gone says the app hung up or the server
	// closed, so that a request read just after that ends at once too.
	current atomic.Pointer[requestContext]
	gone    atomic.Bool
	state   atomic.Int32
	// watched is set while a request is in the handler with nothing more
	// to read from the app: only then can a peek tell a hang-up from data.
	watched atomic.Bool
	// hijacked says the handler took the connection over: it is no longer
	// the server's to read, answer on or close. Set and read on the
	// connection's goroutine.
	hijacked bool
	// wmu orders a 100 Continue, written by whoever first reads the body,
	// with the answer's headers; taken only for requests that expect it.
	wmu sync.Mutex
	res response // reused: a ResponseWriter is dead once ServeHTTP returns
	// fr is what a fast-read request points to, reused as res is when
	// the server recycles requests.
	fr fastRequest
	// spare is an empty header map for the next request's answer, lent
	// through its context (spareHeader).
	spare http.Header
	// head is the current request's line and headers as they came.
	head      []byte
	afterPost bool // the last request was a POST
}

func (c *serverConn) serve() {
	defer c.close()
	for {
		if !c.waitForRequest() {
			return
		}
		c.bw = c.s.writer(&c.sw)
		req, ctx, err := c.readRequest()
		if err != nil {
			c.replyError(err)
			return
		}
		if !c.handle(req, ctx) || c.s.inShutdown.Load() {
			if c.hijacked {
				return
			}
			c.closeWriteAndWait()
			return
		}
		// The answer is flushed, and its body closed so that no reader
		// can send a 100 Continue any more: the writer can go back. On a
		// closing connection it is left to the collector instead, as is
		// the request.
		c.bw.Reset(nil) // the pool must not keep the connection
		c.s.writers.Put(c.bw)
		c.bw = nil
		if c.s.RecycleRequests {
			c.fr.release()
		}
	}
}

// writer lends a buffered writer to w.
func (s *Server) writer(w io.Writer) *bufio.Writer {
	if bw, ok := s.writers.Get().(*bufio.Writer); ok {
		bw.Reset(w)
		return bw
	}
	return bufio.NewWriterSize(w, 4<<10)
}

// waitForRequest waits up to IdleTimeout for the next request's first
// byte; false means the connection is done.
func (c *serverConn) waitForRequest() bool {
	c.state.Store(stateIdle)
	if c.s.inShutdown.Load() {
		return false
	}
	if c.br.Buffered() == 0 {
		idle := c.s.IdleTimeout
		if idle <= 0 {
			idle = 90 * time.Second
		}
		c.deadline.extend(c.rwc, time.Now().Add(idle), idle)
		if _, err := c.br.Peek(1); err != nil {
			return false
		}
	}
	// Shutdown closes only idle connections: once this succeeds, the
	// request is answered before the connection closes.
	if !c.state.CompareAndSwap(stateIdle, stateActive) {
		return false
	}
	if buf, _ := c.br.Peek(c.br.Buffered()); bytes.Contains(buf, []byte("\r\n\r\n")) {
		// The headers are all here and cannot stall: the idle deadline may
		// stay until the next request (bodies get none of their own).
		return true
	}
	if d := c.s.ReadHeaderTimeout; d > 0 {
		c.deadline.set(c.rwc, time.Now().Add(d))
	} else {
		c.deadline.set(c.rwc, time.Time{})
	}
	return true
}

func (c *serverConn) closeIfIdle() {
	if c.state.CompareAndSwap(stateIdle, stateClosed) {
		c.rwc.Close()
	}
}

func (c *serverConn) close() {
	if !c.hijacked {
		c.rwc.Close()
	}
	s := c.s
	s.mu.Lock()
	delete(s.conns, c)
	if s.noConns != nil && len(s.conns) == 0 {
		select {
		case <-s.noConns:
		default:
			close(s.noConns)
		}
	}
	s.mu.Unlock()
}

// abandon ends the request in the handler, and any read after it, because
// the app hung up or the server closed.
func (c *serverConn) abandon() {
	c.gone.Store(true)
	if ctx := c.current.Load(); ctx != nil {
		ctx.end()
	}
}

var errTooLarge = errors.New("request line and headers too large")

// statusError is a request refused before the handler, with its status.
type statusError struct {
	code int
	text string
}

func (e statusError) Error() string { return e.text }

// readRequest reads the next request. Its context ends when the handler
// returns, or earlier when the app hangs up or the server closes.
//
// It does what net/http's server does around its parser (server.go,
// readRequest and serve), which http.ReadRequest alone does not.
func (c *serverConn) readRequest() (*http.Request, *requestContext, error) {
	if c.afterPost {
		// RFC 9112, section 2.2: old clients send a CRLF after a POST body.
		// net/http's server drops up to four such bytes, after a POST only.
		peek, _ := c.br.Peek(4) // an error is ReadRequest's to report
		n := 0
		for n < len(peek) && (peek[n] == '\r' || peek[n] == '\n') {
			n++
		}
		c.br.Discard(n)
	}
	// What waitForRequest's peek buffered counts against the limit too.
	c.lr.remain = c.headerLimit - int64(c.br.Buffered())
	// The request's head is kept as it came: http.ReadRequest drops the
	// Host header and, in some cases, Content-Length and Transfer-Encoding,
	// which the checks below need to see.
	buffered, _ := c.br.Peek(c.br.Buffered())
	c.head = append(c.head[:0], buffered...)
	// The ordinary request is read by the strict fast reader (fasthead.go),
	// which takes only a head wholly in the buffer, and the buffer is
	// smaller than the limit (MaxHeaderBytes and 4 KiB): net/http would not
	// have reached it either. Anything else is read by net/http, from the
	// same unread bytes. The checks below are made on either.
	ctx := newRequestContext()
	var space *fastRequest // nil: the reader's own
	if c.s.RecycleRequests {
		space = &c.fr
	}
	req, ok := fastReadRequest(c.br, ctx, space)
	if !ok {
		c.lr.rec = &c.head
		var err error
		req, err = http.ReadRequest(c.br)
		c.lr.rec = nil
		if err != nil {
			if c.lr.remain <= 0 {
				return nil, nil, errTooLarge
			}
			return nil, nil, err
		}
		req = req.WithContext(ctx)
		// golang/go#34540: the parser lets a name with a space through
		// ("Content-Length : 5"), which would then not frame the body. The
		// fast reader takes only names that are tokens.
		for k := range req.Header {
			if !validFieldName(k) {
				return nil, nil, statusError{http.StatusBadRequest, "invalid header name"}
			}
		}
	}
	c.lr.remain = math.MaxInt64
	head := c.head[:len(c.head)-c.br.Buffered()]
	if cap(c.head) > 64<<10 {
		c.head = nil // do not keep a large buffer for the connection's life
	}
	if req.ProtoMajor != 1 {
		return nil, nil, statusError{http.StatusHTTPVersionNotSupported, "unsupported protocol version"}
	}
	c.afterPost = req.Method == http.MethodPost
	// The parser refuses values with control bytes itself, so net/http's
	// check of values is not repeated here (differential_test.go).
	if err := checkFraming(req, head); err != nil {
		return nil, nil, err
	}
	req.RemoteAddr = c.remoteAddr
	req.TLS = c.tlsState
	return req, ctx, nil
}

// checkFraming makes the checks that need the headers http.ReadRequest
// dropped, looking them up in the request's head, only for the requests
// where they matter.
func checkFraming(req *http.Request, head []byte) error {
	http11 := req.ProtoAtLeast(1, 1)
	// The Host header is needed unless the request's Host came from it and
	// is not empty (an empty one is allowed, a missing one is not).
	hostUnknown := req.URL.Host != "" || req.Host == "" && http11 && req.Method != http.MethodConnect
	if !hostUnknown && len(req.TransferEncoding) == 0 && http11 {
		if !validHost(req.Host) {
			return statusError{http.StatusBadRequest, "malformed Host header"}
		}
		return nil
	}
	raw := rawHeader(head)
	hosts, haveHost := raw["Host"]
	if http11 && (!haveHost || len(hosts) == 0) && req.Method != http.MethodConnect {
		return statusError{http.StatusBadRequest, "missing required Host header"}
	}
	if len(hosts) == 1 && !validHost(hosts[0]) {
		return statusError{http.StatusBadRequest, "malformed Host header"}
	}
	if _, te := raw["Transfer-Encoding"]; te && !http11 {
		// RFC 9112, section 6.1: faulty framing. net/http's parser ignores
		// the header and would read a chunked body as the next request.
		return statusError{http.StatusBadRequest, "Transfer-Encoding in an HTTP/1.0 request"}
	}
	if _, cl := raw["Content-Length"]; cl && len(req.TransferEncoding) > 0 {
		// RFC 9112, section 6.1: the body is read as chunked, but the
		// sender may have meant the Content-Length; whatever follows the
		// last chunk must not be read as a request.
		req.Close = true
	}
	return nil
}

// rawHeader parses the header fields of a request's head again, without
// dropping any.
func rawHeader(head []byte) textproto.MIMEHeader {
	tp := textproto.NewReader(bufio.NewReaderSize(bytes.NewReader(head), len(head)))
	if _, err := tp.ReadLine(); err != nil {
		return nil
	}
	h, _ := tp.ReadMIMEHeader()
	return h
}

// replyError answers a request that could not be read, the way net/http's
// server does, and the connection closes.
func (c *serverConn) replyError(err error) {
	const headers = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
	var se statusError
	switch {
	case errors.Is(err, errTooLarge):
		c.bw.WriteString("HTTP/1.1 431 Request Header Fields Too Large" + headers + "431 Request Header Fields Too Large")
	case unsupportedTransferEncoding(err):
		c.bw.WriteString("HTTP/1.1 501 Not Implemented" + headers + "Unsupported transfer encoding")
	case commonNetReadError(err):
		return // the app left or timed out: nobody to answer
	case errors.As(err, &se):
		status := strconv.Itoa(se.code) + " " + http.StatusText(se.code)
		c.bw.WriteString("HTTP/1.1 " + status + ": " + se.text + headers + status + ": " + se.text)
	default:
		c.bw.WriteString("HTTP/1.1 400 Bad Request" + headers + "400 Bad Request")
	}
	c.closeWriteAndWait()
}

// unsupportedTransferEncoding recognizes http.ReadRequest's error for a
// transfer coding it cannot read, by its text: the type is unexported.
// TestH1ServerRefusesMalformedRequests catches a change of wording.
func unsupportedTransferEncoding(err error) bool {
	msg := err.Error()
	return strings.HasPrefix(msg, "unsupported transfer encoding") || strings.HasPrefix(msg, "too many transfer encodings")
}

func commonNetReadError(err error) bool {
	if err == io.EOF {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "read"
}

// closeWriteAndWait sends what is buffered and a FIN, then reads what the
// app still sends for a moment: closing a socket with unread data makes
// the kernel send a reset, which can destroy the answer before the app
// reads it.
func (c *serverConn) closeWriteAndWait() {
	c.bw.Flush()
	if tc, ok := c.rwc.(interface{ CloseWrite() error }); ok {
		tc.CloseWrite()
	}
	c.deadline.set(c.rwc, time.Now().Add(500*time.Millisecond))
	io.Copy(io.Discard, io.LimitReader(c.rwc, 256<<10))
}

// handle runs the handler for req and reports whether the connection can
// carry another request.
func (c *serverConn) handle(req *http.Request, ctx *requestContext) bool {
	res := &c.res
	res.reset(c, req)
	var body *serverBody
	if req.Body != http.NoBody {
		body = &serverBody{rc: req.Body, c: c, res: res, length: req.ContentLength}
		req.Body = body
		res.body = body
		// Bodies stream for as long as they take: no deadline.
		c.deadline.set(c.rwc, time.Time{})
	}
	// As net/http's server: only the first Expect value counts, and an
	// empty one is no expectation.
	if expect := req.Header["Expect"]; len(expect) > 0 && expect[0] != "" {
		if !containsToken(expect[:1], "100-continue") {
			ctx.end()
			c.bw.WriteString("HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			return false
		}
		if body != nil && req.ProtoAtLeast(1, 1) {
			body.needContinue = true
			res.expectContinue = true
		}
	}
	// Watched from the start when nothing more is to come from the app: no
	// body, or one already wholly buffered (a POST waiting for a token);
	// otherwise once the body has been read (serverBody.Read).
	c.watched.Store(body == nil && c.br.Buffered() == 0 ||
		body != nil && !body.needContinue && req.ContentLength > 0 && int64(c.br.Buffered()) == req.ContentLength)
	ctx.spare, c.spare = c.spare, nil // nobody has seen ctx yet: no lock
	c.current.Store(ctx)
	if c.gone.Load() {
		ctx.end()
	}
	ok := c.runHandler(res, req)
	c.current.Store(nil)
	ctx.end()
	if c.hijacked {
		return false
	}
	c.spare = spareHeader(ctx) // not taken: lent again next time
	if body != nil && !body.closeForReuse() {
		res.closeAfter = true
	}
	c.watched.Store(false)
	if !ok {
		return false
	}
	res.finish()
	if c.spare == nil {
		c.spare = res.takeAdopted()
	}
	return !res.closeAfter
}

// runHandler calls the handler; false means it panicked, and the
// connection must go (http.ErrAbortHandler is the handler's way to say
// so).
func (c *serverConn) runHandler(res *response, req *http.Request) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				c.s.Logger.Error("handler panicked",
					zap.String("remote_addr", c.remoteAddr),
					zap.Any("panic", p),
					zap.ByteString("stack", debug.Stack()))
			}
			ok = false
		}
	}()
	c.s.Handler.ServeHTTP(res, req)
	return true
}
