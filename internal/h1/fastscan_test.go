package h1

import (
	"bytes"
	"strings"
	"testing"
)

// scanHeadRef is scanHead as it was before its lines were read eight bytes
// at a time: one byte at a time, through tables, with the case of each
// name tracked byte by byte. The fast readers were held to net/http with
// it (FuzzFastResponseHead, FuzzFastRequestHead); scanHead is held to it,
// on every input, by TestScanHeadMatchesRef and FuzzScanHead.
func scanHeadRef(buf []byte, h *fastHead) bool {
	lineEnd := bytes.IndexByte(buf, '\n')
	if lineEnd < 1 || buf[lineEnd-1] != '\r' || !visibleLineRef(buf[:lineEnd-1]) {
		return false
	}
	// Where each field's name, colon and trimmed value are in buf.
	var spans [maxFastFields]struct{ start, colon, vs, ve int }
	count := 0
	canonical := true
	i := lineEnd + 1
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
		upper := true
		for ; k < len(buf) && tokenByte[buf[k]]; k++ {
			c := buf[k]
			if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
				canonical = false
			}
			upper = c == '-'
		}
		if k == i || k == len(buf) || buf[k] != ':' {
			return false
		}
		sp := &spans[count]
		sp.start, sp.colon = i, k
		for k++; k < len(buf) && (buf[k] == ' ' || buf[k] == '\t'); k++ {
		}
		sp.vs, sp.ve = k, k
		for ; k < len(buf); k++ {
			if c := buf[k]; fieldVCharRef[c] {
				sp.ve = k + 1
			} else if c != ' ' && c != '\t' {
				break
			}
		}
		if k+1 >= len(buf) || buf[k] != '\r' || buf[k+1] != '\n' {
			return false
		}
		count++
		i = k + 2
	}
	n := i + 2
	var s string
	if canonical {
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
			from = sp.colon
		}
		sb.Write(buf[from:n])
		s = sb.String()
	}
	h.line, h.count, h.n = s[:lineEnd-1], count, n
	for j, sp := range spans[:count] {
		h.fields[j] = headField{key: s[sp.start:sp.colon], value: s[sp.vs:sp.ve]}
	}
	return true
}

// visibleLine reports whether a start line is not empty and holds only
// visible ASCII and spaces: no tab, no control, no obs-text.
func visibleLineRef(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c < ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// fieldVCharRef holds the bytes textproto accepts in a value but space and
// tab: visible ASCII and obs-text (0x80 and above).
var fieldVCharRef = func() (t [256]bool) {
	for c := 0x21; c < 0x100; c++ {
		t[c] = c != 0x7f
	}
	return t
}()

// checkScanHead fails t unless scanHead and scanHeadRef agree on raw:
// both take it or neither, and what they fill in is the same.
func checkScanHead(t *testing.T, raw []byte) {
	t.Helper()
	var got, want fastHead
	gotOK, wantOK := scanHead(raw, &got), scanHeadRef(raw, &want)
	if gotOK != wantOK {
		t.Fatalf("scanHead says %v, the byte-by-byte scan %v, on %q", gotOK, wantOK, raw)
	}
	if got != want {
		t.Fatalf("scanHead read %q as\n%+v\nthe byte-by-byte scan as\n%+v", raw, got, want)
	}
}

// scanSeeds are the fast readers' fuzz seeds.
func scanSeeds(tb testing.TB) []string {
	return append(differentialSeeds(tb), trickyHeads...)
}

// TestScanHeadMatchesRef runs both scans on each seed cut at every length
// and with each byte, in turn, replaced by the bytes each check turns on
// (controls, tab, CR, LF, DEL, obs-text, the colon, case, '-'), so that
// every check meets them at every offset within a word.
func TestScanHeadMatchesRef(t *testing.T) {
	swaps := []byte{0x00, '\t', '\n', '\r', 0x1f, ' ', '!', '-', ':', 'a', 'A', 'z', 'Z', '~', 0x7f, 0x80, 0xff}
	for _, s := range scanSeeds(t) {
		raw := []byte(s)
		for n := 0; n <= len(raw); n++ {
			checkScanHead(t, raw[:n])
		}
		mutated := bytes.Clone(raw)
		for i := range mutated {
			for _, c := range swaps {
				mutated[i] = c
				checkScanHead(t, mutated)
			}
			mutated[i] = raw[i]
		}
	}
	// Long lines, where the word loop runs and hands over to the byte loop
	// at every remainder.
	for n := 0; n < 40; n++ {
		v := strings.Repeat("v", n)
		for _, head := range []string{
			"GET /" + v + " HTTP/1.1\r\nHost: x\r\n\r\n",
			"HTTP/1.1 200 OK\r\nX-A: " + v + "\r\nX-B:\t" + v + "\t" + v + " \r\n\r\n",
			"HTTP/1.1 200 OK\r\nX-A: " + v + "\x7f" + v + "\r\n\r\n",
			"HTTP/1.1 200 OK\r\nX-A: " + v + "\x01\r\n\r\n",
			"HTTP/1.1 200 OK\r\nX-A: " + v + "\xe9\xff\r\n\r\n",
			"HTTP/1.1 200 \xe9" + v + "\r\n\r\n",
			"HTTP/1.1 200 " + v + "\t\r\n\r\n",
		} {
			raw := []byte(head)
			for i := 0; i <= len(raw); i++ {
				checkScanHead(t, raw[:i])
			}
		}
	}
}

// FuzzScanHead holds scanHead to scanHeadRef on whatever the fuzzer makes
// of the fast readers' seeds.
func FuzzScanHead(f *testing.F) {
	for _, s := range scanSeeds(f) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		checkScanHead(t, raw)
	})
}

// BenchmarkScanHead reads heads like bench/run.sh's GET: wrk's request
// and nginx's answer, with the byte-by-byte scan beside for comparison.
// The scans are called directly, so that the head stays on the stack as
// in the fast readers.
func BenchmarkScanHead(b *testing.B) {
	heads := []struct{ name, raw string }{
		{"request", "GET /api/v3/customers HTTP/1.1\r\nHost: 127.0.0.1:18701\r\n\r\n"},
		{"answer", "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 06 Dec 2026 11:00:00 GMT\r\nContent-Type: application/json\r\nContent-Length: 27\r\nConnection: keep-alive\r\n\r\n{\"data\":[],\"has_more\":false}"},
	}
	for _, head := range heads {
		raw := []byte(head.raw)
		b.Run("new/"+head.name, func(b *testing.B) {
			for b.Loop() {
				var h fastHead
				if !scanHead(raw, &h) {
					b.Fatal("not read")
				}
			}
		})
		b.Run("ref/"+head.name, func(b *testing.B) {
			for b.Loop() {
				var h fastHead
				if !scanHeadRef(raw, &h) {
					b.Fatal("not read")
				}
			}
		})
	}
}
