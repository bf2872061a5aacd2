package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/dinie/dinie-auth-proxy/internal/tunnel"
)

// This file is the HTTP side of CONNECT (docs/modes-and-clients.md, "Apps
// that keep https:// URLs"; docs/security.md, "Tunnels: bounds and
// edges"): which tunnel a CONNECT opens,
// the 200 that opens it, the TLS of an intercepted one, and the problems
// that refuse one. What a tunnel is once open (its bound, its relay, the
// listener that feeds it to the tunnels' server) is internal/tunnel's.

// tunnelOwner is what the Handler needs of the tunnels it opens
// (internal/tunnel.Tunnels).
type tunnelOwner interface {
	// Passes reports whether a CONNECT to host:port is for a passthrough
	// pattern.
	Passes(host, port string) bool
	// Open counts a tunnel, and dials a passthrough one.
	Open(ctx context.Context, kind tunnel.Kind, authority string) (*tunnel.Slot, error)
	// Listener feeds the tunnels given to Slot.Serve to a server.
	Listener() net.Listener
	Shutdown(ctx context.Context) error
	Close() error
}

// defaultHandshakeTimeout bounds the TLS handshake of an intercepted
// tunnel, as ReadHeaderTimeout bounds a request's head: a client that
// connects and says nothing must not hold a tunnel for long.
const defaultHandshakeTimeout = 10 * time.Second

// connectWithBody reports a CONNECT that carries a body: its framing says
// the bytes after the head are the request's, not the tunnel's, and taken
// as the tunnel's first bytes they would be a request sent with the token
// (RFC 9110, section 9.3.6: a CONNECT has no content).
func connectWithBody(r *http.Request) bool {
	return len(r.TransferEncoding) > 0 || r.ContentLength != 0
}

// connect answers a CONNECT that is not inside a tunnel. Whatever the
// answer, unless it is the 200 that opens a tunnel, the connection closes
// after it (Connection: close, set in serve): the app may already have
// sent what it meant for the tunnel, which must never be read as a
// request.
func (h *Handler) connect(rec *recorder, r *http.Request, rt routing) {
	if connectWithBody(r) {
		h.metrics.tunnels.WithLabelValues("refused").Inc()
		writeProblem(rec, http.StatusBadRequest, CodeBadRequest,
			"a CONNECT request has no body (RFC 9110, section 9.3.6); send the tunnel's bytes after the 200")
		return
	}
	var kind tunnel.Kind
	switch rt {
	case routePlainTunnel:
		kind = tunnel.Plain
	case routeInterceptTunnel:
		kind = tunnel.Intercepted
	case routePassthrough:
		kind = tunnel.Passthrough
	default:
		h.refuse(rec, rt, r)
		return
	}
	slot, err := h.tunnels.Open(r.Context(), kind, r.URL.Host)
	if err != nil {
		h.refuseTunnel(rec, r, err)
		return
	}
	client, ok := h.establish(rec)
	if !ok {
		slot.Release()
		return
	}
	switch kind {
	case tunnel.Passthrough:
		h.metrics.tunnels.WithLabelValues("passthrough").Inc()
		slot.Relay(client)
	case tunnel.Intercepted:
		// The handshake runs on the tunnel's own goroutine, not this
		// request's: it holds no limits.max_in_flight slot while the client
		// takes its time.
		slot.Serve(client, func(c net.Conn) (net.Conn, error) { return h.handshake(c, r.URL.Host) })
	default:
		h.metrics.tunnels.WithLabelValues("plain").Inc()
		slot.Serve(client, nil)
	}
}

// refuseTunnel answers a CONNECT that internal/tunnel would not open.
func (h *Handler) refuseTunnel(rec *recorder, r *http.Request, err error) {
	switch {
	case errors.Is(err, tunnel.ErrNotAllowed):
		h.log.Info("passthrough tunnel refused", zap.String("host", r.URL.Host), zap.Error(err))
		h.refuse(rec, refuseHost, r)
	case errors.Is(err, tunnel.ErrFull):
		h.metrics.tunnels.WithLabelValues("refused").Inc()
		h.writeOverloaded(rec, fmt.Sprintf("this proxy already has %d tunnels open (limits.max_tunnels): retry later", h.maxTunnels))
	case errors.Is(err, tunnel.ErrClosed):
		h.metrics.tunnels.WithLabelValues("refused").Inc()
		h.writeOverloaded(rec, "this proxy is shutting down")
	default:
		h.metrics.tunnels.WithLabelValues("passthrough").Inc()
		h.log.Warn("passthrough tunnel: cannot connect", zap.String("host", r.URL.Host), zap.Error(err))
		// The detail names the host and port only: the resolver's and the
		// dialler's words (addresses, the resolver's own) stay in the log.
		writeProblem(rec, http.StatusBadGateway, CodeUpstreamUnreachable, "cannot connect to "+r.URL.Host)
	}
}

// handshake terminates the client's TLS in an intercepted tunnel with the
// interception leaf, within handshakeTimeout of the 200; the requests
// inside then carry r.TLS and are routed with the https scheme.
func (h *Handler) handshake(conn net.Conn, host string) (net.Conn, error) {
	// One shared config for every tunnel: its session ticket keys are what
	// lets a client's next tunnel resume.
	tc := tls.Server(conn, h.intercept)
	// The deadline alone bounds the handshake, reads and writes alike; a
	// context with a timeout would cost a goroutine in crypto/tls that
	// ends it no sooner.
	conn.SetDeadline(time.Now().Add(h.handshakeTimeout))
	if err := tc.Handshake(); err != nil {
		h.metrics.tunnels.WithLabelValues("handshake_failed").Inc()
		h.log.Warn("TLS handshake in a tunnel failed; the app may not trust the interception CA",
			zap.String("host", host),
			zap.String("hint", h.handshakeHint),
			zap.Error(err))
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	// Counted before the server has it: the tunnel's requests may be
	// answered before this goroutine runs again.
	h.metrics.tunnels.WithLabelValues("intercepted").Inc()
	return tc, nil
}

// handshakeHint says what a failed handshake most often means and what to
// set, naming the files in the CA's directory.
func handshakeHint(caFile string) string {
	if caFile == "" {
		return "make the app trust the CA given by intercept.ca_cert_file"
	}
	dir := filepath.Dir(caFile)
	return "make the app trust " + caFile + ": SSL_CERT_FILE, REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE=" +
		filepath.Join(dir, "bundle.pem") + "; NODE_EXTRA_CA_CERTS=" + caFile +
		"; Java: -Djavax.net.ssl.trustStore=" + filepath.Join(dir, "truststore.p12") +
		" (docs/modes-and-clients.md)"
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
	rec.code, rec.established = http.StatusOK, true
	brw.WriteString("HTTP/1.1 200 Connection established\r\n\r\n")
	if err := brw.Flush(); err != nil {
		conn.Close()
		return nil, false
	}
	// The outer server's deadlines were for reading a request's head and
	// writing its answer; the tunnel's server, or relay, sets its own.
	conn.SetDeadline(time.Time{})
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

// tunnelHandler serves the requests inside tunnels: they are in origin
// form with the upstream's Host, and are served exactly as absolute-form
// requests for that host are; a request for another host is refused.
// Inside an intercepted tunnel (r.TLS set by the server) the scheme is
// https, so that the Host's port is compared with 443.
func (h *Handler) tunnelHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.serve(w, r, true) })
}

// listenAddr is the proxy's listen address as the tunnels' listener
// reports it; nil when it is not known.
func listenAddr(addr string) net.Addr {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil
	}
	return net.TCPAddrFromAddrPort(ap)
}
