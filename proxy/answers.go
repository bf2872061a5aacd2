package proxy

import (
	"fmt"
	"net/http"
)

// The answers the proxy gives itself, without asking the upstream: the
// stand-in token, and the refusals of requests it must not forward.

// StandInToken is what the proxy gives an app that asks for a token: a
// fixed, non-secret string. The real token never leaves the proxy except
// towards the upstream, and the stand-in, sent back as the app's
// Authorization, is replaced like any other.
const StandInToken = "dinie-auth-proxy-stand-in-token"

// standInTokenBody is the token endpoint's answer to the app. An hour, as
// Dinie's: a Dinie SDK refreshes five minutes before expiry, and would fail
// on a token that lived less.
var standInTokenBody = []byte(`{"access_token":"` + StandInToken + `","token_type":"bearer","expires_in":3600}` + "\n")

// answerTokenRequest answers the app's own token request (a Dinie SDK's
// first call) without forwarding it: whatever credentials the app sent, it
// needs none (README, "With a Dinie SDK").
func (h *Handler) answerTokenRequest(w http.ResponseWriter) {
	hdr := w.Header()
	hdr["Content-Type"] = []string{"application/json"}
	hdr["Cache-Control"] = []string{"no-store"}
	w.WriteHeader(http.StatusOK)
	w.Write(standInTokenBody)
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
