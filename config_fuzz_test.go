package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/viper"
)

// The configuration file is the operator's, but a typo, a truncated
// ConfigMap or a file written by a template can hold anything: loadConfig
// must never panic, must answer anything it refuses with one line naming
// the problem and never echoing the secret, and anything it accepts must
// hold the invariants the rest of the program relies on.
func FuzzLoadConfig(f *testing.F) {
	example, err := os.ReadFile("config.yaml.example")
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		string(example),
		"auth:\n  client_id: fake-client\n  client_secret: fake-secret-fuzz\n",
		"upstream:\n  url: http://127.0.0.1:1/api/v3\n  timeout: 1ms\n  max_replay_bytes: 0\nauth:\n  token_url: https://127.0.0.1/t\n",
		"upstream:\n  url: ftp://x\n",
		"upstream:\n  url: https://user:fake-secret-fuzz@api.dinie.com.br/api/v3\n",
		"upstream:\n  timeout: 30\n",
		"auth:\n  client_secret: [fake-secret-fuzz]\n",
		"upstream:\n  url: https://user:fake-secret-url@[::1\n",
		"auth:\n  token_url: http://user:fake-secret-url@127.0.0.1:x/\n",
		"auth:\n  client_secret: {a: fake-secret-fuzz}\n",
		"auth: fake-secret-fuzz\n",
		"listen:\n  proxy: 8080\n  admin: '[::1]:99999'\n",
		"log:\n  level: verbose\n  format: xml\n",
		"shutdown:\n  timeout: -1s\n",
		"unknown: 1\n",
		"upstream.url: http://x\n",
		"auth:\n  client_id_file: /nonexistent\n",
		"- a\n- b\n",
		"{{{\n",
		"a: &a [*a]\n",
		"",
	} {
		f.Add([]byte(seed), false)
		f.Add([]byte(seed), true)
	}
	f.Fuzz(func(t *testing.T, file []byte, envCredentials bool) {
		path := filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(path, file, 0o600); err != nil {
			t.Fatal(err)
		}
		env := map[string]string{}
		if envCredentials {
			env["DINIE_PROXY_AUTH_CLIENT_ID"] = "fake-client"
			env["DINIE_PROXY_AUTH_CLIENT_SECRET"] = "fake-secret-env"
		}
		cfg, opts, err := loadConfig([]string{"--config", path}, func(k string) string { return env[k] }, io.Discard)
		if err != nil {
			if _, ok := errors.AsType[*configError](err); !ok {
				t.Fatalf("not a configError, so not exit status 2: %T", err)
			}
			msg := err.Error()
			if strings.ContainsAny(msg, "\r\n") {
				t.Errorf("the error is more than one line: %q", msg)
			}
			for _, secret := range secretsIn(file) {
				if strings.Contains(msg, secret) {
					t.Error("the error echoes the client secret or a URL's password")
				}
			}
			return
		}
		if opts.help || opts.version {
			t.Fatal("a config file turned on --help or --version")
		}
		checkConfigInvariants(t, cfg)
	})
}

// secretsIn returns what must never be echoed of a config file: the
// client secret, and the password of any URL, however malformed the URL.
func secretsIn(file []byte) []string {
	secrets := []string{"fake-secret-env"}
	v := viper.New()
	v.SetConfigType("yaml")
	if v.ReadConfig(bytes.NewReader(file)) != nil {
		return secrets
	}
	if s := strings.TrimSpace(v.GetString("auth.client_secret")); len(s) >= 4 {
		secrets = append(secrets, s)
	}
	for _, k := range []string{"upstream.url", "auth.token_url"} {
		raw := v.GetString(k)
		_, rest, ok := strings.Cut(raw, "://")
		at := strings.LastIndex(rest, "@")
		if !ok || at < 0 {
			continue
		}
		if _, password, ok := strings.Cut(rest[:at], ":"); ok && len(password) >= 4 {
			secrets = append(secrets, password)
		}
	}
	return secrets
}

func checkConfigInvariants(t *testing.T, cfg config) {
	t.Helper()
	u := cfg.upstreamURL
	if u == nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		t.Errorf("accepted upstream.url %v", u)
	}
	if tu, err := url.Parse(cfg.tokenURL); err != nil || (tu.Scheme != "http" && tu.Scheme != "https") || tu.Host == "" || tu.User != nil {
		t.Errorf("accepted auth.token_url %q", cfg.tokenURL)
	}
	for k, d := range map[string]int64{
		"upstream.timeout": int64(cfg.upstreamTimeout), "auth.refresh_before": int64(cfg.refreshBefore), "shutdown.timeout": int64(cfg.shutdownTimeout),
	} {
		if d <= 0 {
			t.Errorf("accepted %s %d", k, d)
		}
	}
	if cfg.maxReplayBytes < 0 {
		t.Errorf("accepted upstream.max_replay_bytes %d", cfg.maxReplayBytes)
	}
	if cfg.replayBudget < 0 {
		t.Errorf("accepted upstream.replay_budget_bytes %d", cfg.replayBudget)
	}
	if cfg.maxInFlight < 1 {
		t.Errorf("accepted limits.max_in_flight %d", cfg.maxInFlight)
	}
	if (cfg.clientID == "") == (cfg.clientIDFile == "") {
		t.Error("accepted not exactly one of auth.client_id and auth.client_id_file")
	}
	if (cfg.clientSecret == "") == (cfg.clientSecretFile == "") {
		t.Error("accepted not exactly one of auth.client_secret and auth.client_secret_file")
	}
	for k, addr := range map[string]string{"listen.proxy": cfg.listenProxy, "listen.admin": cfg.listenAdmin} {
		_, port, err := net.SplitHostPort(addr)
		n, perr := strconv.Atoi(port)
		if err != nil || perr != nil || n < 0 || n > 65535 {
			t.Errorf("accepted %s %q", k, addr)
		}
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, cfg.logLevel) {
		t.Errorf("accepted log.level %q", cfg.logLevel)
	}
	if cfg.logFormat != "json" && cfg.logFormat != "console" {
		t.Errorf("accepted log.format %q", cfg.logFormat)
	}
}
