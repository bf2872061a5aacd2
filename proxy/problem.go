package proxy

import (
	"encoding/json"
	"net/http"
)

// The codes of the errors the proxy itself answers with (docs/operations.md, "Errors
// the proxy answers itself"). Dinie's own errors pass through untouched.
const (
	CodeHostNotAllowed      = "host_not_allowed"
	CodeConnectNotSupported = "connect_not_supported"
	// CodeMethodNotAllowed is TRACE or TRACK, never forwarded
	// (docs/operations.md, "Errors the proxy answers itself").
	CodeMethodNotAllowed = "method_not_allowed"
	// CodeUnsupportedGrantType is an app's token request for a grant other
	// than client credentials: the stand-in would silently give it the
	// partner's scope.
	CodeUnsupportedGrantType = "unsupported_grant_type"
	CodeUpstreamUnreachable  = "upstream_unreachable"
	CodeTokenUnavailable     = "token_unavailable"
	CodeUpstreamTimeout      = "upstream_timeout"
	CodeOverloaded           = "overloaded"
	// CodeBadRequestBody: the app's own request body failed to arrive (e.g.
	// a broken chunked coding), which must not be blamed on the upstream.
	CodeBadRequestBody = "bad_request_body"
	// CodeBadRequestTarget is a request for "*" other than OPTIONS (an
	// HTTP/2 preface sent to HTTP/1.1): it names no resource upstream
	// (docs/operations.md, "Errors the proxy answers itself").
	CodeBadRequestTarget = "bad_request_target"
	// CodeBadRequest is a CONNECT with a body, which would otherwise
	// become the tunnel's first bytes.
	CodeBadRequest = "bad_request"
)

// statusClientClosedRequest is nginx's 499: the app went away before the
// answer. Nobody reads it, but it keeps metrics and logs from blaming the
// upstream.
const statusClientClosedRequest = 499

// problem is an RFC 9457 problem document, shaped like Dinie's so that an
// app's error handling reads both.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Code   string `json:"code"`
}

func writeProblem(w http.ResponseWriter, status int, code, detail string) {
	setProblemHeaders(w.Header())
	w.WriteHeader(status)
	// A write error means the client is gone; there is no one to tell.
	_, _ = w.Write(problemBody(status, code, detail))
}

func setProblemHeaders(h http.Header) {
	h["Content-Type"] = []string{"application/problem+json"}
	h["Cache-Control"] = []string{"no-store"}
}

func problemBody(status int, code, detail string) []byte {
	b, _ := json.Marshal(problem{ // cannot fail: strings and an int
		Type:   "urn:dinie-auth-proxy:problem:" + code,
		Title:  http.StatusText(status),
		Status: status,
		Detail: detail,
		Code:   code,
	})
	return append(b, '\n')
}
