package proxy

import (
	"context"
	"crypto/tls"
	"net/http"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/dinie/dinie-auth-proxy/internal/h1"
)

// handshakeTimeout bounds the TLS handshake of an intercepted tunnel, as
// ReadHeaderTimeout bounds a request's head: a client that connects and
// says nothing must not hold a goroutine, or the outer server's shutdown.
const handshakeTimeout = 10 * time.Second

// openInterceptTunnel answers a CONNECT to the upstream's TLS port with 200,
// terminates the client's TLS with the interception leaf and hands the
// decrypted connection to the tunnels' server, whose requests then carry
// r.TLS and are routed with the https scheme (README, "Apps that keep
// https:// URLs"). The handshake runs on this goroutine, the one serving
// the CONNECT, bounded by handshakeTimeout.
func (h *Handler) openInterceptTunnel(rec *recorder, r *http.Request) {
	if h.tunnels == nil {
		h.refuse(rec, refuseConnect, r)
		return
	}
	conn, ok := h.establish(rec)
	if !ok {
		return
	}
	// One shared config for every tunnel: its session ticket keys are what
	// lets a client's next tunnel resume.
	tc := tls.Server(h1.RawIO(conn), h.intercept)
	ctx, cancel := context.WithTimeout(r.Context(), handshakeTimeout)
	conn.SetDeadline(time.Now().Add(handshakeTimeout))
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		h.metrics.tunnels.WithLabelValues("handshake_failed").Inc()
		h.log.Warn("TLS handshake in a tunnel failed; the app may not trust the interception CA",
			zap.String("host", r.URL.Host),
			zap.String("hint", h.handshakeHint),
			zap.Error(err))
		tc.Close()
		return
	}
	conn.SetDeadline(time.Time{})
	// Counted first: once handed over, the tunnel's requests may be
	// answered before this goroutine runs again.
	h.metrics.tunnels.WithLabelValues("intercepted").Inc()
	if !h.tunnels.hand(tc) {
		tc.Close() // shutting down
	}
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
		" (README, \"Apps that keep https:// URLs\")"
}
