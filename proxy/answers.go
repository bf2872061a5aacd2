package proxy

import (
	"fmt"
	"net/http"
)

// The refusals of requests the proxy must not forward; the stand-in token
// is tokenrequest.go's.

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
