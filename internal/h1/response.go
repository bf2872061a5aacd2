package h1

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// response is the http.ResponseWriter of Server.
type response struct {
	c              *serverConn
	req            *http.Request
	header         http.Header
	own            http.Header // the connection's map, header unless one was adopted
	adopted        bool        // header is a map the handler gave (AdoptHeader)
	status         int
	wroteHeader    bool  // the final status is chosen
	committed      bool  // status line and headers are written
	noBody         bool  // HEAD, 204 or 304: no body goes out
	chunked        bool  // Transfer-Encoding: chunked
	contentLength  int64 // -1 when unknown
	written        int64
	pending        []byte // body held back before the headers, up to pendingMax
	closeAfter     bool
	body           *serverBody // nil for a request without one
	headBytes      int64       // what a handler wrote in answer to HEAD
	expectContinue bool
	continueSent   bool
	reason         string // the status line's reason phrase, when not the standard one
	err            error  // the first write error: the app is gone
}

func (r *response) reset(c *serverConn, req *http.Request) {
	clear(r.own)
	*r = response{c: c, req: req, header: r.own, own: r.own, contentLength: -1, pending: r.pending[:0], closeAfter: req.Close}
}

func (r *response) Header() http.Header { return r.header }

// AdoptHeader makes h the answer's header map in place of the one Header
// returned so far, whose fields are dropped; the caller gives h up. A
// proxy that already holds the upstream's answer in a map of its own
// hands it over instead of copying it key by key (bench/README.md). After
// the status is chosen it does nothing, as changes to the header would
// not.
func (r *response) AdoptHeader(h http.Header) {
	if !r.wroteHeader && h != nil {
		r.header, r.adopted = h, true
	}
}

// takeAdopted returns, emptied, the map the handler gave the answer, for
// the connection to lend with its next request (spareHeader); nil if
// there is none, or it is larger than a head the fast readers take, which
// it would stay.
func (r *response) takeAdopted() http.Header {
	h := r.header
	if !r.adopted || len(h) > maxFastFields {
		return nil
	}
	clear(h)
	r.header, r.adopted = r.own, false
	return h
}

// WriteHeaderReason is WriteHeader with a reason phrase of the caller's
// instead of the standard one, for answers whose status line is what a
// person reads. CR and LF would end the line: they make it fall back.
func (r *response) WriteHeaderReason(code int, reason string) {
	if !r.wroteHeader && code >= 200 && !strings.ContainsAny(reason, "\r\n") {
		r.reason = reason
	}
	r.WriteHeader(code)
}

// GuardsFraming tells a handler that this server closes the connection
// itself after a request whose framing is suspect (Content-Length beside
// Transfer-Encoding, Transfer-Encoding in HTTP/1.0; RFC 9112, section 6.1).
// net/http's server hides those headers from the handler, which behind it
// must close after every request that could have had them.
func (r *response) GuardsFraming() bool { return true }

// Hijack hands the connection to the handler, as net/http's Hijacker does:
// what the app sent after the request is in the returned reader. Only
// before the answer has begun. The connection is the one the server reads
// and writes: for TCP, with the raw reads and writes of sysConn, so that a
// tunnel's TLS or relay spares the scheduler as the server does.
func (r *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if r.wroteHeader {
		return nil, nil, errors.New("h1: Hijack after the answer began")
	}
	c := r.c
	c.hijacked = true
	c.watched.Store(false)
	return c.sock, bufio.NewReadWriter(c.br, c.bw), nil
}

func (r *response) WriteHeader(code int) {
	if r.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code < 200 {
		r.writeInformational(code)
		return
	}
	r.wroteHeader = true
	r.status = code
	r.noBody = r.req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
	if code == http.StatusNoContent {
		delete(r.header, "Content-Length") // RFC 9110: never on a 204
	}
	if cl := r.header["Content-Length"]; len(cl) > 0 {
		n, err := strconv.ParseInt(cl[0], 10, 64)
		if err != nil || n < 0 || len(cl) > 1 {
			delete(r.header, "Content-Length") // not ours to pass on
		} else {
			r.contentLength = n
		}
	}
	if r.contentLength >= 0 || r.noBody && r.req.Method != http.MethodHead {
		r.commit(false)
	}
}

// writeInformational sends a 1xx answer with the headers set so far, as
// net/http does (103 Early Hints).
func (r *response) writeInformational(code int) {
	if r.expectContinue {
		r.c.wmu.Lock()
		defer r.c.wmu.Unlock()
	}
	if code == http.StatusContinue {
		r.continueSent = true
	}
	bw := r.c.bw
	writeStatusLine(bw, code)
	for k, vv := range r.header {
		// An informational answer has no body to frame.
		if k != "Content-Length" && k != "Trailer" && !serverOwnedHeader(k) {
			writeField(bw, k, vv)
		}
	}
	bw.WriteString("\r\n")
	if err := bw.Flush(); err != nil && r.err == nil {
		r.err = err
	}
}

func (r *response) sendContinue() {
	r.c.wmu.Lock()
	defer r.c.wmu.Unlock()
	if r.committed || r.continueSent || r.err != nil {
		return
	}
	r.continueSent = true
	// A failed flush is not recorded here but stays in the buffered
	// writer, where the answer's first write finds it.
	r.c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	r.c.bw.Flush()
}

// commit writes the status line and headers. final means the handler is
// done, so a body of unknown length is the pending one.
func (r *response) commit(final bool) {
	if r.expectContinue {
		r.c.wmu.Lock()
		defer r.c.wmu.Unlock()
	}
	r.committed = true
	r.frame(final)
	r.writeHead()
}

// frame decides how the body is delimited (a length, chunks, or the
// connection's end) and whether the connection closes after the answer for
// that or for its body; writeHead adds the handler's Connection: close.
func (r *response) frame(final bool) {
	if final && r.req.Method == http.MethodHead && r.contentLength < 0 && r.headBytes > 0 {
		// The length the answer to a GET would have, as net/http sends.
		r.header["Content-Length"] = []string{strconv.FormatInt(r.headBytes, 10)}
	}
	if r.contentLength < 0 && !r.noBody {
		_, trailers := r.header["Trailer"]
		switch {
		case final && !trailers:
			r.contentLength = int64(len(r.pending))
			r.header["Content-Length"] = []string{strconv.Itoa(len(r.pending))}
		case r.req.ProtoAtLeast(1, 1):
			r.chunked = true
		default:
			r.closeAfter = true // an HTTP/1.0 body of unknown length ends with the connection
		}
	}
	if r.c.s.inShutdown.Load() {
		r.closeAfter = true
	}
	if r.body != nil && !r.body.reusable() {
		// Reading the rest could take long, or forever for an app that
		// waits for a 100 Continue it will not get: the connection goes.
		r.closeAfter = true
	}
}

// writeHead writes the status line and the headers, the server's own
// (Date, Connection, Transfer-Encoding) included.
func (r *response) writeHead() {
	bw := r.c.bw
	if r.reason != "" {
		bw.WriteString("HTTP/1.1 " + strconv.Itoa(r.status) + " " + r.reason + "\r\n")
	} else {
		writeStatusLine(bw, r.status)
	}
	hasDate, connection := writeHeaderLines(bw, r.header, r.chunked)
	if !hasDate {
		line := time.Now().UTC().AppendFormat(append(bw.AvailableBuffer(), "Date: "...), http.TimeFormat)
		bw.Write(append(line, "\r\n"...))
	}
	if containsToken(connection, "close") {
		r.closeAfter = true // the handler's wish
	}
	switch {
	case r.closeAfter:
		bw.WriteString("Connection: close\r\n")
	case !r.req.ProtoAtLeast(1, 1):
		bw.WriteString("Connection: keep-alive\r\n")
	}
	if r.chunked {
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	bw.WriteString("\r\n")
}

func (r *response) Write(p []byte) (int, error) {
	if !r.wroteHeader {
		r.WriteHeader(http.StatusOK)
	}
	if r.err != nil {
		return 0, r.err
	}
	if r.noBody {
		if r.req.Method == http.MethodHead {
			r.headBytes += int64(len(p))
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	if !r.committed {
		if len(r.pending)+len(p) <= pendingMax {
			r.pending = append(r.pending, p...)
			return len(p), nil
		}
		if err := r.release(false); err != nil {
			return 0, err
		}
	}
	return len(p), r.writeBody(p)
}

// release writes the headers and then the body held back so far; final as
// for commit.
func (r *response) release(final bool) error {
	r.commit(final)
	err := r.writeBody(r.pending)
	r.pending = r.pending[:0]
	return err
}

// writeBody frames p after the headers.
func (r *response) writeBody(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	var err error
	if r.contentLength >= 0 && r.written+int64(len(p)) > r.contentLength {
		p = p[:r.contentLength-r.written]
		err = http.ErrContentLength
	}
	bw := r.c.bw
	if r.chunked {
		bw.Write(append(strconv.AppendUint(bw.AvailableBuffer(), uint64(len(p)), 16), "\r\n"...))
	}
	if _, werr := bw.Write(p); werr != nil {
		r.err = werr
		return werr
	}
	if r.chunked {
		bw.WriteString("\r\n")
	}
	r.written += int64(len(p))
	return err
}

// Flush sends the headers, if not yet sent, and what is buffered.
func (r *response) Flush() { _ = r.FlushError() }

// FlushError is Flush for http.ResponseController.
func (r *response) FlushError() error {
	if !r.wroteHeader {
		r.WriteHeader(http.StatusOK)
	}
	if r.err != nil {
		return r.err
	}
	if !r.committed {
		if err := r.release(false); err != nil {
			return err
		}
	}
	if err := r.c.bw.Flush(); err != nil {
		r.err = err
		return err
	}
	return nil
}

// finish ends the answer once the handler has returned: the headers if
// still held back, the pending body, the last chunk with the trailers.
func (r *response) finish() {
	if !r.wroteHeader {
		r.WriteHeader(http.StatusOK)
	}
	if !r.committed {
		r.release(true) // an error is in r.err, and closes the connection below
	}
	bw := r.c.bw
	if r.chunked {
		bw.WriteString("0\r\n")
		r.writeTrailers()
		bw.WriteString("\r\n")
	}
	if r.contentLength >= 0 && r.written < r.contentLength && !r.noBody {
		r.closeAfter = true // the app waits for bytes that will never come
	}
	if r.err != nil || bw.Flush() != nil {
		r.closeAfter = true
	}
	if len(r.pending) > 4*pendingMax {
		r.pending = nil // do not keep a large buffer for the connection's life
	}
}

// writeTrailers writes the trailers: the names announced in Trailer, with
// their values set after WriteHeader, and names set with http.TrailerPrefix.
func (r *response) writeTrailers() {
	for _, v := range r.header["Trailer"] {
		for name := range strings.SplitSeq(v, ",") {
			k := http.CanonicalHeaderKey(strings.TrimSpace(name))
			if vv, ok := r.header[k]; ok {
				writeField(r.c.bw, k, vv)
			}
		}
	}
	for k, vv := range r.header {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			writeField(r.c.bw, http.CanonicalHeaderKey(name), vv)
		}
	}
}
