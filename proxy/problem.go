package proxy

import (
	"encoding/json"
	"net/http"
)

// The codes of the errors the proxy itself answers with (SPEC.md,
// "Forwarding"). Dinie's own errors pass through untouched.
const (
	CodeHostNotAllowed      = "host_not_allowed"
	CodeConnectNotSupported = "connect_not_supported"
	CodeUpstreamUnreachable = "upstream_unreachable"
	CodeTokenUnavailable    = "token_unavailable"
	CodeUpstreamTimeout     = "upstream_timeout"
	CodeOverloaded          = "overloaded"
	// CodeBadRequestBody is not in SPEC.md's table: the app's own request
	// body failed to arrive (e.g. a broken chunked coding), which must not be
	// blamed on the upstream.
	CodeBadRequestBody = "bad_request_body"
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
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	// An encoding error means the client is gone; there is no one to tell.
	_ = json.NewEncoder(w).Encode(problem{
		Type:   "urn:dinie-auth-proxy:problem:" + code,
		Title:  http.StatusText(status),
		Status: status,
		Detail: detail,
		Code:   code,
	})
}
