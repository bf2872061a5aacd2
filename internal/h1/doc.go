// Package h1 is an HTTP/1.x server and an HTTP/1.1 client transport that do
// a request's I/O on the goroutine that handles it, where net/http hands
// every request between goroutines; both parse with net/http's own parsers,
// but for the ordinary head, which a strict reader held to their result
// takes (fasthead.go), and make the checks net/http makes around them.
//
// It knows nothing of the proxy. Server serves any http.Handler; beside the
// standard http.ResponseWriter, http.Flusher and http.Hijacker, its
// ResponseWriter has WriteHeaderReason (a status line with a reason phrase
// of the handler's) and GuardsFraming (the connection is closed after a
// request with suspect framing), and its request bodies have Buffered (how
// much of the body has arrived). Transport is an http.RoundTripper for one
// upstream host, which sends a body that says it has arrived (Buffered)
// with the request's head, and keeps nothing of a request once its answer's
// body is closed, so that the caller may reuse the request's memory.
package h1
