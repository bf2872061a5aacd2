package config

import (
	"bytes"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/viper"
	"go.uber.org/zap/zapcore"
)

// The configuration file is the operator's, but a typo, a truncated
// ConfigMap or a file written by a template can hold anything: Load
// must never panic, must answer anything it refuses with one line naming
// the problem and never echoing the secret, and anything it accepts must
// hold the invariants the rest of the program relies on.
func FuzzLoadConfig(f *testing.F) {
	example, err := os.ReadFile("../../config.yaml.example")
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
		var environ []string
		if envCredentials {
			environ = []string{"DINIE_PROXY_AUTH_CLIENT_ID=fake-client", "DINIE_PROXY_AUTH_CLIENT_SECRET=fake-secret-env"}
		}
		cmd, err := Load([]string{"--config", path}, environ, nil)
		if err != nil {
			if _, ok := errors.AsType[*Error](err); !ok {
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
		if cmd.Action != Serve || cmd.Demo {
			t.Fatal("a config file changed what the command line asks")
		}
		checkInvariants(t, cmd.Settings)
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

func checkInvariants(t *testing.T, s *Settings) {
	t.Helper()
	u := s.UpstreamURL
	if u == nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		t.Errorf("accepted upstream.url %v", u)
	}
	if tu, err := url.Parse(s.TokenURL); err != nil || (tu.Scheme != "http" && tu.Scheme != "https") || tu.Host == "" || tu.User != nil {
		t.Errorf("accepted auth.token_url %q", s.TokenURL)
	}
	for k, d := range map[string]time.Duration{
		"upstream.timeout": s.UpstreamTimeout, "auth.refresh_before": s.RefreshBefore,
		"shutdown.timeout": s.ShutdownTimeout, "upstream.retry_max_wait": s.RetryMaxWait,
	} {
		if d <= 0 {
			t.Errorf("accepted %s %d", k, d)
		}
	}
	if s.MaxReplayBytes < 0 || s.ReplayBudgetBytes < 0 || s.Retries < 0 {
		t.Errorf("accepted a negative number: %d, %d, %d", s.MaxReplayBytes, s.ReplayBudgetBytes, s.Retries)
	}
	if s.MaxInFlight < 1 || s.MaxTunnels < 1 || s.SessionTokensMax < 1 {
		t.Errorf("accepted a bound below 1: %d, %d, %d", s.MaxInFlight, s.MaxTunnels, s.SessionTokensMax)
	}
	if (s.ClientID == "") == (s.ClientIDFile == "") {
		t.Error("accepted not exactly one of auth.client_id and auth.client_id_file")
	}
	if (s.ClientSecret == "") == (s.ClientSecretFile == "") {
		t.Error("accepted not exactly one of auth.client_secret and auth.client_secret_file")
	}
	for k, addr := range map[string]string{"listen.proxy": s.ListenProxy, "listen.admin": s.ListenAdmin} {
		_, port, err := net.SplitHostPort(addr)
		n, perr := strconv.Atoi(port)
		if err != nil || perr != nil || n < 0 || n > 65535 {
			t.Errorf("accepted %s %q", k, addr)
		}
	}
	if !s.AllowRemote && loopbackOnly("listen.proxy", s.ListenProxy) != nil {
		t.Errorf("accepted listen.proxy %q without listen.allow_remote", s.ListenProxy)
	}
	if !slices.Contains([]zapcore.Level{zapcore.DebugLevel, zapcore.InfoLevel, zapcore.WarnLevel, zapcore.ErrorLevel}, s.LogLevel) {
		t.Errorf("accepted log.level %v", s.LogLevel)
	}
	for _, p := range s.Intercept.Passthrough {
		if p == "" || strings.Contains(p, ",") || strings.TrimSpace(p) != p {
			t.Errorf("passthrough pattern %q not split and trimmed", p)
		}
	}
}
