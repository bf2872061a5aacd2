package proxy

import (
	"net/http"
	"net/url"
	"strings"
)

// routing is the decision taken for each inbound request before anything is
// sent upstream (SPEC.md, "How applications reach it").
type routing int

const (
	routeBaseURL  routing = iota // origin-form: the app uses us as its base URL
	routeAbsolute                // absolute-form for the upstream host: the app uses us as HTTP_PROXY
	refuseConnect                // CONNECT: TLS could not carry an injected header
	refuseHost                   // absolute-form for any other host: never an open relay
	asteriskForm                 // "*": about this server (OPTIONS), never a resource upstream
)

// route classifies r. It is pure, so it is fuzzed on its own.
func route(r *http.Request, upstream *url.URL) routing {
	if r.RequestURI == "*" {
		return asteriskForm
	}
	if r.Method == http.MethodConnect {
		return refuseConnect
	}
	if !r.URL.IsAbs() {
		return routeBaseURL
	}
	if sameHost(r.URL, upstream) {
		return routeAbsolute
	}
	return refuseHost
}

// sameHost reports whether the absolute-form target names the upstream: the
// same host name in any case, and no port, the default port of the
// request's scheme, or the upstream's port.
func sameHost(target, upstream *url.URL) bool {
	if target.User != nil || !strings.EqualFold(target.Hostname(), upstream.Hostname()) {
		return false
	}
	port := target.Port()
	if port == "" || port == defaultPort(target.Scheme) {
		return true
	}
	up := upstream.Port()
	if up == "" {
		up = defaultPort(upstream.Scheme)
	}
	return port == up
}

func defaultPort(scheme string) string {
	switch strings.ToLower(scheme) {
	case "http":
		return "80"
	case "https":
		return "443"
	}
	return ""
}

// upstreamPath is the path of the forwarded request in base-URL mode: the
// upstream's prefix is prepended unless the app already sent it. It returns
// the decoded path and, when the inbound path had escapes that matter (an
// encoded slash), the escaped form.
func upstreamPath(prefix, escapedPrefix string, in *url.URL) (path, rawPath string) {
	if prefix == "" || in.Path == prefix || strings.HasPrefix(in.Path, prefix+"/") {
		return in.Path, in.RawPath
	}
	path = prefix + in.Path
	if in.RawPath != "" {
		rawPath = escapedPrefix + in.RawPath
	}
	return path, rawPath
}
