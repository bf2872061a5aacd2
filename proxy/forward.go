package proxy

import (
	"io"
	"net/http"
	"net/textproto"
	"strings"

	"go.uber.org/zap"
)

// forward sends in upstream with the token and copies the answer back.
//
// It does what httputil.ReverseProxy does (hop-by-hop headers out, trailers
// and streaming kept, a failure mid-body aborts the response) without its
// per-request clones, client trace and context wrapping, whose cost
// bench/README.md measures. Protocol upgrades and 1xx answers are not
// relayed: the Dinie API has neither.
func (h *Handler) forward(x *exchange, in *http.Request, id string, rt routing) {
	w := &x.rec
	out := h.outbound(x, in, id, rt)
	exchange := h.isSessionExchange(out)
	if exchange {
		// Its answer is read for the token: in plain JSON, not compressed.
		// Without the header any coding would be acceptable (RFC 9110,
		// section 12.5.3), so the request names the identity one.
		out.Header["Accept-Encoding"] = []string{"identity"}
	}
	resp, st, err := h.sender.send(out, h.passedBearer(in.Header["Authorization"]), x.fromSDK)
	w.attempts, w.retried = st.attempts, st.replayed
	if err == nil && resp.StatusCode == http.StatusSwitchingProtocols {
		// Only net/http's transport returns one; nothing asked for it, and
		// what follows on that connection is no longer HTTP.
		resp.Body.Close()
		err = errUpgrade
	}
	if err != nil {
		h.proxyError(w, in, id, err)
		return
	}
	if exchange && resp.StatusCode == http.StatusOK {
		h.rememberSession(resp)
	}
	seen := takeResponseHeader(w.ResponseWriter, resp.Header)
	h.metrics.setRateLimit(seen.rateLimit)
	if x.closeAfter {
		w.Header()["Connection"] = closeConnection // whatever the upstream's Connection named
	}
	if len(resp.Trailer) > 0 {
		// The answer's trailers are only known after its body: announce the
		// names now, as HTTP/1.1 wants.
		names := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			names = append(names, k)
		}
		w.Header()["Trailer"] = []string{strings.Join(names, ", ")}
	}
	w.WriteHeader(resp.StatusCode)
	if err := h.copyBody(w, resp, seen.contentType); err != nil {
		resp.Body.Close()
		h.log.Warn("response cut mid-body",
			zap.String("request_id", id),
			zap.Error(err))
		// The status line is gone: the only way to tell the app that the
		// answer is incomplete is to drop its connection.
		panic(http.ErrAbortHandler)
	}
	// Trailers the upstream did not announce come with a chunked body,
	// which copyBody flushed before its first byte: the app's answer is
	// chunked too, with room for them, even when the body is empty.
	resp.Body.Close() // fills resp.Trailer
	for k, vv := range resp.Trailer {
		w.Header()[http.TrailerPrefix+k] = vv
	}
}

// mustClose reports whether the app's connection must close after the
// answer to r, whoever answers it (upstream or proxy). net/http's server
// drops, before the handler sees the request, the headers that make its
// framing suspect (a Content-Length beside Transfer-Encoding;
// Transfer-Encoding in HTTP/1.0, which it ignores): behind it, every
// request that could have had them closes its connection after the
// answer, error or not, so that no leftover byte is read as a request
// (RFC 9112, section 6.1). A server that sees them does this itself, for
// those requests only (framingGuard).
func mustClose(w http.ResponseWriter, r *http.Request) bool {
	if fg, ok := w.(framingGuard); ok && fg.GuardsFraming() {
		return false
	}
	return len(r.TransferEncoding) > 0 || !r.ProtoAtLeast(1, 1)
}

// framingGuard is a ResponseWriter whose server closes the connection
// itself after a request with suspect framing (h1.Server's).
type framingGuard interface{ GuardsFraming() bool }

// closeConnection is the shared Connection header value of an answer
// after which the app's connection closes.
var closeConnection = []string{"close"}

// outbound is the request sent upstream: a shallow copy of in with the
// upstream's URL and a new header map without the hop-by-hop headers and
// the app's own credentials. The token is added by sender.
func (h *Handler) outbound(x *exchange, in *http.Request, id string, rt routing) *http.Request {
	out := &x.out
	*out = *in // keeps in's context: the app going away cancels the request
	u := &x.url
	*u = *in.URL
	u.Scheme, u.Host = h.upstream.Scheme, h.upstream.Host
	if rt == routeBaseURL {
		u.Path, u.RawPath = upstreamPath(h.prefix, h.escapedPrefix, in.URL)
	}
	out.URL = u
	out.Host = "" // the Host header is the upstream's
	out.RequestURI = ""
	out.Close = false // the app's connection handling is not the upstream's
	// The app's trailers are not forwarded: they would come after the body,
	// past the header filtering, and could carry an Authorization or an
	// X-Forwarded-For of the app's choosing.
	out.Trailer = nil
	if in.ContentLength == 0 {
		out.Body = nil
	}

	hdr := x.header
	if hdr == nil {
		hdr = make(http.Header, len(in.Header)+2)
		x.header = hdr
	}
	// The pass that copies the app's headers notes the few the proxy
	// decides by, each of which a lookup would hash again.
	var connection, te, requestID []string
	var hasUserAgent, hasKey, sdk bool
	for k, vv := range in.Header {
		sdk = sdk || sdkHeader(k, vv)
		switch k {
		case "Connection":
			connection = vv
			continue // hop-by-hop
		case "Te":
			te = vv
			continue // hop-by-hop
		case "User-Agent":
			hasUserAgent = true
		case "X-Request-Id":
			requestID = vv
		case "Idempotency-Key", "X-Idempotency-Key":
			hasKey = true
		default:
			if !forwardedRequestHeader(k) {
				continue
			}
		}
		hdr[k] = vv // shared, never changed: set headers get slices of their own
	}
	if removeConnectionListed(hdr, connection) {
		// What the pass saw may be gone.
		_, hasUserAgent = hdr["User-Agent"]
		requestID = hdr["X-Request-Id"]
		sdk = fromSDK(hdr)
	}
	x.fromSDK = sdk
	if hasKey {
		copyIdempotencyKey(hdr)
	}
	if containsToken(te, "trailers") {
		hdr["Te"] = h.teTrailers
	}
	if !hasUserAgent {
		// Not Go's default User-Agent either: the upstream sees the app's.
		hdr["User-Agent"] = h.noUserAgent
	}
	if len(requestID) == 0 || requestID[0] == "" {
		x.requestID[0] = id // what the access log shows
		hdr["X-Request-Id"] = x.requestID[:]
	}
	out.Header = hdr
	return out
}

// forwardedRequestHeader reports whether an app's request header goes
// upstream: not the hop-by-hop ones (RFC 9110, section 7.6.1), not the app's
// credentials (ours replace them), and not forwarding headers, which the
// app could use to pose as someone else.
func forwardedRequestHeader(k string) bool {
	switch k {
	case "Authorization", "Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto":
		return false
	}
	return !hopByHop(k)
}

func hopByHop(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// cleanResponseHeader deletes from h, the upstream's answer header, the
// hop-by-hop headers and those its Connection names: they were for the
// upstream's hop only. It returns what the same pass saw of the headers
// the proxy reads, each of which a lookup would hash again.
func cleanResponseHeader(h http.Header) (seen answerHeaders) {
	var connection []string
	for k, vv := range h {
		switch k {
		case "Content-Type":
			seen.contentType = vv
		case "X-Ratelimit-Limit":
			seen.rateLimit.limit = vv
		case "X-Ratelimit-Remaining":
			seen.rateLimit.remaining = vv
		case "X-Ratelimit-Reset":
			seen.rateLimit.reset = vv
		default:
			if hopByHop(k) {
				if k == "Connection" {
					connection = vv
				}
				delete(h, k) // allowed while ranging
			}
		}
	}
	removeConnectionListed(h, connection)
	return seen
}

// answerHeaders are the upstream answer's headers that the proxy reads:
// Content-Type for copyBody, Dinie's rate-limit headers for the metrics.
type answerHeaders struct {
	contentType []string
	rateLimit   rateLimitHeaders
}

// headerAdopter is a ResponseWriter that can take over a header map rather
// than have it copied in (h1.Server's). AdoptHeader drops what the writer's
// own map held.
type headerAdopter interface{ AdoptHeader(http.Header) }

// takeResponseHeader makes src, the upstream's answer header, w's:
// cleaned (cleanResponseHeader), its values over any the handler set on w
// before, which stay where src has none. It returns what the cleaning saw.
// The map and its value slices are ours: a writer that can adopt the map
// gets it whole (w has nearly always nothing yet), others a copy key by
// key.
func takeResponseHeader(w http.ResponseWriter, src http.Header) (seen answerHeaders) {
	seen = cleanResponseHeader(src)
	dst := w.Header()
	a, ok := w.(headerAdopter)
	if !ok {
		for k, vv := range src {
			dst[k] = vv
		}
		return seen
	}
	for k, vv := range dst {
		if _, set := src[k]; !set {
			src[k] = vv
		}
	}
	a.AdoptHeader(src)
	return seen
}

// removeConnectionListed drops the headers that a Connection header names:
// the sender meant them for this hop only; it reports whether it named
// any. "keep-alive" and "close", on nearly every message, name the
// connection's fate rather than a header left to drop (Keep-Alive is
// hop-by-hop anyway), so they skip the canonicalizing Del.
func removeConnectionListed(h http.Header, connection []string) bool {
	named := false
	for _, v := range connection {
		if connectionOption(v) {
			continue // the whole of nearly every value: nothing to split
		}
		for name := range strings.SplitSeq(v, ",") {
			name = textproto.TrimString(name)
			if name != "" && !connectionOption(name) {
				h.Del(name)
				named = true
			}
		}
	}
	return named
}

// connectionOption reports whether a Connection token names the
// connection's fate (keep-alive, close) rather than a header. The
// spellings servers send are compared whole first: EqualFold goes byte by
// byte, and this runs on nearly every answer.
func connectionOption(token string) bool {
	return token == "keep-alive" || token == "close" ||
		strings.EqualFold(token, "keep-alive") || strings.EqualFold(token, "close")
}

// containsToken reports whether a comma-separated header holds token, in
// any case.
func containsToken(values []string, token string) bool {
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(textproto.TrimString(t), token) {
				return true
			}
		}
	}
	return false
}

// copyBody copies the answer's body to the app. Event streams and bodies of
// unknown length are flushed at once, so that the app has the status line
// before the first event, which may be long in coming, and then after every
// read, so that each event reaches the app as it arrives; the rest is left
// to the server's buffering. contentType is the answer's.
func (h *Handler) copyBody(w *recorder, resp *http.Response, contentType []string) error {
	flush := resp.ContentLength < 0 || isEventStream(contentType)
	if flush {
		w.Flush()
	}
	bp := h.buffers.get()
	defer h.buffers.put(bp)
	buf := *bp
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
			if flush {
				w.Flush()
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

func isEventStream(contentType []string) bool {
	const sse = "text/event-stream"
	if len(contentType) == 0 {
		return false
	}
	ct := strings.TrimSpace(contentType[0])
	return len(ct) >= len(sse) && strings.EqualFold(ct[:len(sse)], sse) &&
		(len(ct) == len(sse) || ct[len(sse)] == ';' || ct[len(sse)] == ' ')
}
