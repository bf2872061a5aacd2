// Package config reads dinie-auth-proxy's configuration (docs/configuration.md):
// every key from its four sources (built-in defaults, the YAML file,
// DINIE_PROXY_* environment variables, command-line flags), each checked
// once, in the key's own entry of one table, into plain Settings.
//
// It is the only package that knows viper, and only main imports it: the
// core packages take config structs of their own. It refuses what a typo
// would otherwise turn into a silent default: an unknown key in the file,
// an unknown flag, and an unknown DINIE_PROXY_* variable, each named with
// the closest key. It never prints a secret: errors name keys, never the
// values of secret ones, and --print-config redacts them.
package config

import (
	"crypto/x509"
	"fmt"
	"net/url"
	"time"

	"go.uber.org/zap/zapcore"
)

// Settings is the validated configuration. Load fills every field; each
// comment names the key that sets it.
type Settings struct {
	// UpstreamURL is upstream.url: an absolute http(s) URL without
	// credentials, path prefix included.
	UpstreamURL *url.URL
	// UpstreamTimeout is upstream.timeout: positive.
	UpstreamTimeout time.Duration
	// RootCAs is the system roots plus upstream.ca_file's certificates. Nil
	// means the system roots alone.
	RootCAs *x509.CertPool
	// Transport is upstream.transport.
	Transport Implementation
	// MaxReplayBytes is upstream.max_replay_bytes; zero: no body is replayed.
	MaxReplayBytes int64
	// ReplayBudgetBytes is upstream.replay_budget_bytes; zero: none held.
	ReplayBudgetBytes int64
	// Retries is upstream.retries; zero: never retried.
	Retries int
	// RetryMaxWait is upstream.retry_max_wait: positive.
	RetryMaxWait time.Duration
	// IdempotencyKeys is upstream.idempotency_keys: true for auto.
	IdempotencyKeys bool

	// TokenURL is auth.token_url, or <upstream.url>/auth/token when unset:
	// an absolute http(s) URL without credentials.
	TokenURL string
	// ClientID or ClientIDFile (auth.client_id, auth.client_id_file):
	// exactly one is set, and the file was readable and not empty.
	ClientID, ClientIDFile string
	// ClientSecret or ClientSecretFile (auth.client_secret,
	// auth.client_secret_file): exactly one is set, as for the id.
	ClientSecret, ClientSecretFile string
	// RefreshBefore is auth.refresh_before: positive.
	RefreshBefore time.Duration
	// PassBearer is auth.pass_bearer.
	PassBearer PassBearer
	// SessionTokensMax is auth.session_tokens_max: at least 1.
	SessionTokensMax int

	// ListenProxy is listen.proxy (host:port): a loopback address unless
	// AllowRemote.
	ListenProxy string
	// AllowRemote is listen.allow_remote.
	AllowRemote bool
	// ProxyServer is listen.proxy_server.
	ProxyServer Implementation
	// ListenAdmin is listen.admin (host:port).
	ListenAdmin string

	// MaxInFlight is limits.max_in_flight: at least 1.
	MaxInFlight int
	// MaxTunnels is limits.max_tunnels: at least 1.
	MaxTunnels int

	// Intercept is intercept.*.
	Intercept Intercept

	// LogLevel is log.level.
	LogLevel zapcore.Level
	// LogFormat is log.format.
	LogFormat LogFormat
	// ShutdownTimeout is shutdown.timeout: positive.
	ShutdownTimeout time.Duration

	// Warnings are settings that are valid but most likely a mistake, for
	// main to log once it has a logger.
	Warnings []string

	sources map[string]Source
}

// Intercept is intercept.*. The CA's own rules (a directory or a supplied
// CA, constraints, the upstream named by a DNS name) are checked by the
// intercept package when it starts, and the passthrough patterns by the
// proxy package: each in the one place that uses them.
type Intercept struct {
	// Enabled is intercept.enabled.
	Enabled bool
	// CADir is intercept.ca_dir; empty: none given.
	CADir string
	// KeyDir is intercept.key_dir; empty: the key is kept in memory only.
	KeyDir string
	// CACertFile and CAKeyFile are intercept.ca_cert_file and
	// intercept.ca_key_file; empty: the proxy creates its CA.
	CACertFile, CAKeyFile string
	// Passthrough is intercept.passthrough, split at commas (or a YAML
	// list), blanks dropped; nil: none.
	Passthrough []string
}

// Source says where the effective value of a key came from.
func (s *Settings) Source(key string) Source { return s.sources[key] }

// Implementation is whose HTTP/1.1 code serves a side of the proxy:
// upstream.transport and listen.proxy_server.
type Implementation int

const (
	// HTTP1 is the proxy's own HTTP/1.1 code (internal/h1): the fastest.
	HTTP1 Implementation = iota
	// Standard is net/http's server or transport; its transport speaks
	// HTTP/2 when the upstream offers it.
	Standard
)

func (i Implementation) String() string { return wordOf(implementations, i) }

// PassBearer is auth.pass_bearer: which Bearer tokens an app sends are
// passed on unchanged.
type PassBearer int

const (
	// PassSession passes on the session tokens Dinie issued through this
	// proxy only.
	PassSession PassBearer = iota
	// PassAny passes on every Bearer but the stand-in.
	PassAny
)

func (p PassBearer) String() string { return wordOf(passBearers, p) }

// LogFormat is log.format.
type LogFormat int

const (
	JSON LogFormat = iota
	Console
)

func (f LogFormat) String() string { return wordOf(logFormats, f) }

// Error is invalid configuration: exit status 2, one line that names the
// key and what is wrong, never a secret.
type Error struct {
	Key string // dotted key, variable, flag or "config file"
	Err error
}

func (e *Error) Error() string { return e.Key + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Invalid is an *Error about key, for the checks that only the running
// parts can make (a supplied CA's constraints, the passthrough patterns).
func Invalid(key string, err error) error { return &Error{Key: key, Err: err} }

func invalid(key, format string, args ...any) error {
	return &Error{Key: key, Err: fmt.Errorf(format, args...)}
}

// CredentialSources says where the client id and secret are read from,
// for the ready log line: the key, a file's path, and where the key was
// set. Never a value.
func (s *Settings) CredentialSources() []string {
	var out []string
	for _, c := range []struct{ key, value, file string }{
		{"auth.client_id", s.ClientID, s.ClientIDFile},
		{"auth.client_secret", s.ClientSecret, s.ClientSecretFile},
	} {
		switch {
		case c.file != "":
			out = append(out, fmt.Sprintf("%s_file %s (%s)", c.key, c.file, s.Source(c.key+"_file")))
		case c.value != "":
			out = append(out, fmt.Sprintf("%s (%s)", c.key, s.Source(c.key)))
		}
	}
	return out
}
