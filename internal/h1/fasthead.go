package h1

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"math/bits"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
)

// A strict reader of the ordinary HTTP/1.1 head, beside net/http's parser.
//
// http.ReadResponse and http.ReadRequest are the largest user-space cost of
// a small request after the kernel (bench/README.md, "Profile, before and
// after"): a textproto reader, a string per line and per value, a map
// filled key by key after canonicalising each one. The fast readers here
// take only a head that is wholly in the buffer and inside a narrow,
// common subset (listed at scanHead), build the same Request or Response
// from one string, and for anything else say "not mine" without consuming
// a byte, so that net/http reads the same bytes as before. They never
// decide anything net/http would decide otherwise: the differential
// fuzzers (fasthead_test.go) hold them to net/http's result, field by
// field and body byte by byte.

// headField is one header line of a head: key canonical, value trimmed.
type headField struct{ key, value string }

// fastHead is a head read by scanHead. Its fields are kept in place, so
// that it stays on its reader's stack.
type fastHead struct {
	line   string // the start line
	fields [maxFastFields]headField
	count  int // fields[:count] came, in that order
	n      int // the head's length, blank line included
}

// maxFastFields bounds the fields a fast head may have: an ordinary head
// has a handful, and fields are kept on the stack up to this many.
const maxFastFields = 32

// scanHead reads the head at the start of buf if it is all there and in
// the subset both fast readers share:
//
//   - every line ends in CRLF (no bare LF, no CR elsewhere);
//   - no line but the start line begins with a space or tab (no obs-fold);
//   - a field's name is a non-empty token (no space before the colon);
//   - a value's bytes are visible, space, tab or obs-text (as net/http
//     accepts them: no control byte);
//   - at most maxFastFields fields.
//
// One pass over the bytes checks all that and finds the pieces; the head
// is then copied once into a string, with the names canonicalised as
// textproto.CanonicalMIMEHeaderKey does for a token, and lines, names and
// values are pieces of it. A value kept after the message keeps the whole
// head, at most a connection's 4 KiB buffer.
//
// It runs on both heads of every request, so the start line and values,
// most of a head's bytes, are looked at eight bytes at a time (lineStop),
// and a name's bytes through one table that says at once whether a byte
// is a token's and whether its case is canonical where it stands. The
// differential test and fuzzer in fastscan_test.go hold it to the
// byte-by-byte scan it replaced, input by input.
func scanHead(buf []byte, h *fastHead) bool {
	// The start line: visible ASCII and spaces up to its CRLF.
	lineEnd := lineStop(buf, 0, false)
	if lineEnd == 0 || lineEnd+1 >= len(buf) || buf[lineEnd] != '\r' || buf[lineEnd+1] != '\n' {
		return false
	}
	// Where each field's name, colon and trimmed value are in buf.
	var spans [maxFastFields]struct{ start, colon, vs, ve int32 }
	count := 0
	var miscased uint8
	i := lineEnd + 2
	for {
		if i+1 >= len(buf) {
			return false // not all here
		}
		if buf[i] == '\r' {
			if buf[i+1] != '\n' {
				return false
			}
			break // the blank line: the head's end
		}
		if count == maxFastFields {
			return false
		}
		k := i
		// A lower-case letter is out of place at a word's start, an
		// upper-case one elsewhere.
		misplaced := uint8(nameLower)
		for ; k < len(buf); k++ {
			t := nameByte[buf[k]]
			if t&nameToken == 0 {
				break
			}
			miscased |= t & misplaced
			misplaced = t >> 4
		}
		if k == i || k == len(buf) || buf[k] != ':' {
			return false
		}
		sp := &spans[count]
		sp.start, sp.colon = int32(i), int32(k)
		for k++; k < len(buf) && (buf[k] == ' ' || buf[k] == '\t'); k++ {
		}
		vs := k
		k = lineStop(buf, k, true)
		if k+1 >= len(buf) || buf[k] != '\r' || buf[k+1] != '\n' {
			return false
		}
		ve := k
		for ve > vs && (buf[ve-1] == ' ' || buf[ve-1] == '\t') {
			ve--
		}
		sp.vs, sp.ve = int32(vs), int32(ve)
		count++
		i = k + 2
	}
	n := i + 2
	var s string
	if miscased == 0 {
		s = string(buf[:n])
	} else {
		var sb strings.Builder
		sb.Grow(n)
		from := 0
		for _, sp := range spans[:count] {
			sb.Write(buf[from:sp.start])
			upper := true
			for _, c := range buf[sp.start:sp.colon] {
				if upper && 'a' <= c && c <= 'z' {
					c -= 'a' - 'A'
				} else if !upper && 'A' <= c && c <= 'Z' {
					c += 'a' - 'A'
				}
				sb.WriteByte(c)
				upper = c == '-'
			}
			from = int(sp.colon)
		}
		sb.Write(buf[from:n])
		s = sb.String()
	}
	h.line, h.count, h.n = s[:lineEnd], count, n
	for j, sp := range spans[:count] {
		h.fields[j] = headField{key: s[sp.start:sp.colon], value: s[sp.vs:sp.ve]}
	}
	return true
}

// lineStop returns the first index from k of a byte a line may not hold,
// or len(b): in a value (inValue) a control byte other than tab, or DEL;
// in a start line also tab and obs-text. A well-formed line stops at its
// CR.
//
// A word of eight bytes with none of them is skipped whole, as
// validFieldValue (transport.go) does; otherwise the lowest byte the word
// flags is the first such byte (a false flag can only sit above a true
// one, where a borrow ran on), and in a value a tab there is stepped over.
func lineStop(b []byte, k int, inValue bool) int {
	high := uint64(0x8080808080808080) // obs-text, refused in a start line
	if inValue {
		high = 0
	}
	for k+8 <= len(b) {
		x := binary.LittleEndian.Uint64(b[k:])
		m := controlBytes(x) | x&high
		if m == 0 {
			k += 8
			continue
		}
		k += bits.TrailingZeros64(m) >> 3
		if !inValue || b[k] != '\t' {
			return k
		}
		k++
	}
	for ; k < len(b); k++ {
		c := b[k]
		if c < ' ' && (c != '\t' || !inValue) || c == 0x7f || c >= 0x80 && !inValue {
			return k
		}
	}
	return k
}

// nameByte classes a byte of a field name: whether it is a token's
// (nameToken), a lower- or upper-case letter (nameLower, nameUpper), and
// in its high nibble which case would be out of place right after it:
// lower after '-', upper after anything else.
var nameByte = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		if !tokenByte[c] {
			continue
		}
		t[c] = nameToken | nameUpper<<4
		switch {
		case 'a' <= c && c <= 'z':
			t[c] |= nameLower
		case 'A' <= c && c <= 'Z':
			t[c] |= nameUpper
		case c == '-':
			t[c] = nameToken | nameLower<<4
		}
	}
	return t
}()

const (
	nameToken = 1 << iota
	nameLower
	nameUpper
)

// headerFacts is what the framing needs from a fast head's fields.
type headerFacts struct {
	contentLength int64 // -1 when there is none
	close         bool  // Connection has the token close
	host          string
	pragma        bool // a Pragma field came
}

// fastFacts reads what framing needs from h's fields, before anything is
// allocated. It gives up on Transfer-Encoding, Trailer and Expect (net/
// http's own rules apply), on more than one Content-Length or Host, and on
// a Content-Length that is not plain digits.
func fastFacts(h *fastHead) (headerFacts, bool) {
	f := headerFacts{contentLength: -1}
	haveHost := false
	for _, fl := range h.fields[:h.count] {
		switch fl.key {
		case "Transfer-Encoding", "Trailer", "Expect":
			return headerFacts{}, false
		case "Content-Length":
			if f.contentLength >= 0 {
				return headerFacts{}, false
			}
			n, ok := plainLength(fl.value)
			if !ok {
				return headerFacts{}, false
			}
			f.contentLength = n
		case "Host":
			if haveHost {
				return headerFacts{}, false
			}
			haveHost, f.host = true, fl.value
		case "Pragma":
			f.pragma = true
		case "Connection":
			if !f.close && containsToken1(fl.value, "close") {
				f.close = true
			}
		}
	}
	return f, true
}

// fastHeader builds the header map as textproto would from h's fields,
// with net/http's fix of Pragma, leaving out the field named skip: a
// request's Host, which http.ReadRequest takes out of the map (a
// response's skip is "", which no field's name is). Each key's values
// are a piece of one slice with its capacity cut, as textproto's are, so
// that an append to one does not write over the next; vals is that slice
// when it is long enough. The fields go into header, which is empty, or
// into a new map when it is nil.
func fastHeader(h *fastHead, f *headerFacts, vals []string, skip string, header http.Header) http.Header {
	if len(vals) < h.count {
		vals = make([]string, h.count)
	}
	if header == nil {
		header = make(http.Header, h.count)
	}
	for i, fl := range h.fields[:h.count] {
		if fl.key == skip {
			continue
		}
		if repeated(h.fields[:i], fl.key) {
			header[fl.key] = append(header[fl.key], fl.value)
			continue
		}
		vals[i] = fl.value
		header[fl.key] = vals[i : i+1 : i+1]
	}
	// RFC 7234, section 5.4, as net/http's fixPragmaCacheControl.
	if f.pragma && header["Pragma"][0] == "no-cache" {
		if _, cc := header["Cache-Control"]; !cc {
			header["Cache-Control"] = []string{"no-cache"}
		}
	}
	return header
}

// repeated reports whether key is one of fields': a look at the few
// fields before costs less than a map lookup for each, and a name rarely
// repeats.
func repeated(fields []headField, key string) bool {
	for _, f := range fields {
		if f.key == key {
			return true
		}
	}
	return false
}

// fastVals is how many values a fast message carries in its own
// allocation; a head with more fields allocates them apart.
const fastVals = 8

// fastResponse is a response read by fastReadResponse, its body and the
// backing of its header's values in one allocation.
type fastResponse struct {
	resp http.Response
	body fastBody
	vals [fastVals]string
}

// fastRequest is what a request read by fastReadRequest points to. With
// Server.RecycleRequests a connection has one and reads each of its
// requests into it, its header map included, which saves three
// allocations per request. The Request itself is apart: only WithContext
// can give it its context, and that allocates it anyway.
type fastRequest struct {
	url    url.URL
	body   fastBody
	vals   [fastVals]string
	header http.Header // empty between requests
}

// release drops what the last request left in fr, so that an idle
// connection keeps none of it alive and the next request starts empty.
func (fr *fastRequest) release() {
	clear(fr.header)
	*fr = fastRequest{header: fr.header}
}

// plainPathByte marks the bytes that url.ParseRequestURI keeps in a
// request path as they are, with no RawPath: letters, digits and the
// marks that URL.EscapedPath writes unescaped (-._~$&+,/:;=@). A '%'
// (an escape to decode) or anything else leaves the target to
// url.ParseRequestURI.
var plainPathByte = func() (t [256]bool) {
	for c := range 256 {
		t[c] = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			strings.IndexByte("-._~$&+,/:;=@", byte(c)) >= 0
	}
	return t
}()

// plainTarget fills u as url.ParseRequestURI would from an origin-form
// target ("/path?query") whose path is all plainPathByte, and reports
// whether it could. Its query is kept raw, as the parser keeps it; the
// head's scan has already refused control bytes and obs-text in it. Most
// requests have such a target, and the parser showed in a GET's profile
// (bench/README.md).
func plainTarget(u *url.URL, target string) bool {
	if target[0] != '/' {
		return false
	}
	path, query, hasQuery := strings.Cut(target, "?")
	for i := 0; i < len(path); i++ {
		if !plainPathByte[path[i]] {
			return false
		}
	}
	*u = url.URL{Path: path, RawQuery: query, ForceQuery: hasQuery && query == ""}
	return true
}

// plainLength parses a Content-Length of 1 to 18 digits: always within
// strconv.ParseUint(v, 10, 63), which net/http uses. Anything else (a
// sign, a list, an empty value, more digits) is net/http's to judge.
func plainLength(v string) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// containsToken1 reports whether the comma-separated value v holds token,
// ASCII case-insensitively, as httpguts.HeaderValuesContainsToken does
// (which trims only spaces and tabs: a value scanHead took has no CR or LF
// for TrimString to trim besides). containsToken (wire.go) folds case as
// Unicode does, where net/http folds ASCII only.
func containsToken1(v, token string) bool {
	for {
		comma := strings.IndexByte(v, ',')
		t := v
		if comma >= 0 {
			t = v[:comma]
		}
		if asciiEqualFold(textproto.TrimString(t), token) {
			return true
		}
		if comma < 0 {
			return false
		}
		v = v[comma+1:]
	}
}

// asciiEqualFold compares s with an ASCII token case-insensitively: a
// byte of s outside ASCII matches none of token's.
func asciiEqualFold(s, token string) bool {
	if len(s) != len(token) {
		return false
	}
	for i := 0; i < len(s); i++ {
		a, b := s[i], token[i]
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}

// fastReadResponse reads an answer's head from br as http.ReadResponse
// would, if it is in the fast path's subset (scanHead) and its start line
// is exactly "HTTP/1.1 DDD reason" with a status from 200 to 999. It
// gives up on an answer with neither Content-Length nor a status or method
// that rules out a body (its body would run until the connection closes),
// leaving all of br for http.ReadResponse. The header goes into header
// when it is not nil: an empty map (spareHeader).
func fastReadResponse(br *bufio.Reader, req *http.Request, header http.Header) (*http.Response, bool) {
	buf, _ := br.Peek(br.Buffered())
	var h fastHead
	if !scanHead(buf, &h) {
		return nil, false
	}
	line := h.line
	// "HTTP/1.1 200" and a reason phrase after a space, if any: a second
	// space, a tab, a sign or a status below 200 are net/http's.
	if len(line) < 12 || line[:9] != "HTTP/1.1 " || len(line) > 12 && line[12] != ' ' {
		return nil, false
	}
	code := 0
	for _, c := range []byte(line[9:12]) {
		if c < '0' || c > '9' {
			return nil, false
		}
		code = code*10 + int(c-'0')
	}
	if code < 200 {
		return nil, false
	}
	f, ok := fastFacts(&h)
	if !ok {
		return nil, false
	}
	method := http.MethodGet
	if req != nil && req.Method != "" {
		method = req.Method
	}
	// As net/http's fixLength: the method and status decide before the
	// Content-Length does.
	noBody := method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
	if !noBody && f.contentLength < 0 {
		return nil, false // a body until the connection closes
	}
	fr := new(fastResponse)
	fr.resp = http.Response{
		Status:     line[9:],
		StatusCode: code,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     fastHeader(&h, &f, fr.vals[:], "", header),
		Close:      f.close,
		Request:    req,
		Body:       http.NoBody,
	}
	if f.close {
		// net/http's shouldClose drops it from an answer's header.
		delete(fr.resp.Header, "Connection")
	}
	switch {
	case method == http.MethodHead:
		fr.resp.ContentLength = f.contentLength
	case noBody:
	case f.contentLength > 0:
		fr.resp.ContentLength = f.contentLength
		fr.body = fastBody{src: io.LimitedReader{R: br, N: f.contentLength}, closing: f.close}
		fr.resp.Body = &fr.body
	}
	br.Discard(h.n)
	return &fr.resp, true
}

// fastReadRequest reads a request's head from br as http.ReadRequest
// would, if it is in the fast path's subset (scanHead) and its line is
// "METHOD SP target SP HTTP/1.1" with a target of visible bytes and a
// method other than CONNECT (whose target is an authority, read
// differently) and PRI (HTTP/2's preface). The URL is net/http's own
// url.ParseRequestURI, or for a plain path the same fields set directly
// (plainTarget). The request comes with ctx as its context, and points
// into fr, which is released (or new); fr nil means a new one.
func fastReadRequest(br *bufio.Reader, ctx context.Context, fr *fastRequest) (*http.Request, bool) {
	buf, _ := br.Peek(br.Buffered())
	var h fastHead
	if !scanHead(buf, &h) {
		return nil, false
	}
	line := h.line
	sp1 := strings.IndexByte(line, ' ')
	if sp1 <= 0 || len(line) < sp1+11 || line[len(line)-9:] != " HTTP/1.1" {
		return nil, false
	}
	method, target := line[:sp1], line[sp1+1:len(line)-9]
	if target == "" || strings.IndexByte(target, ' ') >= 0 || method == http.MethodConnect || method == "PRI" {
		return nil, false
	}
	for i := 0; i < len(method); i++ {
		if !tokenByte[method[i]] {
			return nil, false
		}
	}
	f, ok := fastFacts(&h)
	if !ok {
		return nil, false
	}
	if fr == nil {
		fr = new(fastRequest)
	}
	u := &fr.url
	if !plainTarget(u, target) {
		var err error
		if u, err = url.ParseRequestURI(target); err != nil {
			return nil, false
		}
	}
	req := http.Request{
		Method:        method,
		URL:           u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        fastHeader(&h, &f, fr.vals[:], "Host", fr.header), // as http.ReadRequest, without Host
		ContentLength: max(f.contentLength, 0),
		Close:         f.close,
		Host:          u.Host,
		RequestURI:    target,
		Body:          http.NoBody,
	}
	if req.Host == "" {
		req.Host = f.host
	}
	fr.header = req.Header
	if f.contentLength > 0 {
		fr.body = fastBody{src: io.LimitedReader{R: br, N: f.contentLength}, closing: f.close}
		req.Body = &fr.body
	}
	br.Discard(h.n)
	return req.WithContext(ctx), true // req stays on the stack
}

// fastBody is a body framed by its Content-Length, read as net/http's
// (transfer.go, body) reads one: io.ErrUnexpectedEOF if the connection
// ends early, io.EOF with the last bytes, ErrBodyReadAfterClose after
// Close. Unlike net/http's it has no lock: Server and Transport hand it
// out only inside serverBody and h1body, which serialise its reads.
type fastBody struct {
	src     io.LimitedReader
	closing bool // the connection closes after the message
	sawEOF  bool
	closed  bool
}

func (b *fastBody) Read(p []byte) (int, error) {
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	if b.sawEOF {
		return 0, io.EOF
	}
	n, err := b.src.Read(p)
	if err == io.EOF {
		b.sawEOF = true
		if b.src.N > 0 {
			err = io.ErrUnexpectedEOF
		}
	}
	if err == nil && n > 0 && b.src.N == 0 {
		err = io.EOF
		b.sawEOF = true
	}
	return n, err
}

// Close reads what is left, as net/http's body does, unless the
// connection closes after the message anyway.
func (b *fastBody) Close() error {
	if b.closed {
		return nil
	}
	var err error
	if !b.sawEOF && !b.closing {
		_, err = io.Copy(io.Discard, b)
	}
	b.closed = true
	return err
}
