package tokencache

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// maxResponseBytes bounds what is read of a token endpoint response. A real
// answer is well under 4 KiB; the bound keeps a broken or hostile endpoint from
// making us buffer without limit.
const maxResponseBytes = 1 << 20

// Result classifies a fetch for the dinie_proxy_token_fetches_total metric
// and for the failure policy.
type Result string

// The values of the result label, as docs/operations.md names them.
const (
	ResultSuccess     Result = "success"
	ResultRejected    Result = "rejected"     // 400 or 401: the credentials are wrong
	ResultRateLimited Result = "rate_limited" // 429
	ResultError       Result = "error"        // anything else: 5xx, network, malformed 200
)

// Problem is an RFC 9457 problem document, as Dinie sends with 4xx and 5xx.
type Problem struct {
	Type     string         `json:"type"`
	Title    string         `json:"title"`
	Status   int            `json:"status"`
	Detail   string         `json:"detail"`
	Instance string         `json:"instance,omitempty"`
	Code     string         `json:"code,omitempty"`
	Param    string         `json:"param,omitempty"`
	Errors   []ProblemField `json:"errors,omitempty"`
}

// ProblemField is one entry of a problem's errors[] array.
type ProblemField struct {
	Param  string `json:"param"`
	Detail string `json:"detail"`
	Code   string `json:"code,omitempty"`
}

// FetchError describes a failed token fetch. Callers inspect it with
// errors.As. Its message is safe to log: it never holds the client secret,
// nor a token, nor raw response bytes (a malformed 200 may carry a token).
type FetchError struct {
	// URL is the token endpoint, with any userinfo redacted.
	URL string
	// StatusCode is the HTTP status, or 0 when no response arrived.
	StatusCode int
	// Problem is the parsed problem+json body, or nil.
	Problem *Problem
	// RetryAfter is the parsed Retry-After header; 0 when absent, malformed
	// or in the past.
	RetryAfter time.Duration
	// Err is the underlying cause.
	Err error
}

func (e *FetchError) Error() string {
	var b strings.Builder
	// No package prefix: a FetchError reaches callers inside an
	// UnavailableError, whose message carries it.
	b.WriteString("fetch token from ")
	b.WriteString(e.URL)
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, ": status %d", e.StatusCode)
	}
	if p := e.Problem; p != nil {
		if p.Title != "" {
			b.WriteString(": ")
			b.WriteString(p.Title)
		}
		if p.Detail != "" {
			b.WriteString(": ")
			b.WriteString(p.Detail)
		}
		if p.Code != "" {
			fmt.Fprintf(&b, " (code %s)", p.Code)
		}
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *FetchError) Unwrap() error { return e.Err }

// Result classifies the failure for metrics and the retry policy.
func (e *FetchError) Result() Result {
	switch e.StatusCode {
	case http.StatusBadRequest, http.StatusUnauthorized:
		return ResultRejected
	case http.StatusTooManyRequests:
		return ResultRateLimited
	}
	return ResultError
}

// tokenResponse is the 200 body of POST /auth/token (Dinie API 2026-03-01).
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
}

// credentials are sent as HTTP Basic. They are a value type so that a
// rotation swaps them whole and a fetch never sees a new id with an old secret.
type credentials struct {
	id, secret string
}

// basicAuth encodes the raw id and secret, as Dinie's SDKs do. Unlike
// x/oauth2 we do not form-encode them first (RFC 6749 §2.3.1 says to, but
// Dinie decodes plain base64, so a secret with '+' or '%' would break).
func (c credentials) basicAuth() string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(c.id+":"+c.secret))
}

var formBody = url.Values{"grant_type": {"client_credentials"}}.Encode()

// requestToken performs one POST to the token endpoint. It does not touch
// the cache's state.
func requestToken(ctx context.Context, client *http.Client, tokenURL string, creds credentials, now time.Time) (tokenResponse, error) {
	fail := func(status int, err error) (tokenResponse, error) {
		return tokenResponse{}, &FetchError{URL: redactURL(tokenURL), StatusCode: status, Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tokenURL, strings.NewReader(formBody))
	if err != nil {
		return fail(0, fmt.Errorf("build request: %w", err))
	}
	req.Header.Set("Authorization", creds.basicAuth())
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")

	resp, err := client.Do(req)
	if err != nil {
		// *url.Error repeats the URL; keep only its cause.
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err
		}
		return fail(0, err)
	}
	defer resp.Body.Close()

	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return fail(resp.StatusCode, fmt.Errorf("read response: %w", err))
	}
	if len(body) > maxResponseBytes {
		return fail(resp.StatusCode, fmt.Errorf("response larger than %d bytes", maxResponseBytes))
	}
	if resp.StatusCode != http.StatusOK {
		return tokenResponse{}, &FetchError{
			URL:        redactURL(tokenURL),
			StatusCode: resp.StatusCode,
			Problem:    parseProblem(resp.Header.Get("Content-Type"), body),
			RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), now),
		}
	}
	tok, err := parseTokenResponse(body)
	if err != nil {
		return fail(resp.StatusCode, err)
	}
	return tok, nil
}

// parseTokenResponse validates a 200 body. The errors never quote the body:
// it may hold a token.
func parseTokenResponse(body []byte) (tokenResponse, error) {
	var tok tokenResponse
	if err := json.Unmarshal(body, &tok); err != nil {
		if typeErr, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
			return tokenResponse{}, fmt.Errorf("decode token response: field %q has the wrong type", typeErr.Field)
		}
		return tokenResponse{}, errors.New("decode token response: not a JSON object")
	}
	switch {
	case tok.AccessToken == "":
		return tokenResponse{}, errors.New("token response has no access_token")
	case !strings.EqualFold(tok.TokenType, "bearer"):
		// Quoting token_type is safe only when it is short and printable;
		// %.20q does both.
		return tokenResponse{}, fmt.Errorf("token response has token_type %.20q, want bearer", tok.TokenType)
	case tok.ExpiresIn <= 0:
		return tokenResponse{}, fmt.Errorf("token response has expires_in %d, want > 0", tok.ExpiresIn)
	}
	return tok, nil
}

// parseProblem returns the problem document in body, or nil when the body is
// not one. Dinie sends application/problem+json; plain JSON is accepted too
// since proxies in front of it sometimes rewrite the type.
func parseProblem(contentType string, body []byte) *Problem {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil || (mt != "application/problem+json" && mt != "application/json") {
		return nil
	}
	var p Problem
	if json.Unmarshal(body, &p) != nil {
		return nil
	}
	if p.Title == "" && p.Detail == "" && p.Code == "" && p.Type == "" {
		return nil
	}
	return &p
}

// parseRetryAfter reads delta-seconds or an HTTP date (RFC 9110 §10.2.3).
// Absent, malformed or past values are 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	// Saturate at a day rather than overflow; the caller caps it further.
	const ceiling = 24 * time.Hour
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		return time.Duration(min(max(secs, 0), int64(ceiling/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now), 0), ceiling)
	}
	return 0
}

func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid URL)"
	}
	return u.Redacted()
}
