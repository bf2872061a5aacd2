// Package proxy is the http.Handler of dinie-auth-proxy: it forwards an
// application's requests to the Dinie API with the access token injected.
//
// Each request is copied without its hop-by-hop headers and the app's own
// credentials, the token is added, and the answer is streamed back; every
// failure, token or upstream, reaches one error path and becomes an RFC 9457
// problem. The app's own token requests, CONNECT tunnels and requests the
// proxy must refuse are answered here too.
//
// The handler knows nothing of the servers it runs (Config.NewServer: one
// for the app's connections, one for the requests inside the tunnels it
// opens) or the transport behind it beyond the small interfaces and Config
// fields declared here, so that net/http's server and transport work as
// well as the faster ones in internal/h1. What a tunnel is once open (its
// bound, its relay, the listener that feeds it to the tunnels' server) is
// internal/tunnel's; connect.go is the HTTP side of CONNECT.
package proxy

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/dinie/dinie-auth-proxy/internal/tunnel"
)

// Config configures a Handler. Upstream and Tokens are required; every
// other zero value picks the default its comment names.
type Config struct {
	// Upstream is the Dinie API base URL, path prefix included, e.g.
	// https://api.dinie.com.br/api/v3.
	Upstream *url.URL

	// Tokens hands out the access token.
	Tokens TokenSource

	// Transport sends requests upstream, with UpstreamTimeout as its
	// response header timeout. Required.
	Transport http.RoundTripper

	// RecycleRequests says that Transport keeps nothing of a request once
	// the answer's body is closed (h1.Transport), so that the handler may
	// reuse the request's memory for the next one. net/http's transport may
	// still be writing a request then: false for it.
	RecycleRequests bool

	// UpstreamTimeout is Transport's response header timeout, which a 504
	// names (upstream.timeout). Required.
	UpstreamTimeout time.Duration

	// MaxReplayBytes is the largest request body kept to replay the request
	// after an upstream 401 (upstream.max_replay_bytes). Zero means never
	// replay a request that has a body.
	MaxReplayBytes int64

	// MaxInFlight is how many requests are served at once; one more is
	// answered 503 overloaded at once, never queued (limits.max_in_flight).
	// Zero means no bound.
	MaxInFlight int

	// ReplayBudgetBytes bounds the request bodies held at once, all
	// requests together, to replay them; a body that does not fit is not
	// held, and its request is sent once (upstream.replay_budget_bytes).
	// Zero means none is held.
	ReplayBudgetBytes int64

	// Retries is how many times a resend-safe request is sent again after a
	// transient failure of the upstream (upstream.retries;
	// docs/operations.md, "Retries"). Zero means never.
	Retries int

	// RetryMaxWait is the longest single wait before a retry; a Retry-After
	// longer than it goes to the app at once (upstream.retry_max_wait).
	// Required when Retries is set.
	RetryMaxWait time.Duration

	// IdempotencyKeys gives POST, PUT, PATCH and DELETE requests that carry
	// no key an X-Idempotency-Key of the proxy's, which makes them
	// resend-safe (upstream.idempotency_keys: auto). False means none is
	// added.
	IdempotencyKeys bool

	// PassAnyBearer passes on every Bearer token an app sends but the
	// stand-in, not only the session tokens Dinie issued through this
	// proxy (auth.pass_bearer: any; docs/modes-and-clients.md, "Session tokens"). False
	// passes on the session tokens only.
	PassAnyBearer bool

	// SessionTokensMax is how many session tokens are remembered at once;
	// the soonest to expire is dropped first (auth.session_tokens_max).
	// Zero means 10000.
	SessionTokensMax int

	// Clock times the waits before retries, the retry budget and the
	// session tokens' expiry. Nil means the system clock.
	Clock Clock

	// Logger receives one access line per request. Nil means no logs.
	Logger *zap.Logger

	// Registerer receives the request metrics. Nil means they are not
	// registered.
	Registerer prometheus.Registerer

	// ListenAddr is the proxy's own listen address (host:port): an
	// absolute-form request for it, or for localhost or a loopback address
	// with its port, is a base-URL request. Empty means none is.
	ListenAddr string

	// NewServer makes the servers the Handler runs in Serve: one for the
	// app's connections, one for the requests inside its tunnels, each
	// serving the handler it is given (h1.Server or http.Server, as
	// listen.proxy_server says). Nil means net/http's server, with a 10 s
	// ReadHeaderTimeout.
	NewServer func(http.Handler) Server

	// Intercept, when set, is the server side of intercepted tunnels: a
	// CONNECT to the upstream's TLS port is answered 200, its TLS
	// terminated with this config and the requests inside served like
	// those of plain tunnels. One config for every tunnel (its session
	// ticket keys let clients resume). Nil refuses such a CONNECT with 405.
	Intercept *tls.Config
	// InterceptCAFile is the ca.crt apps must trust, named in the hint a
	// failed handshake logs.
	InterceptCAFile string
	// HandshakeTimeout bounds an intercepted tunnel's TLS handshake,
	// counted from the 200. Zero means 10 s.
	HandshakeTimeout time.Duration

	// Passthrough are the patterns of the hosts whose CONNECT tunnels are
	// relayed untouched (intercept.passthrough). None refuses them with 403.
	Passthrough []string
	// MaxTunnels bounds the tunnels open at once, of every kind; one more
	// CONNECT is answered 503 overloaded (limits.max_tunnels). Zero means
	// no bound.
	MaxTunnels int
	// TunnelIdleTimeout ends a passthrough tunnel that carried nothing
	// either way for this long. Zero means 5 minutes.
	TunnelIdleTimeout time.Duration
	// HalfCloseTimeout ends a passthrough tunnel one side of which has
	// closed once the other has sent nothing for this long. Zero means 10 s.
	HalfCloseTimeout time.Duration

	// WriteStallTimeout ends an answer that net/http's server could not
	// write any of for this long (an app that stopped reading); h1.Server
	// bounds its writes itself. Zero means 60 s.
	WriteStallTimeout time.Duration
}

// Handler forwards requests to the upstream with the token injected. Create
// it with New.
type Handler struct {
	upstream         *url.URL
	router           *router
	tunnels          tunnelOwner
	maxTunnels       int
	server, inner    Server // the app's connections', and the tunnels'
	intercept        *tls.Config
	handshakeHint    string
	handshakeTimeout time.Duration
	writeStall       time.Duration
	prefix           string // upstream path prefix, without a trailing slash
	// sessionExchange is the session exchange's path upstream, joined once:
	// joined per request, a prefix such as /api/v3 makes it too long for
	// the stack, and every POST would allocate it.
	sessionExchange string
	escapedPrefix   string
	upstreamTimeout time.Duration
	log             *zap.Logger
	sender          *sender
	sessions        *sessionTokens
	passAnyBearer   bool
	clock           Clock
	buffers         *bufferPool
	metrics         *metrics
	// serving counts the requests in ServeHTTP, against maxInFlight: an
	// atomic add and compare, so that the bound costs no lock.
	serving     atomic.Int64
	maxInFlight int64
	// exchanges recycles per-request state (Config.RecycleRequests).
	exchanges *sync.Pool

	// Header values set on every outbound request, shared rather than
	// allocated each time: nothing writes into them, and an Add on a slice
	// of capacity 1 copies it.
	teTrailers, noUserAgent []string
}

// New builds a Handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Upstream == nil || (cfg.Upstream.Scheme != "http" && cfg.Upstream.Scheme != "https") || cfg.Upstream.Host == "" {
		return nil, errors.New("proxy: upstream must be an absolute http(s) URL")
	}
	if cfg.Tokens == nil {
		return nil, errors.New("proxy: no token source")
	}
	if cfg.Transport == nil {
		return nil, errors.New("proxy: no transport")
	}
	if cfg.UpstreamTimeout <= 0 {
		return nil, errors.New("proxy: no upstream timeout")
	}
	if cfg.Retries > 0 && cfg.RetryMaxWait <= 0 {
		return nil, errors.New("proxy: retries without a longest wait")
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	tunnels, err := tunnel.New(tunnel.Config{
		Passthrough:      cfg.Passthrough,
		Max:              cfg.MaxTunnels,
		IdleTimeout:      cfg.TunnelIdleTimeout,
		HalfCloseTimeout: cfg.HalfCloseTimeout,
		Addr:             listenAddr(cfg.ListenAddr),
		Logger:           cfg.Logger,
		Registerer:       cfg.Registerer,
	})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	h := &Handler{
		upstream:         cfg.Upstream,
		router:           newRouter(cfg.Upstream, cfg.ListenAddr, cfg.Intercept != nil, tunnels.Passes),
		tunnels:          tunnels,
		maxTunnels:       cfg.MaxTunnels,
		intercept:        cfg.Intercept,
		handshakeHint:    handshakeHint(cfg.InterceptCAFile),
		handshakeTimeout: cmp.Or(cfg.HandshakeTimeout, defaultHandshakeTimeout),
		writeStall:       cmp.Or(cfg.WriteStallTimeout, defaultWriteStall),
		prefix:           strings.TrimSuffix(cfg.Upstream.Path, "/"),
		escapedPrefix:    strings.TrimSuffix(cfg.Upstream.EscapedPath(), "/"),
		sessionExchange:  strings.TrimSuffix(cfg.Upstream.Path, "/") + sessionExchangePath,
		upstreamTimeout:  cfg.UpstreamTimeout,
		log:              cfg.Logger,
		teTrailers:       []string{"trailers"},
		noUserAgent:      []string{""},
	}
	if h.log == nil {
		h.log = zap.NewNop()
	}
	h.maxInFlight = int64(cfg.MaxInFlight)
	if cfg.MaxInFlight <= 0 {
		h.maxInFlight = math.MaxInt64
	}
	h.clock = cfg.Clock
	if h.clock == nil {
		h.clock = systemClock{}
	}
	retry := &retryPolicy{
		retries:   max(cfg.Retries, 0),
		maxWait:   cfg.RetryMaxWait,
		timeout:   h.upstreamTimeout,
		autoKeys:  cfg.IdempotencyKeys,
		clock:     h.clock,
		counters:  m.upstreamRetries,
		exhausted: m.retryBudgetExhausted,
	}
	if retry.retries > 0 {
		retry.budget = newRetryBudget(h.clock)
	}
	sessionsMax := cfg.SessionTokensMax
	if sessionsMax <= 0 {
		sessionsMax = 10000
	}
	h.sessions = newSessionTokens(sessionsMax, h.clock, m.sessionTokens)
	h.passAnyBearer = cfg.PassAnyBearer
	h.sender = &sender{base: cfg.Transport, tokens: cfg.Tokens, maxReplay: max(cfg.MaxReplayBytes, 0),
		metrics: m, budget: newReplayBudget(max(cfg.ReplayBudgetBytes, 0)), retry: retry}
	if cfg.RecycleRequests {
		h.exchanges = &sync.Pool{}
	}
	h.buffers = &bufferPool{}
	h.metrics = m
	newServer := cfg.NewServer
	if newServer == nil {
		newServer = func(h http.Handler) Server { return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second} }
	}
	h.server, h.inner = newServer(h), newServer(h.tunnelHandler())
	for _, srv := range []Server{h.server, h.inner} {
		if s, ok := srv.(*http.Server); ok {
			// OPTIONS * is answered by the handler (answerAsterisk), which
			// closes the connection after a request with suspect framing;
			// net/http's own answer would keep it open.
			s.DisableGeneralOptionsHandler = true
		}
	}
	return h, nil
}

// bufferPool recycles the buffers that copy response bodies, most of the
// bytes a request would allocate. It holds pointers, so that putting one
// back allocates nothing.
type bufferPool struct{ pool sync.Pool }

func (b *bufferPool) get() *[]byte {
	if buf, ok := b.pool.Get().(*[]byte); ok {
		return buf
	}
	buf := make([]byte, 32<<10)
	return &buf
}

func (b *bufferPool) put(buf *[]byte) { b.pool.Put(buf) }

func (h *Handler) newExchange(w http.ResponseWriter) *exchange {
	if h.exchanges != nil {
		if x, ok := h.exchanges.Get().(*exchange); ok {
			x.rec.ResponseWriter = w
			return x
		}
	}
	return &exchange{rec: recorder{ResponseWriter: w}}
}

// maxRecycledHeaders bounds the header map an exchange keeps: maps never
// shrink, and clearing or writing one walks all the room it ever had, so
// one request with thousands of headers must not slow every later one.
const maxRecycledHeaders = 64

// reset empties x for the next request, keeping its header map's room
// unless that grew large.
func (x *exchange) reset() {
	hdr := x.header
	if len(hdr) > maxRecycledHeaders {
		hdr = nil
	}
	clear(hdr)
	*x = exchange{header: hdr}
}

// exchange is the per-request state of a forwarded request, allocated once:
// the recorder, and the outbound request with its URL and request id.
type exchange struct {
	rec       recorder
	out       http.Request
	url       url.URL
	requestID [1]string // the X-Request-Id value when the app sent none
	header    http.Header
	// closeAfter says the connection closes after the answer (mustClose).
	closeAfter bool
	// fromSDK says the request, as sent upstream, is an SDK's (fromSDK),
	// decided in outbound's pass over the app's headers.
	fromSDK bool
}

// ServeHTTP forwards r upstream, or answers it itself: the app's token
// requests, CONNECT tunnels, and problems when the request cannot or must
// not be forwarded.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.serve(w, r, false) }

// serve is ServeHTTP, for a request that came through a tunnel or not.
//
// It records the request metrics itself rather than through promhttp's
// three wrappers: they cost six allocations and three ResponseWriter
// wrappers per request, and the recorder below already knows the status.
func (h *Handler) serve(w http.ResponseWriter, r *http.Request, inTunnel bool) {
	// A CONNECT is answered either with the 200 that hands the connection
	// to a tunnel, or with a refusal after which nothing the app sent may
	// be read as a request (docs/security.md, "What the proxy refuses").
	closeAfter := r.Method == http.MethodConnect || mustClose(w, r)
	if closeAfter {
		w.Header()["Connection"] = closeConnection
	}
	if h.serving.Add(1) > h.maxInFlight {
		h.serving.Add(-1)
		h.overloaded(w, r)
		return
	}
	defer h.serving.Add(-1)
	h.metrics.inFlight.Inc()
	defer h.metrics.inFlight.Dec()
	start := time.Now()
	x := h.newExchange(w)
	x.closeAfter = closeAfter
	rec := &x.rec
	if d, ok := w.(writeDeadliner); ok {
		rec.stall, rec.stallTimeout = d, h.writeStall
		d.SetWriteDeadline(time.Time{}) // not the one the last answer on this connection left
	}
	var id string
	if v := r.Header["X-Request-Id"]; len(v) > 0 { // canonical key: no Get
		id = v[0]
	}
	if id == "" {
		id = newRequestID()
	}
	rt := routeBaseURL
	// Deferred: a response that fails mid-body is aborted with a panic
	// (http.ErrAbortHandler), and that request must be counted and logged
	// too.
	defer func() {
		elapsed := time.Since(start)
		h.metrics.observe(methodLabel(r.Method), rec.status(), elapsed)
		// Check first: building the fields for a disabled level still costs
		// an allocation per request.
		if ce := h.log.Check(zap.InfoLevel, "request"); ce != nil {
			ce.Write(
				zap.String("method", r.Method),
				zap.String("path", r.URL.Path),
				zap.Int("status", rec.status()),
				zap.Duration("duration", elapsed),
				zap.Int64("bytes", rec.bytes),
				zap.String("request_id", id),
				zap.Bool("retried_401", rec.retried),
				// Sends upstream, the 401 replay and retries included; 0 for
				// an answer of the proxy's own.
				zap.Int("attempts", rec.attempts),
				// Where a request that is not for the base URL went: the
				// CONNECT target, or the host refused.
				zap.String("host", hostField(rt, r)),
				zap.Bool("tunnel", inTunnel))
		}
		if !rec.established {
			rec.extendWriteDeadline() // for what the server flushes after the handler
		}
		if rec.hijacked != nil {
			// Sent only now, so that whoever reads the answer finds the
			// request counted and logged.
			rec.hijacked()
		}
		if h.exchanges != nil {
			x.reset()
			h.exchanges.Put(x)
		}
	}()
	switch rt = h.router.route(r, inTunnel); rt {
	case routeTokenRequest:
		h.answerTokenRequest(rec, r)
	case routePlainTunnel, routeInterceptTunnel, routePassthrough:
		h.connect(rec, r, rt)
	case refuseConnect, refuseHost:
		if r.Method == http.MethodConnect {
			h.connect(rec, r, rt)
		} else {
			h.refuse(rec, rt, r)
		}
	case refuseMethod:
		h.refuse(rec, rt, r)
	case asteriskForm:
		answerAsterisk(rec, r)
	default:
		h.forward(x, r, id, rt)
	}
}

// hostField is the access log's host: empty for base-URL requests, whose
// Host is the proxy's own.
func hostField(rt routing, r *http.Request) string {
	if rt == routeBaseURL {
		return ""
	}
	return r.Host
}

// retryAfterOne is the Retry-After of an overloaded answer, shared: nothing
// writes into it.
var retryAfterOne = []string{"1"}

// overloaded answers a request beyond MaxInFlight. It is not logged: in a
// burst, thousands of lines would cost what the bound is there to save;
// the counter and the request metrics tell.
func (h *Handler) overloaded(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	h.writeOverloaded(w, fmt.Sprintf("this proxy is already serving %d requests (limits.max_in_flight): retry later", h.maxInFlight))
	h.metrics.observe(methodLabel(r.Method), http.StatusServiceUnavailable, time.Since(start))
}

// writeOverloaded answers 503 overloaded and counts it.
func (h *Handler) writeOverloaded(w http.ResponseWriter, detail string) {
	h.metrics.overloaded.Inc()
	w.Header()["Retry-After"] = retryAfterOne
	writeProblem(w, http.StatusServiceUnavailable, CodeOverloaded, detail)
}

// proxyError is the one place where a failure becomes the app's answer.
func (h *Handler) proxyError(w http.ResponseWriter, r *http.Request, id string, err error) {
	status, code, detail := h.classify(r, err)
	h.log.Warn("proxy error",
		zap.String("code", code),
		zap.String("request_id", id),
		zap.Error(err))
	if status == statusClientClosedRequest {
		w.WriteHeader(status)
		return
	}
	writeProblem(w, status, code, detail)
}

// unreachableError is a transport's failure to reach the upstream at all,
// TLS handshake included (h1.DialError): nothing of the request was sent.
type unreachableError interface {
	error
	Unreachable() bool
}

// errUpgrade is an upstream's 101 as net/http's transport returns it, a
// response, which the proxy never relays.
var errUpgrade = errors.New("proxy: the upstream switched protocols, which this proxy does not relay")

// switchedProtocolsError is a transport's error for an unrequested 101
// (h1.ErrSwitchingProtocols).
type switchedProtocolsError interface {
	error
	SwitchedProtocols() bool
}

func (h *Handler) classify(r *http.Request, err error) (status int, code, detail string) {
	// First: when the app has gone, whatever failed failed because of it.
	if r.Context().Err() != nil {
		return statusClientClosedRequest, "client_closed_request", ""
	}
	if te, ok := errors.AsType[*tokenError](err); ok {
		return http.StatusServiceUnavailable, CodeTokenUnavailable, te.Error()
	}
	if be, ok := errors.AsType[*clientBodyError](err); ok {
		return http.StatusBadRequest, CodeBadRequestBody, "the request body could not be read: " + be.err.Error()
	}
	if sp, ok := errors.AsType[switchedProtocolsError](err); errors.Is(err, errUpgrade) || ok && sp.SwitchedProtocols() {
		return http.StatusBadGateway, CodeUpstreamUnreachable, "the upstream answered 101 Switching Protocols, which this proxy does not relay"
	}
	if u, ok := errors.AsType[unreachableError](err); ok && u.Unreachable() {
		return http.StatusBadGateway, CodeUpstreamUnreachable, "cannot connect to the upstream: " + u.Error()
	}
	if op, ok := errors.AsType[*net.OpError](err); ok && op.Op == "dial" { // net/http's transport
		return http.StatusBadGateway, CodeUpstreamUnreachable, "cannot connect to the upstream: " + op.Err.Error()
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		return http.StatusGatewayTimeout, CodeUpstreamTimeout,
			fmt.Sprintf("the upstream did not answer within %v", h.upstreamTimeout)
	}
	return http.StatusBadGateway, CodeUpstreamUnreachable, "the upstream closed the connection before answering: " + err.Error()
}

// methodLabel keeps the method label's values few, as promhttp does: the
// standard methods in lower case, anything else "unknown".
func methodLabel(m string) string {
	switch m {
	case http.MethodGet:
		return "get"
	case http.MethodPost:
		return "post"
	case http.MethodPut:
		return "put"
	case http.MethodPatch:
		return "patch"
	case http.MethodDelete:
		return "delete"
	case http.MethodHead:
		return "head"
	case http.MethodOptions:
		return "options"
	case http.MethodConnect:
		return "connect"
	case http.MethodTrace:
		return "trace"
	}
	return "unknown"
}

// newRequestID returns 16 hex digits: unique enough to find a request in
// the logs; not a secret. Always 16, so that they are written without
// FormatUint's loop over digits: this runs on every request.
func newRequestID() string {
	var raw [8]byte
	binary.BigEndian.PutUint64(raw[:], rand.Uint64())
	var id [16]byte
	hex.Encode(id[:], raw[:])
	return string(id[:])
}

// recorder remembers, for the metrics and the access log, the status and
// size of an answer and whether a 401 retry happened on the way.
type recorder struct {
	http.ResponseWriter
	code    int
	bytes   int64
	retried bool // set by the transport, on the handler's goroutine
	// attempts is how many times the transport sent the request upstream.
	attempts int
	// hijacked, when set, sends an answer written on a hijacked connection
	// and closes it.
	hijacked func()
	// stall, when set, bounds each write: the server (net/http's) does not
	// bound them itself.
	stall        writeDeadliner
	stallTimeout time.Duration
	// established says a tunnel took the connection over: its deadlines
	// are no longer the answer's.
	established bool
}

// writeDeadliner is net/http's ResponseWriter, whose connection's write
// deadline a handler may move.
type writeDeadliner interface{ SetWriteDeadline(time.Time) error }

// defaultWriteStall is how long an answer may make no progress: an app
// that stops reading must not hold its request's place for ever, and one
// that reads, however slowly (a long download, Server-Sent Events), is
// never cut.
const defaultWriteStall = 60 * time.Second

// extendWriteDeadline gives the next write stallTimeout to make progress.
func (r *recorder) extendWriteDeadline() {
	if r.stall != nil {
		r.stall.SetWriteDeadline(time.Now().Add(r.stallTimeout))
	}
}

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	r.extendWriteDeadline()
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) status() int {
	if r.code == 0 {
		return http.StatusOK
	}
	return r.code
}

// Unwrap lets http.ResponseController reach Flush, which streaming
// responses (Server-Sent Events) need.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Flush is for callers that only know the http.Flusher interface.
func (r *recorder) Flush() {
	r.extendWriteDeadline()
	_ = http.NewResponseController(r.ResponseWriter).Flush()
}
