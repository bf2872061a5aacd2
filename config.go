package main

import (
	"bytes"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/viper"

	"github.com/dinie/dinie-auth-proxy/internal/tunnel"
)

// config is the validated configuration. Only this file knows viper; the
// packages take plain values.
type config struct {
	upstreamURL      *url.URL
	upstreamTimeout  time.Duration
	rootCAs          *x509.CertPool // nil: the system roots
	transport        string
	maxReplayBytes   int64
	replayBudget     int64
	maxInFlight      int
	maxTunnels       int
	retries          int
	retryMaxWait     time.Duration
	idempotencyKeys  bool
	tokenURL         string
	clientID         string
	clientIDFile     string
	clientSecret     string
	clientSecretFile string
	refreshBefore    time.Duration
	passAnyBearer    bool // auth.pass_bearer: any
	sessionTokensMax int
	listenProxy      string
	proxyServer      string
	listenAdmin      string
	logLevel         string
	logFormat        string
	shutdownTimeout  time.Duration
	intercept        interceptConfig
}

// interceptConfig is intercept.*: the CA of TLS interception, and the hosts
// whose tunnels are relayed untouched.
type interceptConfig struct {
	enabled               bool
	caDir, keyDir         string
	caCertFile, caKeyFile string
	passthrough           []string
}

// key is one configuration key, as the README lists them.
type key struct {
	name  string
	def   string
	usage string
}

var keys = []key{
	{name: "upstream.url", def: "https://api.dinie.com.br/api/v3", usage: "base URL of the Dinie API, path prefix included"},
	{name: "upstream.timeout", def: "30s", usage: "time to wait for the upstream's response headers"},
	{name: "upstream.ca_file", usage: "PEM bundle to trust for the upstream and the token endpoint, in addition to the system roots"},
	{name: "upstream.transport", def: "http1", usage: "http1: pooled HTTP/1.1 connections, fastest; standard: net/http's transport, HTTP/2 when the upstream offers it"},
	{name: "upstream.max_replay_bytes", def: "1048576", usage: "largest request body kept to replay a request after an upstream 401, or to retry it; 0 disables the replay of bodies"},
	{name: "upstream.replay_budget_bytes", def: "33554432", usage: "total bytes of request bodies held at once for a replay or retry; a body that does not fit is not held, and its request is sent once"},
	{name: "upstream.retries", def: "2", usage: "how many times a resend-safe request is sent again after a transient failure (429 with a short Retry-After, 502, 503, 504, no answer); 0: never"},
	{name: "upstream.retry_max_wait", def: "10s", usage: "longest single wait before a retry; a Retry-After longer than this goes to the app at once"},
	{name: "upstream.idempotency_keys", def: "off", usage: "auto: add an X-Idempotency-Key to POST, PUT, PATCH and DELETE requests that carry none, which makes them resend-safe; off: never"},
	{name: "auth.token_url", usage: "token endpoint (default <upstream.url>/auth/token)"},
	{name: "auth.client_id", usage: "client id"},
	{name: "auth.client_id_file", usage: "file holding the client id"},
	{name: "auth.client_secret", usage: "client secret"},
	{name: "auth.client_secret_file", usage: "file holding the client secret; re-read when it changes"},
	{name: "auth.refresh_before", def: "5m", usage: "refresh the token when it has this much lifetime left"},
	{name: "auth.pass_bearer", def: "session", usage: "which Bearer tokens an app sends are passed on unchanged: session, the session tokens Dinie issued through this proxy; any, every Bearer but the stand-in"},
	{name: "auth.session_tokens_max", def: "10000", usage: "session tokens remembered at once; the soonest to expire is dropped first"},
	{name: "listen.proxy", def: "127.0.0.1:8080", usage: "address applications connect to"},
	{name: "listen.proxy_server", def: "http1", usage: "http1: the proxy's own HTTP/1.1 server, fastest; standard: net/http's server"},
	{name: "listen.admin", def: "127.0.0.1:9090", usage: "address of /metrics, /healthz and /readyz"},
	{name: "limits.max_in_flight", def: "1024", usage: "requests served at once; one more gets 503 overloaded at once, never queued"},
	{name: "limits.max_tunnels", def: "1024", usage: "tunnels open at once (plain, intercepted, passthrough); one more CONNECT gets 503 overloaded"},
	{name: "intercept.enabled", def: "false", usage: "accept CONNECT to the upstream host's TLS port and intercept its TLS with the proxy's own CA (apps that keep https:// URLs)"},
	{name: "intercept.ca_dir", usage: "directory the app reads, where ca.crt, bundle.pem and truststore.p12 are written; required when intercept.enabled unless intercept.ca_cert_file"},
	{name: "intercept.key_dir", usage: "directory only the proxy reads, keeping the intermediate CA's key (mode 0600) so that a restart reuses the CA"},
	{name: "intercept.ca_cert_file", usage: "a name-constrained CA certificate (PEM, chain after it) to issue from instead of creating one"},
	{name: "intercept.ca_key_file", usage: "the private key of intercept.ca_cert_file"},
	{name: "intercept.passthrough", usage: "comma-separated host patterns (api.stripe.com, *.amazonaws.com, *, host:port) whose CONNECT tunnels are relayed untouched; no port means 443"},
	{name: "log.level", def: "info", usage: "debug, info, warn or error"},
	{name: "log.format", def: "json", usage: "json or console"},
	{name: "shutdown.timeout", def: "25s", usage: "how long in-flight requests may finish after SIGTERM"},
}

// envName is the environment variable of a key: auth.client_secret is
// DINIE_PROXY_AUTH_CLIENT_SECRET.
func envName(k string) string {
	return "DINIE_PROXY_" + strings.ToUpper(strings.ReplaceAll(k, ".", "_"))
}

// options are the command line's switches, apart from the keys.
type options struct {
	configFile string
	version    bool
	demo       bool
	help       bool // usage was printed; nothing to run
}

// configError is invalid configuration: exit status 2.
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

func invalid(k, format string, args ...any) error {
	return &configError{msg: k + ": " + fmt.Sprintf(format, args...)}
}

// loadConfig merges, lowest precedence first, the defaults, the YAML file,
// the environment and the flags; an empty value counts as unset. The demo
// needs no credentials, so it skips their check.
func loadConfig(args []string, getenv func(string) string, stderr io.Writer) (config, options, error) {
	var opts options
	fs := flag.NewFlagSet("dinie-auth-proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&opts.configFile, "config", "", "YAML configuration file (or DINIE_PROXY_CONFIG)")
	fs.BoolVar(&opts.version, "version", false, "print the version and exit")
	fs.BoolVar(&opts.demo, "demo", false, "run against a built-in mock of the Dinie API; no credentials needed")
	flagValues := map[string]*string{}
	for _, k := range keys {
		flagValues[k.name] = fs.String(k.name, "", fmt.Sprintf("%s (env %s)", k.usage, envName(k.name)))
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			opts.help = true
			return config{}, opts, nil
		}
		return config{}, opts, &configError{msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return config{}, opts, &configError{msg: fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	if opts.version {
		return config{}, opts, nil
	}

	v := viper.New()
	for _, k := range keys {
		v.SetDefault(k.name, k.def)
	}
	if opts.configFile == "" {
		opts.configFile = getenv("DINIE_PROXY_CONFIG")
	}
	if opts.configFile != "" {
		if err := readConfigFile(v, opts.configFile); err != nil {
			return config{}, opts, err
		}
	}
	// Set is viper's top layer, so applying the environment and then the
	// flags gives each its precedence.
	for _, k := range keys {
		if val := getenv(envName(k.name)); val != "" {
			v.Set(k.name, val)
		}
	}
	fs.Visit(func(f *flag.Flag) {
		if p, ok := flagValues[f.Name]; ok && *p != "" {
			v.Set(f.Name, *p)
		}
	})
	if opts.demo {
		// The demo brings its own Dinie; run points the proxy at it.
		for k, val := range map[string]string{
			"upstream.url": "http://127.0.0.1/api/v3", "upstream.ca_file": "", "auth.token_url": "",
			"auth.client_id": demoClientID, "auth.client_id_file": "",
			"auth.client_secret": demoClientSecret, "auth.client_secret_file": "",
			"intercept.enabled": "false",
		} {
			v.Set(k, val)
		}
	}
	cfg, err := validate(v)
	return cfg, opts, err
}

func readConfigFile(v *viper.Viper, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return &configError{msg: fmt.Sprintf("config file: %v", err)}
	}
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(b)); err != nil {
		// YAML's type errors span several lines; the contract is one.
		return &configError{msg: fmt.Sprintf("config file %s: %s", path, strings.Join(strings.Fields(err.Error()), " "))}
	}
	// A typo must not be silently ignored: an unknown key would leave its
	// intended setting at the default.
	for _, k := range v.AllKeys() {
		if !slices.ContainsFunc(keys, func(known key) bool { return known.name == k }) {
			return invalid(k, "unknown key in %s", path)
		}
	}
	return nil
}

// lookup returns a key's value; a key set to an empty value falls back to the
// default.
func lookup(v *viper.Viper, k string) string {
	if s := strings.TrimSpace(v.GetString(k)); s != "" {
		return s
	}
	for _, known := range keys {
		if known.name == k {
			return known.def
		}
	}
	return ""
}

func validate(v *viper.Viper) (config, error) {
	var cfg config
	// One line, naming the first problem: the rest are usually its echo.
	var first error
	check := func(err error) {
		if first == nil {
			first = err
		}
	}
	var err error
	cfg.upstreamURL, err = httpURL("upstream.url", lookup(v, "upstream.url"))
	check(err)
	cfg.upstreamTimeout, err = positiveDuration(v, "upstream.timeout")
	check(err)
	cfg.refreshBefore, err = positiveDuration(v, "auth.refresh_before")
	check(err)
	cfg.shutdownTimeout, err = positiveDuration(v, "shutdown.timeout")
	check(err)
	if f := lookup(v, "upstream.ca_file"); f != "" {
		cfg.rootCAs, err = loadRootCAs(f)
		check(err)
	}
	cfg.transport = lookup(v, "upstream.transport")
	if cfg.transport != "http1" && cfg.transport != "standard" {
		check(invalid("upstream.transport", "%q is not http1 or standard", cfg.transport))
	}
	cfg.proxyServer = lookup(v, "listen.proxy_server")
	if cfg.proxyServer != "http1" && cfg.proxyServer != "standard" {
		check(invalid("listen.proxy_server", "%q is not http1 or standard", cfg.proxyServer))
	}
	cfg.maxReplayBytes, err = strconv.ParseInt(lookup(v, "upstream.max_replay_bytes"), 10, 64)
	if err != nil || cfg.maxReplayBytes < 0 {
		check(invalid("upstream.max_replay_bytes", "%q is not a number of bytes", lookup(v, "upstream.max_replay_bytes")))
	}
	cfg.replayBudget, err = strconv.ParseInt(lookup(v, "upstream.replay_budget_bytes"), 10, 64)
	if err != nil || cfg.replayBudget < 0 {
		check(invalid("upstream.replay_budget_bytes", "%q is not a number of bytes", lookup(v, "upstream.replay_budget_bytes")))
	}
	cfg.retries, err = strconv.Atoi(lookup(v, "upstream.retries"))
	if err != nil || cfg.retries < 0 {
		check(invalid("upstream.retries", "%q is not a number of retries", lookup(v, "upstream.retries")))
	}
	cfg.retryMaxWait, err = positiveDuration(v, "upstream.retry_max_wait")
	check(err)
	switch mode := lookup(v, "upstream.idempotency_keys"); mode {
	case "auto", "off":
		cfg.idempotencyKeys = mode == "auto"
	default:
		check(invalid("upstream.idempotency_keys", "%q is not off or auto", mode))
	}
	cfg.maxInFlight, err = strconv.Atoi(lookup(v, "limits.max_in_flight"))
	if err != nil || cfg.maxInFlight < 1 {
		check(invalid("limits.max_in_flight", "%q is not a positive number of requests", lookup(v, "limits.max_in_flight")))
	}
	cfg.maxTunnels, err = strconv.Atoi(lookup(v, "limits.max_tunnels"))
	if err != nil || cfg.maxTunnels < 1 {
		check(invalid("limits.max_tunnels", "%q is not a positive number of tunnels", lookup(v, "limits.max_tunnels")))
	}

	cfg.tokenURL = lookup(v, "auth.token_url")
	if cfg.tokenURL == "" && cfg.upstreamURL != nil {
		cfg.tokenURL = strings.TrimSuffix(cfg.upstreamURL.String(), "/") + "/auth/token"
	}
	if _, err := httpURL("auth.token_url", cfg.tokenURL); err != nil && cfg.upstreamURL != nil {
		check(err)
	}
	switch mode := lookup(v, "auth.pass_bearer"); mode {
	case "session", "any":
		cfg.passAnyBearer = mode == "any"
	default:
		check(invalid("auth.pass_bearer", "%q is not session or any", mode))
	}
	cfg.sessionTokensMax, err = strconv.Atoi(lookup(v, "auth.session_tokens_max"))
	if err != nil || cfg.sessionTokensMax < 1 {
		check(invalid("auth.session_tokens_max", "%q is not a positive number of tokens", lookup(v, "auth.session_tokens_max")))
	}
	cfg.clientID, cfg.clientIDFile, err = credential(v, "auth.client_id")
	check(err)
	cfg.clientSecret, cfg.clientSecretFile, err = credential(v, "auth.client_secret")
	check(err)

	cfg.listenProxy, err = listenAddr(v, "listen.proxy")
	check(err)
	cfg.listenAdmin, err = listenAddr(v, "listen.admin")
	check(err)
	cfg.logLevel = lookup(v, "log.level")
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, cfg.logLevel) {
		check(invalid("log.level", "%q is not one of debug, info, warn, error", cfg.logLevel))
	}
	cfg.logFormat = lookup(v, "log.format")
	if cfg.logFormat != "json" && cfg.logFormat != "console" {
		check(invalid("log.format", "%q is not json or console", cfg.logFormat))
	}
	cfg.intercept, err = interceptKeys(v, cfg.upstreamURL)
	check(err)
	if first != nil {
		return config{}, first
	}
	return cfg, nil
}

// interceptKeys validates intercept.*. What only the CA can check (a
// supplied CA's constraints, key_dir apart from ca_dir) it checks at
// start-up, naming the key as well.
func interceptKeys(v *viper.Viper, upstream *url.URL) (interceptConfig, error) {
	ic := interceptConfig{
		caDir: lookup(v, "intercept.ca_dir"), keyDir: lookup(v, "intercept.key_dir"),
		caCertFile: lookup(v, "intercept.ca_cert_file"), caKeyFile: lookup(v, "intercept.ca_key_file"),
	}
	enabled, err := strconv.ParseBool(lookup(v, "intercept.enabled"))
	if err != nil {
		return ic, invalid("intercept.enabled", "%q is not true or false", lookup(v, "intercept.enabled"))
	}
	ic.enabled = enabled
	// A YAML list or a comma-separated string.
	var patterns []string
	switch list := v.Get("intercept.passthrough").(type) {
	case []any:
		for _, p := range list {
			patterns = append(patterns, fmt.Sprint(p))
		}
	default:
		patterns = strings.Split(lookup(v, "intercept.passthrough"), ",")
	}
	for _, p := range patterns {
		if p = strings.TrimSpace(p); p != "" {
			ic.passthrough = append(ic.passthrough, p)
		}
	}
	if err := tunnel.CheckPatterns(ic.passthrough); err != nil {
		return ic, invalid("intercept.passthrough", "%v", err)
	}
	if !enabled {
		return ic, nil
	}
	switch {
	case (ic.caCertFile == "") != (ic.caKeyFile == ""):
		return ic, invalid("intercept.ca_key_file", "set both intercept.ca_cert_file and intercept.ca_key_file, or neither")
	case ic.caDir == "" && ic.caCertFile == "":
		return ic, invalid("intercept.ca_dir", "required when intercept.enabled is true and intercept.ca_cert_file is not set")
	case upstream != nil && net.ParseIP(upstream.Hostname()) != nil:
		return ic, invalid("upstream.url", "interception needs a host name, not the IP address %s: the CA can sign for one DNS name only", upstream.Hostname())
	}
	return ic, nil
}

func httpURL(k, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err == nil && u.User != nil {
		return nil, invalid(k, "must not carry credentials in the URL")
	}
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, invalid(k, "%q is not an absolute http(s) URL", redactUserinfo(raw))
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

func positiveDuration(v *viper.Viper, k string) (time.Duration, error) {
	s := lookup(v, k)
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, invalid(k, "%q is not a positive duration such as 30s or 5m", s)
	}
	return d, nil
}

func listenAddr(v *viper.Viper, k string) (string, error) {
	s := lookup(v, k)
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", invalid(k, "%q is not host:port", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return "", invalid(k, "%q has no valid port", s)
	}
	return s, nil
}

// credential reads k or k_file: exactly one must be set. Values are never
// echoed; a file must be readable and not empty.
func credential(v *viper.Viper, k string) (value, file string, err error) {
	value, file = lookup(v, k), lookup(v, k+"_file")
	switch {
	case value != "" && file != "":
		return "", "", invalid(k, "set either %s or %s_file, not both", k, k)
	case value == "" && file == "":
		return "", "", invalid(k, "required: set %s, %s_file, or %s", k, k, envName(k+"_file"))
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", "", invalid(k+"_file", "cannot read %s: %v", file, errors.Unwrap(err))
		}
		if len(bytes.TrimSpace(b)) == 0 {
			return "", "", invalid(k+"_file", "%s is empty", file)
		}
	}
	return value, file, nil
}

func loadRootCAs(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, invalid("upstream.ca_file", "cannot read %s: %v", file, errors.Unwrap(err))
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, invalid("upstream.ca_file", "%s holds no PEM certificate", file)
	}
	return pool, nil
}
