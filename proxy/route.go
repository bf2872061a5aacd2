package proxy

import (
	"net"
	"net/http"
	"net/url"
	"strings"
)

// routing is the decision taken for each inbound request before anything is
// sent upstream (docs/modes-and-clients.md, "Using it from an application").
type routing int

const (
	routeBaseURL         routing = iota // origin-form, or absolute-form for the proxy itself: the app uses us as its base URL
	routeAbsolute                       // absolute-form for the upstream host: the app uses us as HTTP_PROXY
	routeTokenRequest                   // the app's own token request (a Dinie SDK's): answered here, never forwarded
	routePlainTunnel                    // CONNECT to the upstream's plain-HTTP port: served inside like absolute-form
	routeInterceptTunnel                // CONNECT to the upstream's TLS port with interception: TLS terminated, then as a plain tunnel
	routePassthrough                    // CONNECT to a host intercept.passthrough lists: bytes relayed untouched
	refuseConnect                       // CONNECT to the upstream's TLS port without interception: TLS could not carry an injected header
	refuseHost                          // any other host or port: never an open relay
	refuseMethod                        // TRACE or TRACK: an upstream that echoes the request would hand the app the token
	asteriskForm                        // "*": about this server (OPTIONS), never a resource upstream
)

// router holds what routing compares a request with, worked out once.
type router struct {
	upstream *url.URL
	// plainPort and tlsPort are the CONNECT ports of the upstream host:
	// upstream.url's own port for its scheme, the scheme's default for the
	// other.
	plainPort, tlsPort string
	// selfHost and selfPort are the proxy's listen address; selfPort ""
	// means it is not known and no absolute-form request is taken as ours.
	selfHost, selfPort string
	// tokenPaths are where the app's token requests go: Dinie's token path
	// under the base URL's prefix and at the root.
	tokenPaths [2]string
	// intercept says a CONNECT to tlsPort is intercepted rather than
	// refused; passes reports the other hosts whose tunnels are relayed.
	intercept bool
	passes    func(host, port string) bool
}

func newRouter(upstream *url.URL, listenAddr string, intercept bool, passes func(host, port string) bool) *router {
	rt := &router{upstream: upstream, plainPort: "80", tlsPort: "443", intercept: intercept, passes: passes}
	port := upstream.Port()
	if port == "" {
		port = defaultPort(upstream.Scheme)
	}
	if upstream.Scheme == "http" {
		rt.plainPort = port
	} else {
		rt.tlsPort = port
	}
	if host, port, err := net.SplitHostPort(listenAddr); err == nil {
		rt.selfHost, rt.selfPort = host, port
	}
	prefix := strings.TrimSuffix(upstream.Path, "/")
	rt.tokenPaths = [2]string{prefix + "/auth/token", "/auth/token"}
	return rt
}

// route classifies r; inTunnel says r came through a CONNECT tunnel, where
// only the upstream host is served. It is pure, so it is fuzzed on its own.
func (rt *router) route(r *http.Request, inTunnel bool) routing {
	// In any case: a server that takes methods case-insensitively would
	// echo a "trace" as well. Nothing shorter than five bytes folds to
	// either (the Kelvin sign that folds to K is longer, not shorter):
	// GET, PUT, POST and HEAD skip the comparisons.
	if len(r.Method) >= len("TRACE") && (strings.EqualFold(r.Method, http.MethodTrace) || strings.EqualFold(r.Method, "TRACK")) {
		return refuseMethod
	}
	if r.RequestURI == "*" {
		return asteriskForm
	}
	if r.Method == http.MethodConnect {
		if inTunnel {
			// No tunnel in a tunnel; to another host it is refused as any
			// other host is.
			if host, _, err := net.SplitHostPort(r.URL.Host); err == nil && sameName(host, rt.upstream.Hostname()) {
				return refuseConnect
			}
			return refuseHost
		}
		return rt.connect(r.URL.Host)
	}
	var mode routing
	switch {
	case inTunnel && !r.URL.IsAbs():
		// Origin-form inside a tunnel: served as absolute-form for the
		// Host it names, over TLS when the tunnel is intercepted.
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		if !sameAuthority(r.Host, scheme, rt.upstream) {
			return refuseHost
		}
		mode = routeAbsolute
	case !r.URL.IsAbs():
		mode = routeBaseURL
	case sameHost(r.URL, rt.upstream):
		mode = routeAbsolute
	case !inTunnel && rt.isSelf(r.URL):
		mode = routeBaseURL
	default:
		return refuseHost
	}
	if r.Method == http.MethodPost && (r.URL.Path == rt.tokenPaths[0] || r.URL.Path == rt.tokenPaths[1]) {
		return routeTokenRequest
	}
	return mode
}

// connect classifies a CONNECT to authority (host:port). The upstream host
// is never relayed untouched, whatever the passthrough patterns say: its
// TLS port is intercepted, or refused with a 405 that says what to do.
func (rt *router) connect(authority string) routing {
	host, port, err := net.SplitHostPort(authority)
	if err != nil {
		return refuseHost
	}
	if !sameName(host, rt.upstream.Hostname()) {
		if rt.passes != nil && rt.passes(host, port) {
			return routePassthrough
		}
		return refuseHost
	}
	switch port {
	case rt.plainPort:
		return routePlainTunnel
	case rt.tlsPort:
		if rt.intercept {
			return routeInterceptTunnel
		}
		return refuseConnect
	}
	return refuseHost
}

// sameName reports whether host names the upstream host: in any case, and
// with or without the trailing dot of a fully qualified name, which
// resolves to the same host.
func sameName(host, upstream string) bool {
	return strings.EqualFold(strings.TrimSuffix(host, "."), strings.TrimSuffix(upstream, "."))
}

// isSelf reports whether an absolute-form target names the proxy itself: an
// app whose NO_PROXY lacks the proxy's address sends its base-URL requests
// in absolute form. The name may be the listen host, localhost or any
// loopback address, with the listen port.
func (rt *router) isSelf(target *url.URL) bool {
	if rt.selfPort == "" || target.User != nil {
		return false
	}
	port := target.Port()
	if port == "" {
		port = defaultPort(target.Scheme)
	}
	if port != rt.selfPort {
		return false
	}
	host := target.Hostname()
	if strings.EqualFold(host, rt.selfHost) || strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// sameHost reports whether the absolute-form target names the upstream: the
// same host name in any case, and no port, the default port of the
// request's scheme, or the upstream's port.
func sameHost(target, upstream *url.URL) bool {
	return target.User == nil && sameAuthority(target.Host, target.Scheme, upstream)
}

// sameAuthority is sameHost for a host[:port] reached with scheme.
func sameAuthority(authority, scheme string, upstream *url.URL) bool {
	host, port := authority, ""
	if h, p, err := net.SplitHostPort(authority); err == nil {
		host, port = h, p
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if !strings.EqualFold(host, upstream.Hostname()) {
		return false
	}
	if port == "" || port == defaultPort(scheme) {
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
	if prefix == "" || in.Path == prefix || len(in.Path) > len(prefix) && in.Path[len(prefix)] == '/' && strings.HasPrefix(in.Path, prefix) {
		return in.Path, in.RawPath
	}
	path = prefix + in.Path
	if in.RawPath != "" {
		rawPath = escapedPrefix + in.RawPath
	}
	return path, rawPath
}
