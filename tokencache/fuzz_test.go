package tokencache

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The token endpoint's bytes are untrusted: the parsers must never panic,
// never accept what the contract rejects, and never quote a token in an
// error.

func FuzzParseTokenResponse(f *testing.F) {
	for _, seed := range []string{
		`{"access_token":"fake-token","token_type":"bearer","expires_in":3600}`,
		`{"access_token":"fake-token","token_type":"Bearer","expires_in":1}`,
		`{"access_token":"","token_type":"bearer","expires_in":3600}`,
		`{"access_token":"fake-token","token_type":"mac","expires_in":3600}`,
		`{"access_token":"fake-token","token_type":"bearer","expires_in":-1}`,
		`{"access_token":"fake-token","token_type":"bearer","expires_in":1e99}`,
		`{"access_token":7,"token_type":"bearer","expires_in":3600}`,
		`[]`, `null`, `"fake-token"`, ``, `{`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		tok, err := parseTokenResponse(body)
		if err != nil {
			if tok != (tokenResponse{}) {
				t.Error("a rejected response returned a token")
			}
			return
		}
		if tok.AccessToken == "" || !strings.EqualFold(tok.TokenType, "bearer") || tok.ExpiresIn <= 0 {
			t.Errorf("accepted an invalid response: type %q expires_in %d", tok.TokenType, tok.ExpiresIn)
		}
	})
}

func FuzzParseTokenResponseNeverQuotesTheToken(f *testing.F) {
	f.Add("fake-token-value", "mac", int64(3600))
	f.Add("fake-token-value", "bearer", int64(0))
	f.Fuzz(func(t *testing.T, token, tokenType string, expiresIn int64) {
		// An error may quote token_type, so a token inside it, or inside
		// its quoted form ("\x00000000" holds "00000000"), is not a leak
		// of access_token.
		if len(token) < 8 || strings.Contains(tokenType, token) || strings.Contains(strconv.Quote(tokenType), token) {
			return
		}
		body := `{"access_token":` + quote(token) + `,"token_type":` + quote(tokenType) + `,"expires_in":` + strconv.FormatInt(expiresIn, 10) + `}`
		if _, err := parseTokenResponse([]byte(body)); err != nil && strings.Contains(err.Error(), token) {
			t.Error("error message quotes the token")
		}
	})
}

func FuzzParseProblem(f *testing.F) {
	f.Add("application/problem+json", []byte(`{"type":"about:blank","title":"Unauthorized","status":401,"detail":"fake","code":"invalid_client","errors":[{"param":"grant_type","detail":"fake","code":"x"}]}`))
	f.Add("application/json; charset=utf-8", []byte(`{"title":"x"}`))
	f.Add("text/html", []byte(`<h1>502</h1>`))
	f.Add("application/problem+json", []byte(`{"errors":7}`))
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		p := parseProblem(contentType, body)
		if p != nil && p.Title == "" && p.Detail == "" && p.Code == "" && p.Type == "" {
			t.Error("returned an empty problem")
		}
	})
}

func FuzzParseRetryAfter(f *testing.F) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, seed := range []string{"0", "120", "-5", "99999999999999999999", "Sun, 01 Mar 2026 12:01:30 GMT", "Sunday, 01-Mar-26 12:01:30 GMT", "garbage", ""} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if d := parseRetryAfter(v, now); d < 0 || d > 24*time.Hour {
			t.Errorf("parseRetryAfter(%q) = %v, want within [0, 24h]", v, d)
		}
	})
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := map[string]time.Duration{
		"":                              0,
		"120":                           2 * time.Minute,
		" 7 ":                           7 * time.Second,
		"-5":                            0,
		"1.5":                           0,
		"Sun, 01 Mar 2026 12:01:30 GMT": 90 * time.Second,
		"Sun, 01 Mar 2026 11:00:00 GMT": 0,
		"999999999999":                  24 * time.Hour,
	}
	for in, want := range tests {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", in, got, want)
		}
	}
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
