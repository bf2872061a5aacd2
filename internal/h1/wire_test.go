package h1

import (
	"bufio"
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// writeField writes one header's lines as Header.Write does: invalid names
// dropped, CR and LF turned into spaces, spaces and tabs trimmed.
func sameAsHeaderWrite(t *testing.T, k string, vv []string) {
	t.Helper()
	var want bytes.Buffer
	if err := (http.Header{k: vv}).Write(&want); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	bw := bufio.NewWriter(&got)
	writeField(bw, k, vv)
	bw.Flush()
	if got.String() != want.String() {
		t.Errorf("writeField(%q, %q) wrote\n%q\nHeader.Write wrote\n%q", k, vv, got.String(), want.String())
	}
}

func TestWriteFieldWritesWhatHeaderWriteDoes(t *testing.T) {
	tests := []struct {
		k  string
		vv []string
	}{
		{"Content-Type", []string{"application/json"}},
		{"Authorization", []string{"Bearer fake-token"}},
		{"X-Multi", []string{"a", "b", ""}},
		{"X-Empty", []string{""}},
		{"X-None", nil},
		{"X-Injected", []string{"a\r\nX-Evil: 1"}},
		{"X-Lf", []string{"a\nb"}},
		{"X-Cr", []string{"a\rb"}},
		{"X-Cr-End", []string{"abc\r"}},
		{"X-Lf-Start", []string{"\nabc"}},
		{"X-Crlf-Only", []string{"\r\n"}},
		{"X-Padded", []string{"  v \t", "\tv", "v ", " "}},
		{"X-Inner-Space", []string{"a b\tc"}},
		{"X-Other-Space", []string{"\vv\f", "v\x00"}},
		{"X-Long", []string{"Bearer " + string(bytes.Repeat([]byte("x"), 1000)) + "\n"}},
		{"X-Utf8", []string{"ção"}},
		{"Bad Name", []string{"v"}},
		{"X:Y", []string{"v"}},
		{"", []string{"v"}},
		{"X-Ção", []string{"v"}},
		{"X-\x80", []string{"v"}},
		{"!#$%&'*+-.^_`|~09AZaz", []string{"v"}},
		{"Date", []string{"Sun, 06 Dec 2026 11:00:00 GMT"}},
	}
	for _, tt := range tests {
		t.Run(strconv.Quote(tt.k), func(t *testing.T) { sameAsHeaderWrite(t, tt.k, tt.vv) })
	}
}

func FuzzWriteField(f *testing.F) {
	f.Add("X-Key", " v\r\n", "w")
	f.Add("Bad Name", "v", "")
	f.Add("Authorization", "Bearer x\ny", "\t")
	f.Fuzz(func(t *testing.T, k, v1, v2 string) {
		sameAsHeaderWrite(t, k, []string{v1, v2})
	})
}

// validFieldName takes the names its switch lists without looking at their
// bytes: each must pass the byte-by-byte check.
func TestKnownFieldNamesAreTokens(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "wire.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	ast.Inspect(f, func(n ast.Node) bool {
		fn, ok := n.(*ast.FuncDecl)
		if !ok {
			return true
		}
		if fn.Name.Name != "validFieldName" {
			return false
		}
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
				s, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				names = append(names, s)
			}
			return true
		})
		return false
	})
	if len(names) == 0 {
		t.Fatal("no names found in validFieldName's switch")
	}
	for _, k := range names {
		if !isToken(k) {
			t.Errorf("validFieldName takes %q without a check, but it is not a token", k)
		}
	}
}

// validHost takes, byte by byte, what RFC 3986 allows in a host and port
// (unreserved, sub-delims, ':' and an IP literal's brackets, '%' of an
// escape), which is also what net/http's server lets through; the whole
// value is taken or refused.
func TestValidHostBytes(t *testing.T) {
	const allowed = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" +
		"-._~" + "!$&'()*+,;=" + ":[]%"
	for c := range 256 {
		want := strings.IndexByte(allowed, byte(c)) >= 0
		if got := validHost("api.dinie.com.br:" + string([]byte{byte(c)}) + "443"); got != want {
			t.Errorf("byte %#02x: valid %v, want %v", c, got, want)
		}
	}
	if !validHost("") || !validHost("[::1]:8080") {
		t.Error("an empty host or an IPv6 literal refused")
	}
}
