package tunnel

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// pattern is one intercept.passthrough entry: an exact host (a name or an
// IP literal), "*.suffix", or "*", with a port (443 when none is given).
type pattern struct {
	host   string // lower case; for a suffix pattern, ".suffix"
	suffix bool
	any    bool
	port   string
}

// patterns are the hosts whose tunnels are relayed untouched.
type patterns []pattern

// PatternError is New's error for an intercept.passthrough pattern it
// cannot read, so that its caller can name the key.
type PatternError struct{ Err error }

func (e *PatternError) Error() string { return "tunnel: passthrough: " + e.Err.Error() }
func (e *PatternError) Unwrap() error { return e.Err }

// CheckPatterns reports, as a PatternError, the first of
// intercept.passthrough's patterns that New would refuse: for a caller
// that opens no tunnel (--check).
func CheckPatterns(list []string) error {
	if _, err := parsePatterns(list); err != nil {
		return &PatternError{Err: err}
	}
	return nil
}

// parsePatterns parses intercept.passthrough's patterns (docs/configuration.md):
// api.stripe.com, *.amazonaws.com, *, each optionally with :port; IPv6
// literals in brackets when a port follows.
func parsePatterns(list []string) (patterns, error) {
	var ps patterns
	for _, raw := range list {
		p, err := parsePattern(strings.TrimSpace(raw))
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, nil
}

func parsePattern(raw string) (pattern, error) {
	s := strings.ToLower(raw)
	host, port := s, "443"
	if ip := net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")); ip != nil {
		host = ip.String()
	} else if strings.Contains(s, ":") {
		var err error
		if host, port, err = net.SplitHostPort(s); err != nil {
			return pattern{}, fmt.Errorf("pattern %q: %w", raw, err)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return pattern{}, fmt.Errorf("pattern %q: %q is not a port", raw, port)
		}
		if ip := net.ParseIP(host); ip != nil {
			host = ip.String()
		}
	}
	p := pattern{host: strings.TrimSuffix(host, "."), port: port}
	switch {
	case p.host == "*":
		p.any = true
	case strings.HasPrefix(p.host, "*."):
		p.host, p.suffix = p.host[1:], true
	}
	rest := p.host
	if p.any {
		rest = "x"
	}
	if rest == "" || rest == "." || strings.ContainsAny(rest, "*/@ \t[]") {
		return pattern{}, fmt.Errorf("pattern %q: not a host name, *.suffix, * or IP address", raw)
	}
	return p, nil
}

// match reports whether a CONNECT to host:port is relayed, and whether the
// pattern that matched is a wildcard ("*" or "*.suffix"), which names no
// host of its own. An IP literal, with a zone or without, matches only a
// pattern that names it: "*" is for names.
func (ps patterns) match(host, port string) (ok, wildcard bool) {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	ip, err := netip.ParseAddr(host)
	literal := err == nil
	if literal {
		host = ip.WithZone("").String()
	}
	for _, p := range ps {
		if p.port != port {
			continue
		}
		switch {
		case literal:
			if !p.any && !p.suffix && p.host == host {
				return true, false
			}
		case p.any:
			return true, true
		case p.suffix:
			if strings.HasSuffix(host, p.host) {
				return true, true
			}
		case p.host == host:
			return true, false
		}
	}
	return false, false
}
