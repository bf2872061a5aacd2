package config

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"
)

// key is one configuration key, as docs/configuration.md lists them. Its
// set parses and checks a non-empty value into Settings: each key is
// checked here and nowhere else (load.go's rules check what spans several
// keys).
type key struct {
	name  string
	def   string // empty: unset
	usage string
	// secret values are never printed, nor echoed in an error.
	secret bool
	// boolean keys are switches on the command line: --intercept.enabled.
	boolean bool
	// list keys take a YAML list in the file (joined with commas); every
	// other key takes a single value, never a list or a mapping.
	list bool
	set  func(s *Settings, v string) error
}

var keys = []key{
	{name: "upstream.url", def: "https://api.dinie.com.br/api/v3", usage: "base URL of the Dinie API, path prefix included",
		set: httpURL(func(s *Settings) **url.URL { return &s.UpstreamURL })},
	{name: "upstream.timeout", def: "30s", usage: "time to wait for the upstream's response headers, and for a token when none is held",
		set: duration(func(s *Settings) *time.Duration { return &s.UpstreamTimeout })},
	{name: "upstream.ca_file", usage: "PEM bundle to trust for the upstream and the token endpoint, in addition to the system roots",
		set: rootCAs},
	{name: "upstream.transport", def: "http1", usage: "http1: pooled HTTP/1.1 connections, fastest; standard: net/http's transport, HTTP/2 when the upstream offers it",
		set: oneOf(func(s *Settings) *Implementation { return &s.Transport }, implementations)},
	{name: "upstream.max_replay_bytes", def: "1048576", usage: "largest request body kept to replay a request after an upstream 401, or to retry it; 0 disables the replay of bodies",
		set: number(0, "a number of bytes", func(s *Settings) *int64 { return &s.MaxReplayBytes })},
	{name: "upstream.replay_budget_bytes", def: "33554432", usage: "total bytes of request bodies held at once for a replay or retry; a body that does not fit is not held, and its request is sent once",
		set: number(0, "a number of bytes", func(s *Settings) *int64 { return &s.ReplayBudgetBytes })},
	{name: "upstream.retries", def: "2", usage: "how many times a resend-safe request is sent again after a transient failure (429 with a short Retry-After, 502, 503, 504, no answer); 0: never",
		set: number(0, "a number of retries", func(s *Settings) *int { return &s.Retries })},
	{name: "upstream.retry_max_wait", def: "10s", usage: "longest single wait before a retry; a Retry-After longer than this goes to the app at once",
		set: duration(func(s *Settings) *time.Duration { return &s.RetryMaxWait })},
	{name: "upstream.idempotency_keys", def: "off", usage: "auto: add an X-Idempotency-Key to POST, PUT, PATCH and DELETE requests that carry none, which makes them resend-safe; off: never",
		set: oneOf(func(s *Settings) *bool { return &s.IdempotencyKeys }, []choice[bool]{{"off", false}, {"auto", true}})},

	{name: "auth.token_url", usage: "token endpoint (default <upstream.url>/auth/token)",
		set: func(s *Settings, v string) error {
			u, err := parseHTTPURL(v)
			if err == nil {
				s.TokenURL = u.String()
			}
			return err
		}},
	{name: "auth.client_id", usage: "client id",
		set: text(func(s *Settings) *string { return &s.ClientID })},
	{name: "auth.client_id_file", usage: "file holding the client id",
		set: text(func(s *Settings) *string { return &s.ClientIDFile })},
	{name: "auth.client_secret", usage: "client secret", secret: true,
		set: text(func(s *Settings) *string { return &s.ClientSecret })},
	{name: "auth.client_secret_file", usage: "file holding the client secret; re-read when it changes",
		set: text(func(s *Settings) *string { return &s.ClientSecretFile })},
	{name: "auth.refresh_before", def: "5m", usage: "refresh the token when it has this much lifetime left (never more than half its lifetime)",
		set: duration(func(s *Settings) *time.Duration { return &s.RefreshBefore })},
	{name: "auth.pass_bearer", def: "session", usage: "which Bearer tokens an app sends are passed on unchanged: session, the session tokens Dinie issued through this proxy; any, every Bearer but the stand-in",
		set: oneOf(func(s *Settings) *PassBearer { return &s.PassBearer }, passBearers)},
	{name: "auth.session_tokens_max", def: "10000", usage: "session tokens remembered at once",
		set: number(1, "a positive number of tokens", func(s *Settings) *int { return &s.SessionTokensMax })},

	{name: "listen.proxy", def: "127.0.0.1:8080", usage: "address applications connect to; a loopback address unless listen.allow_remote",
		set: listenAddr(func(s *Settings) *string { return &s.ListenProxy })},
	{name: "listen.allow_remote", def: "false", usage: "allow listen.proxy on an address other than loopback: whoever reaches the proxy uses the partner's credentials", boolean: true,
		set: boolean(func(s *Settings) *bool { return &s.AllowRemote })},
	{name: "listen.proxy_server", def: "http1", usage: "http1: the proxy's own HTTP/1.1 server, fastest; standard: net/http's server",
		set: oneOf(func(s *Settings) *Implementation { return &s.ProxyServer }, implementations)},
	{name: "listen.admin", def: "127.0.0.1:9090", usage: "address of /metrics, /healthz and /readyz",
		set: listenAddr(func(s *Settings) *string { return &s.ListenAdmin })},

	{name: "limits.max_in_flight", def: "1024", usage: "requests served at once; one more gets 503 overloaded at once, never queued",
		set: number(1, "a positive number of requests", func(s *Settings) *int { return &s.MaxInFlight })},
	{name: "limits.max_tunnels", def: "1024", usage: "tunnels open at once (plain, intercepted, passthrough); one more CONNECT gets 503 overloaded",
		set: number(1, "a positive number of tunnels", func(s *Settings) *int { return &s.MaxTunnels })},

	{name: "intercept.enabled", def: "false", usage: "accept CONNECT to the upstream host's TLS port and intercept its TLS with the proxy's own CA (apps that keep https:// URLs)", boolean: true,
		set: boolean(func(s *Settings) *bool { return &s.Intercept.Enabled })},
	{name: "intercept.ca_dir", usage: "directory the app reads, where ca.crt, bundle.pem and truststore.p12 are written; required when intercept.enabled unless intercept.ca_cert_file",
		set: text(func(s *Settings) *string { return &s.Intercept.CADir })},
	{name: "intercept.key_dir", usage: "directory only the proxy reads, keeping the intermediate CA's key (mode 0600) so that a restart reuses the CA",
		set: text(func(s *Settings) *string { return &s.Intercept.KeyDir })},
	{name: "intercept.ca_cert_file", usage: "a name-constrained CA certificate (PEM, chain after it) to issue from instead of creating one",
		set: text(func(s *Settings) *string { return &s.Intercept.CACertFile })},
	{name: "intercept.ca_key_file", usage: "the private key of intercept.ca_cert_file",
		set: text(func(s *Settings) *string { return &s.Intercept.CAKeyFile })},
	{name: "intercept.passthrough", usage: "comma-separated host patterns (api.stripe.com, *.amazonaws.com, *, host:port) whose CONNECT tunnels are relayed untouched; no port means 443", list: true,
		set: func(s *Settings, v string) error {
			for p := range strings.SplitSeq(v, ",") {
				if p = strings.TrimSpace(p); p != "" {
					s.Intercept.Passthrough = append(s.Intercept.Passthrough, p)
				}
			}
			return nil
		}},

	{name: "log.level", def: "info", usage: "debug, info, warn or error",
		set: oneOf(func(s *Settings) *zapcore.Level { return &s.LogLevel }, []choice[zapcore.Level]{
			{"debug", zapcore.DebugLevel}, {"info", zapcore.InfoLevel}, {"warn", zapcore.WarnLevel}, {"error", zapcore.ErrorLevel}})},
	{name: "log.format", def: "json", usage: "json or console",
		set: oneOf(func(s *Settings) *LogFormat { return &s.LogFormat }, logFormats)},
	{name: "shutdown.timeout", def: "25s", usage: "how long in-flight requests may finish after SIGTERM",
		set: duration(func(s *Settings) *time.Duration { return &s.ShutdownTimeout })},
}

func lookupKey(name string) (key, bool) {
	for _, k := range keys {
		if k.name == name {
			return k, true
		}
	}
	return key{}, false
}

// envName is the environment variable of a key: auth.client_secret is
// DINIE_PROXY_AUTH_CLIENT_SECRET.
func envName(key string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

const envPrefix = "DINIE_PROXY_"

// The parsers below make a key's set from the field it fills. Their
// errors are the part of the message after "key: ".

func text(field func(*Settings) *string) func(*Settings, string) error {
	return func(s *Settings, v string) error { *field(s) = v; return nil }
}

func duration(field func(*Settings) *time.Duration) func(*Settings, string) error {
	return func(s *Settings, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("%q is not a positive duration such as 30s or 5m", v)
		}
		*field(s) = d
		return nil
	}
}

func number[T int | int64](least T, what string, field func(*Settings) *T) func(*Settings, string) error {
	return func(s *Settings, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || T(n) < least || int64(T(n)) != n {
			return fmt.Errorf("%q is not %s", v, what)
		}
		*field(s) = T(n)
		return nil
	}
}

func boolean(field func(*Settings) *bool) func(*Settings, string) error {
	return func(s *Settings, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not true or false", v)
		}
		*field(s) = b
		return nil
	}
}

// choice is one of the words a key accepts, and what it means.
type choice[T any] struct {
	word  string
	value T
}

// The words of the keys whose values are types of this package; their
// String methods read them here too.
var (
	implementations = []choice[Implementation]{{"http1", HTTP1}, {"standard", Standard}}
	passBearers     = []choice[PassBearer]{{"session", PassSession}, {"any", PassAny}}
	logFormats      = []choice[LogFormat]{{"json", JSON}, {"console", Console}}
)

// wordOf is the word that stands for v among choices; the first, the
// zero value's, for a value no word stands for.
func wordOf[T comparable](choices []choice[T], v T) string {
	for _, c := range choices {
		if c.value == v {
			return c.word
		}
	}
	return choices[0].word
}

func oneOf[T any](field func(*Settings) *T, choices []choice[T]) func(*Settings, string) error {
	return func(s *Settings, v string) error {
		words := make([]string, len(choices))
		for i, c := range choices {
			if c.word == v {
				*field(s) = c.value
				return nil
			}
			words[i] = c.word
		}
		return fmt.Errorf("%q is not %s", v, orList(words))
	}
}

// orList is "a or b", or "one of a, b, c".
func orList(words []string) string {
	if len(words) == 2 {
		return words[0] + " or " + words[1]
	}
	return "one of " + strings.Join(words, ", ")
}

func httpURL(field func(*Settings) **url.URL) func(*Settings, string) error {
	return func(s *Settings, v string) error {
		u, err := parseHTTPURL(v)
		if err == nil {
			*field(s) = u
		}
		return err
	}
}

func parseHTTPURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err == nil && u.User != nil {
		return nil, errors.New("must not carry credentials in the URL")
	}
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q is not an absolute http(s) URL", redactUserinfo(raw))
	}
	return u, nil
}

// redactUserinfo hides what may be a password in a URL that did not parse
// (so url.URL.Redacted cannot help): everything between the scheme and the
// last '@'.
func redactUserinfo(raw string) string {
	at := strings.LastIndex(raw, "@")
	if at < 0 {
		return raw
	}
	scheme, _, ok := strings.Cut(raw[:at], "://")
	if !ok {
		return "xxxxx" + raw[at:]
	}
	return scheme + "://xxxxx" + raw[at:]
}

func listenAddr(field func(*Settings) *string) func(*Settings, string) error {
	return func(s *Settings, v string) error {
		_, port, err := net.SplitHostPort(v)
		if err != nil {
			return fmt.Errorf("%q is not host:port", v)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			return fmt.Errorf("%q has no valid port", v)
		}
		*field(s) = v
		return nil
	}
}

func rootCAs(s *Settings, file string) error {
	pem, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("cannot read %s: %w", file, errors.Unwrap(err))
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("%s holds no PEM certificate", file)
	}
	s.RootCAs = pool
	return nil
}

// readCredentialFile checks what tokencache will read: a file that exists
// and holds more than whitespace. Its content is never echoed.
func readCredentialFile(file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("cannot read %s: %w", file, errors.Unwrap(err))
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return fmt.Errorf("%s is empty", file)
	}
	return nil
}
