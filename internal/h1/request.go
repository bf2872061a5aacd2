package h1

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strconv"
)

// writeRequest writes req to bw as req.Write(bw) would, up to the order of
// the header lines, after the checks net/http's transport makes of the
// header before sending (invalidField): a field that could not go out as
// it is refuses the request (errInvalidField), and nothing of it reaches
// the connection.
//
// A request without a body (every GET), or with one of known length, is
// written here, each line assembled in the writer's free space:
// Request.Write formats with fmt, sorts the header keys through a pooled
// sorter and looks for a client trace (its cost is in bench/README.md).
// Each field is checked in the pass that writes it, before its lines go
// into bw, and a head too large for bw is checked whole before its first
// bytes go out (headWriter): what a refused request wrote stays in bw for
// the caller to drop. Anything out of the ordinary goes to req.Write
// itself, checked first: a body of unknown length (chunked, or the probe
// of a zero ContentLength), Close, CONNECT, an opaque URL, a method or
// Host that would need checking, a URL with a control byte (req.Write
// refuses it), a client trace.
//
// buf, when not nil, is where a body larger than bw's free space is read
// into before it is written (see writeBody). plainHost, when not empty,
// is a host known to be plain (Transport's own), not looked at again.
func writeRequest(bw *bufio.Writer, req *http.Request, buf []byte, plainHost string) error {
	host := req.Host
	if host == "" && req.URL != nil {
		host = req.URL.Host
	}
	if !plainRequest(req, host, plainHost) {
		return writeChecked(bw, req)
	}
	path := req.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	query := req.URL.ForceQuery || req.URL.RawQuery != ""
	if hasCTL(path) || query && hasCTL(req.URL.RawQuery) {
		return writeChecked(bw, req)
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}

	w := headWriter{bw: bw, header: req.Header}
	line := append(bw.AvailableBuffer(), method...)
	line = append(line, ' ')
	line = append(line, path...)
	if query {
		line = append(line, '?')
		line = append(line, req.URL.RawQuery...)
	}
	line = append(line, " HTTP/1.1\r\nHost: "...)
	line = append(line, host...)
	line = append(line, "\r\n"...)
	if err := w.write(line); err != nil {
		return err
	}

	// Request.Write's rules: Go's User-Agent unless the map has the key
	// (an empty value then means none); the body's length, or a zero one
	// for the methods that are expected to have a body. The User-Agent's
	// values are checked with the others below, before any of this can go
	// out.
	ua, hasUA := req.Header["User-Agent"]
	switch {
	case !hasUA:
		line = append(bw.AvailableBuffer(), "User-Agent: Go-http-client/1.1\r\n"...)
	case len(ua) > 0 && ua[0] != "":
		line = fieldLine(bw, "User-Agent", ua[0])
	default:
		line = bw.AvailableBuffer() // an empty User-Agent: none
	}
	if req.ContentLength > 0 {
		line = append(line, "Content-Length: "...)
		line = strconv.AppendInt(line, req.ContentLength, 10)
		line = append(line, "\r\n"...)
	} else {
		switch method {
		case http.MethodPost, http.MethodPut, http.MethodPatch:
			line = append(line, "Content-Length: 0\r\n"...)
		}
	}
	if err := w.write(line); err != nil {
		return err
	}
	for k, vv := range req.Header {
		if !validFieldName(k) || !validValues(vv) {
			return errInvalidField{name: k}
		}
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue // written above from the request's fields, or not at all
		}
		for _, v := range vv {
			if err := w.write(fieldLine(bw, k, v)); err != nil {
				return err
			}
		}
	}
	if err := w.write(append(bw.AvailableBuffer(), "\r\n"...)); err != nil {
		return err
	}
	if req.ContentLength > 0 {
		return writeBody(bw, req.Body, req.ContentLength, buf)
	}
	return nil // a write error stays in bw, for the caller's Flush
}

// headWriter writes a request's head into bw. Before a line that would
// not fit in bw's free space, and so would send what bw holds, it checks
// the whole header (invalidField): nothing of a request refused for a
// field further on may reach the connection, as nothing does through
// net/http's transport.
type headWriter struct {
	bw      *bufio.Writer
	header  http.Header
	checked bool // the whole header passed invalidField
}

func (w *headWriter) write(line []byte) error {
	if !w.checked && len(line) > w.bw.Available() {
		if k, bad := invalidField(w.header); bad {
			return errInvalidField{name: k}
		}
		w.checked = true
	}
	w.bw.Write(line)
	return nil
}

// writeChecked writes req with req.Write once its header passed
// invalidField; nothing is written for a request refused.
func writeChecked(bw *bufio.Writer, req *http.Request) error {
	if k, bad := invalidField(req.Header); bad {
		return errInvalidField{name: k}
	}
	return req.Write(bw)
}

// writeBody copies a body of n bytes after the head, checked and closed as
// Request.Write does. Request.Write sends the head on its own first unless
// the body is in memory, so that the upstream has it while the app is
// still sending; here the same holds, but an app's body that has already
// arrived with its headers (every small POST) counts as in memory: head
// and body go upstream in one TLS record and one system call, not two.
//
// With buf, the body is read in reads as large as buf rather than as bw's
// free space: a 64 KiB upload from the app then takes one or two reads of
// its socket instead of five (bench/README.md); what does not fit in bw
// goes past it to the connection.
func writeBody(bw *bufio.Writer, body io.ReadCloser, n int64, buf []byte) error {
	if b, ok := body.(bufferedBody); !ok || b.Buffered() < n {
		if err := bw.Flush(); err != nil {
			body.Close()
			return err
		}
	}
	var copied int64
	var err error
	if buf == nil {
		copied, err = bw.ReadFrom(&io.LimitedReader{R: body, N: n})
	} else {
		copied, err = copyBuffered(bw, body, n, buf)
	}
	if err == nil {
		// Read on to the end: a body longer than announced is an error, and
		// a body kept for a replay is complete only once its end was seen.
		var extra int64
		extra, err = io.Copy(io.Discard, body)
		copied += extra
	}
	closeErr := body.Close()
	switch {
	case err != nil:
		return err
	case closeErr != nil:
		return closeErr
	case copied != n:
		return fmt.Errorf("http: ContentLength=%d with Body length %d", n, copied)
	}
	return nil
}

// copyBuffered copies up to n bytes of body to bw through buf, as
// bw.ReadFrom does through bw's own buffer: an error of body's, or of bw's
// writes, ends it, and body's EOF is no error.
func copyBuffered(bw *bufio.Writer, body io.Reader, n int64, buf []byte) (int64, error) {
	var copied int64
	for copied < n {
		m, rerr := body.Read(buf[:min(int64(len(buf)), n-copied)])
		if m > 0 {
			if _, err := bw.Write(buf[:m]); err != nil {
				return copied, err
			}
			copied += int64(m)
		}
		if rerr == io.EOF {
			return copied, nil
		}
		if rerr != nil {
			return copied, rerr
		}
	}
	return copied, nil
}

// bufferedBody is a request body that knows how many of its bytes can be
// read without waiting for the app.
type bufferedBody interface{ Buffered() int64 }

// plainRequest reports whether req, for host, is one writeRequest writes
// itself; a host equal to plainHost is plain.
func plainRequest(req *http.Request, host, plainHost string) bool {
	// A body with its length, or neither: Request.Write probes a body of
	// zero length and refuses a length without a body.
	hasBody := req.Body != nil && req.Body != http.NoBody
	if hasBody != (req.ContentLength > 0) ||
		req.Close || len(req.TransferEncoding) > 0 || req.URL == nil || req.URL.Opaque != "" ||
		req.Method == http.MethodConnect || !validFieldName(req.Method) && req.Method != "" {
		return false
	}
	if (plainHost == "" || host != plainHost) && !isPlainHost(host) {
		return false
	}
	return httptrace.ContextClientTrace(req.Context()) == nil
}

// isPlainHost reports whether host is a name, an IPv4 or a bracketed IPv6
// address, with a port or not: what needs no IDNA conversion, zone removal
// or validity check.
func isPlainHost(host string) bool {
	for i := 0; i < len(host); i++ {
		if c := host[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '-' || c == ':' || c == '[' || c == ']' || c == '_') {
			return false
		}
	}
	return true
}

// hasCTL reports whether s has a byte that Request.Write refuses in a URL.
func hasCTL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] == 0x7f {
			return true
		}
	}
	return false
}
