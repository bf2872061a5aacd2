package h1

import (
	"bufio"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
)

// serverOwnedHeader reports whether the server writes header k itself
// (connection management, framing) or as a trailer.
func serverOwnedHeader(k string) bool {
	switch k {
	case "Connection", "Keep-Alive", "Transfer-Encoding", "Proxy-Connection", "Upgrade":
		return true
	}
	return strings.HasPrefix(k, http.TrailerPrefix)
}

func writeStatusLine(bw *bufio.Writer, code int) {
	line := append(bw.AvailableBuffer(), "HTTP/1.1 "...)
	line = strconv.AppendInt(line, int64(code), 10)
	line = append(line, ' ')
	line = append(line, http.StatusText(code)...)
	bw.Write(append(line, "\r\n"...))
}

// writeHeaderLines writes h as header lines, but not the ones the server
// owns, nor Trailer unless the body is chunked (only chunks carry
// trailers). It returns what the server decides its own lines by, seen in
// the same pass rather than looked up again: whether h has a Date, and its
// Connection.
func writeHeaderLines(bw *bufio.Writer, h http.Header, chunked bool) (hasDate bool, connection []string) {
	for k, vv := range h {
		switch k {
		case "Date":
			hasDate = true
		case "Connection":
			connection = vv
			continue
		case "Trailer":
			if !chunked {
				continue
			}
		}
		if serverOwnedHeader(k) {
			continue
		}
		writeField(bw, k, vv)
	}
	return hasDate, connection
}

// writeField writes the lines of one header, each assembled in the
// writer's free space and written once. Like net/http it drops names that
// are not tokens, trims values and turns CR and LF inside them into spaces,
// so that no value can start a header or a body of its own.
func writeField(bw *bufio.Writer, k string, vv []string) {
	if !validFieldName(k) {
		return
	}
	for _, v := range vv {
		if needsCleaning(v) {
			v = strings.NewReplacer("\r", " ", "\n", " ").Replace(v) // fieldLine trims
		}
		bw.Write(fieldLine(bw, k, v))
	}
}

// fieldLine assembles, in bw's free space, the line of a field whose
// value has no CR or LF: it needs only its spaces and tabs trimmed.
func fieldLine(bw *bufio.Writer, k, v string) []byte {
	if v != "" && (v[0] == ' ' || v[0] == '\t' || v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = textproto.TrimString(v)
	}
	line := append(bw.AvailableBuffer(), k...)
	line = append(line, ": "...)
	line = append(line, v...)
	return append(line, "\r\n"...)
}

// needsCleaning reports whether a header value has CR or LF inside, or
// space around it. Rare: two vectorised searches decide, far cheaper than
// a loop over the bytes of a long value such as a bearer token
// (bench/README.md).
func needsCleaning(v string) bool {
	if v == "" {
		return false
	}
	if v[0] == ' ' || v[0] == '\t' || v[len(v)-1] == ' ' || v[len(v)-1] == '\t' {
		return true
	}
	return strings.IndexByte(v, '\n') >= 0 || strings.IndexByte(v, '\r') >= 0
}

// validFieldName reports whether k is an RFC 9110 token. The names that
// nearly every request or answer through the proxy carries are tokens by
// sight, and a switch on them is cheaper than the loop over their bytes
// (bench/README.md); TestKnownFieldNamesAreTokens checks each one.
func validFieldName(k string) bool {
	switch k {
	case "Accept", "Authorization", "Content-Length", "Content-Type", "Date",
		"Server", "User-Agent", "X-Idempotency-Key", "X-Request-Id":
		return true
	}
	return isToken(k)
}

// isToken reports whether k is an RFC 9110 token, byte by byte.
func isToken(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if !tokenByte[k[i]] {
			return false
		}
	}
	return true
}

// validHost accepts what may appear in a Host header: a name or address
// and a port, without spaces, controls or URL delimiters, as net/http's
// server does. It runs on every request, so each byte is one lookup in
// hostByte rather than a search of the delimiters.
func validHost(h string) bool {
	for i := 0; i < len(h); i++ {
		if !hostByte[h[i]] {
			return false
		}
	}
	return true
}

var hostByte = func() (t [256]bool) {
	for c := '!'; c < 0x7f; c++ {
		t[c] = !strings.ContainsRune("\"#/<>?@\\^`{|}", c)
	}
	return t
}()

// controlBytes flags, in eight bytes read as a little-endian word, each
// byte below 0x20 or equal to 0x7f by setting its high bit. The lowest
// flag is always a real one; flags above it may be false alarms (a borrow
// carried up), so a caller that finds one looks at that byte itself.
func controlBytes(x uint64) uint64 {
	below := (x - 0x2020202020202020) &^ x & 0x8080808080808080
	del := x ^ 0x7f7f7f7f7f7f7f7f
	return below | (del-0x0101010101010101)&^del&0x8080808080808080
}

var tokenByte = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

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
