package proxy

import (
	"io"
	"net/http"
)

// answerAsterisk answers a request for "*", which names the server, not a
// resource (RFC 9112, section 3.2.4): forwarded, it would reach the
// upstream as a request for the API prefix followed by "*".
//
// OPTIONS * gets what net/http's server answers before any handler sees it
// (200, an empty body), so that both servers answer alike; any other
// method is refused, as only OPTIONS may ask for "*".
func answerAsterisk(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodOptions {
		writeProblem(w, http.StatusBadRequest, CodeBadRequestTarget,
			"the request target * is only for OPTIONS, and this proxy forwards requests for resources")
		return
	}
	w.Header()["Content-Length"] = []string{"0"}
	if r.ContentLength != 0 {
		// A body is reserved for future use: up to 4 KiB is read and dropped,
		// more closes the connection, as net/http does.
		io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, 4<<10))
	}
	w.WriteHeader(http.StatusOK)
}
