package config

import (
	"fmt"
	"net"
	"strings"
)

// Action is what the command line asks the program to do.
type Action int

const (
	// Serve runs the proxy.
	Serve Action = iota
	// Check validates the configuration, fetches one token and exits.
	Check
	// PrintConfig prints the effective configuration and exits.
	PrintConfig
	// Version prints the version and exits.
	Version
	// Help prints the usage and exits.
	Help
)

// Command is the command line and the environment, read.
type Command struct {
	Action Action
	// Demo is --demo: the proxy runs against the built-in mock.
	Demo bool
	// Settings is nil for Help and Version, which read no configuration.
	Settings *Settings

	values map[string]string // effective, before parsing
}

// Load reads the command line (args, without the program's name), the
// environment (environ, as os.Environ gives it) and the YAML file they
// name. demo holds the values that --demo fixes: a key among them that is
// also set elsewhere is an error, never silently overridden.
func Load(args, environ []string, demo map[string]string) (*Command, error) {
	cl, err := parseArgs(args)
	if err != nil {
		return nil, err
	}
	cmd := &Command{Action: cl.action, Demo: cl.demo}
	if cl.action == Help || cl.action == Version {
		return cmd, nil
	}
	if cl.demo && cl.action == Check {
		return nil, invalid("--check", "checks a real configuration against Dinie; --demo needs none")
	}
	env, err := environment(environ)
	if err != nil {
		return nil, err
	}
	file := cl.configFile
	if file == "" {
		file = strings.TrimSpace(env[envPrefix+"CONFIG"])
	}
	var fromFile map[string]string
	if file != "" {
		if fromFile, err = readFile(file); err != nil {
			return nil, err
		}
	}

	s := &Settings{sources: map[string]Source{}}
	cmd.values = map[string]string{}
	for _, k := range keys {
		v, src := resolve(k, cl, env, fromFile, file)
		if fixed, ok := demo[k.name]; ok && cl.demo {
			if src.Kind != Default {
				return nil, invalid(k.name, "--demo runs against its own mock and sets this itself; unset it (set by %s) or drop --demo", src)
			}
			v, src = fixed, Source{Kind: Demo}
		}
		cmd.values[k.name], s.sources[k.name] = v, src
	}
	// One line, naming the first problem: the rest are usually its echo.
	for _, k := range keys {
		if v := cmd.values[k.name]; v != "" {
			if err := k.set(s, v); err != nil {
				return nil, &Error{Key: k.name, Err: err}
			}
		}
	}
	for _, rule := range rules {
		if err := rule(s); err != nil {
			return nil, err
		}
	}
	cmd.Settings = s
	return cmd, nil
}

// resolve returns k's value from the highest source that sets it: flag,
// environment, file, default. An empty value counts as unset.
func resolve(k key, cl commandLine, env, fromFile map[string]string, file string) (string, Source) {
	for _, layer := range []struct {
		v   string
		src Source
	}{
		{cl.keys[k.name], Source{Flag, "--" + k.name}},
		{env[envName(k.name)], Source{Environment, envName(k.name)}},
		{fromFile[k.name], Source{File, file}},
	} {
		if v := strings.TrimSpace(layer.v); v != "" {
			return v, layer.src
		}
	}
	return k.def, Source{Kind: Default}
}

// rules check and derive what spans several keys, once every key has
// parsed.
var rules = []func(s *Settings) error{
	func(s *Settings) error { return credential("auth.client_id", s.ClientID, s.ClientIDFile) },
	func(s *Settings) error {
		return credential("auth.client_secret", s.ClientSecret, s.ClientSecretFile)
	},
	func(s *Settings) error {
		if s.TokenURL == "" {
			s.TokenURL = strings.TrimSuffix(s.UpstreamURL.String(), "/") + "/auth/token"
		}
		return nil
	},
	func(s *Settings) error {
		if s.AllowRemote {
			return nil
		}
		return loopbackOnly("listen.proxy", s.ListenProxy)
	},
	func(s *Settings) error {
		// Dinie answers a token request without the prefix with an error
		// that reads like rejected credentials.
		if p := strings.Trim(s.UpstreamURL.Path, "/"); p == "" {
			s.Warnings = append(s.Warnings, fmt.Sprintf(
				"upstream.url %s has no path: Dinie's API is under /api/v3 (e.g. https://api.dinie.com.br/api/v3)", s.UpstreamURL.Redacted()))
		}
		return nil
	},
}

// credential checks k or k_file: exactly one must be set, and a file must
// be readable and not empty. Values are never echoed.
func credential(k, value, file string) error {
	switch {
	case value != "" && file != "":
		return invalid(k, "set either %s or %s_file, not both", k, k)
	case value == "" && file == "":
		return invalid(k, "required: set %s, %s_file, or %s", k, k, envName(k+"_file"))
	case file != "":
		if err := readCredentialFile(file); err != nil {
			return &Error{Key: k + "_file", Err: err}
		}
	}
	return nil
}

// loopbackOnly refuses an address that others can reach: whoever reaches
// the proxy calls Dinie with the partner's credentials. A host name other
// than localhost may resolve to anything, so it is refused too.
func loopbackOnly(k, addr string) error {
	host, _, _ := net.SplitHostPort(addr)
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	what := "not a loopback address"
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		what = "every interface"
	}
	return invalid(k, "%s is %s: whoever reaches it calls Dinie with your credentials; "+
		"use 127.0.0.1, or set listen.allow_remote to true", addr, what)
}
