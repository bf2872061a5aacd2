package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Tunnels is a net.Listener whose connections are the insides of the CONNECT
// tunnels that the Handler opens: a server serving it (with
// Handler.TunnelHandler) sees each as if it had accepted it, so tunnels get
// the same keep-alive, timeouts and graceful shutdown as any connection.
//
// Clients that tunnel plain HTTP (Node's undici ProxyAgent) send CONNECT
// even for http:// URLs (README, "Using it from an application").
type Tunnels struct {
	addr      net.Addr
	conns     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
}

// NewTunnels returns a Tunnels that reports addr, the proxy's own listen
// address, as its address.
func NewTunnels(addr net.Addr) *Tunnels {
	return &Tunnels{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

// Accept waits for the next tunnel.
func (t *Tunnels) Accept() (net.Conn, error) {
	select {
	case c := <-t.conns:
		return c, nil
	case <-t.closed:
		return nil, net.ErrClosed
	}
}

// Close makes Accept fail and the Handler refuse new tunnels. Tunnels
// already accepted are their server's to close.
func (t *Tunnels) Close() error {
	t.closeOnce.Do(func() { close(t.closed) })
	return nil
}

// Addr is the proxy's listen address.
func (t *Tunnels) Addr() net.Addr { return t.addr }

// hand gives c to the server; false means the listener is closed and c is
// the caller's to close.
func (t *Tunnels) hand(c net.Conn) bool {
	select {
	case <-t.closed:
		return false
	default:
	}
	select {
	case t.conns <- c:
		return true
	case <-t.closed:
		return false
	}
}

// TunnelHandler serves the requests inside tunnels: they are in origin form
// with the upstream's Host, and are served exactly as absolute-form requests
// for that host are; a request for another host is refused. Inside an
// intercepted tunnel (r.TLS set by the server) the scheme is https, so that
// the Host's port is compared with 443.
func (h *Handler) TunnelHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.serve(w, r, true) })
}

// openTunnel answers a CONNECT with 200 and hands the connection to the
// tunnels' server.
func (h *Handler) openTunnel(rec *recorder, r *http.Request) {
	if h.tunnels == nil {
		h.refuse(rec, refuseConnect, r)
		return
	}
	conn, ok := h.establish(rec)
	if !ok {
		return
	}
	if !h.tunnels.hand(conn) {
		conn.Close() // shutting down
		return
	}
	h.metrics.tunnels.WithLabelValues("plain").Inc()
}

// establish takes the connection over and answers 200: what follows is the
// tunnel's. false means there is no tunnel, and the answer is written.
func (h *Handler) establish(rec *recorder) (net.Conn, bool) {
	conn, brw, err := http.NewResponseController(rec.ResponseWriter).Hijack()
	if err != nil {
		h.metrics.tunnels.WithLabelValues("refused").Inc()
		writeProblem(rec, http.StatusInternalServerError, CodeConnectNotSupported,
			"this server cannot open tunnels: "+err.Error())
		return nil, false
	}
	// The outer server's deadlines were for reading a request's head; the
	// tunnel's server sets its own.
	conn.SetDeadline(time.Time{})
	rec.code = http.StatusOK
	brw.WriteString("HTTP/1.1 200 Connection established\r\n\r\n")
	if err := brw.Flush(); err != nil {
		conn.Close()
		return nil, false
	}
	if n := brw.Reader.Buffered(); n > 0 {
		// The client did not wait for our 200: what it sent already is the
		// tunnel's first bytes.
		early, _ := brw.Reader.Peek(n)
		conn = &prereadConn{Conn: conn, r: io.MultiReader(bytes.NewReader(bytes.Clone(early)), conn)}
	}
	return conn, true
}

// prereadConn is a connection with bytes already read from it in front.
type prereadConn struct {
	net.Conn
	r io.Reader
}

func (c *prereadConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite passes a half-close on, so that a relay can end one direction
// and keep the other.
func (c *prereadConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// reasonWriter is a ResponseWriter whose status line can carry a reason
// phrase of the caller's: the refusals say what to do there, because
// clients show the status line more often than the body.
type reasonWriter interface {
	WriteHeaderReason(code int, reason string)
}

// refuse answers a request that must not be forwarded.
func (h *Handler) refuse(rec *recorder, why routing, r *http.Request) {
	var status int
	var code, reason, detail string
	switch why {
	case refuseConnect:
		status, code = http.StatusMethodNotAllowed, CodeConnectNotSupported
		reason = "Use http:// with HTTP_PROXY, or the proxy as base URL"
		detail = "CONNECT to the upstream's TLS port tunnels TLS, which cannot carry an injected token: use the http scheme with HTTP_PROXY, this proxy as the base URL, or enable intercept.enabled"
	case refuseMethod:
		status, code = http.StatusMethodNotAllowed, CodeMethodNotAllowed
		reason = "TRACE and TRACK are not forwarded"
		detail = "this proxy never forwards " + r.Method + ": an upstream that echoed the request would hand back the token the proxy injects"
	default:
		status, code = http.StatusForbidden, CodeHostNotAllowed
		reason = "Only " + h.upstream.Hostname() + " goes through this proxy; add other hosts to NO_PROXY"
		detail = "this proxy only forwards to " + h.upstream.Hostname() + ", not to " + r.Host
	}
	if r.Method == http.MethodConnect {
		h.metrics.tunnels.WithLabelValues("refused").Inc()
	}
	body := problemBody(status, code, detail)
	if rw, ok := rec.ResponseWriter.(reasonWriter); ok {
		setProblemHeaders(rec.Header())
		rec.code = status
		rw.WriteHeaderReason(status, reason)
		rec.Write(body)
		return
	}
	if conn, brw, err := http.NewResponseController(rec.ResponseWriter).Hijack(); err == nil {
		// net/http's server writes the standard phrase: the answer is
		// written by hand instead, and the connection closes after it.
		fmt.Fprintf(brw, "HTTP/1.1 %d %s\r\nContent-Type: application/problem+json\r\nCache-Control: no-store\r\nConnection: close\r\nContent-Length: %d\r\n\r\n",
			status, reason, len(body))
		brw.Write(body)
		rec.code, rec.bytes = status, int64(len(body))
		rec.hijacked = func() {
			brw.Flush()
			conn.Close()
		}
		return
	}
	setProblemHeaders(rec.Header())
	rec.WriteHeader(status)
	rec.Write(body)
}
