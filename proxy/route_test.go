package proxy

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestRoute(t *testing.T) {
	upstream, _ := url.Parse("https://api.dinie.com.br/api/v3")
	tests := []struct {
		method, target string
		want           routing
	}{
		{"GET", "/customers", routeBaseURL},
		{"GET", "http://api.dinie.com.br/api/v3/customers", routeAbsolute},
		{"GET", "http://API.Dinie.com.br/api/v3/customers", routeAbsolute},
		{"GET", "http://api.dinie.com.br:80/api/v3/customers", routeAbsolute},
		{"GET", "http://api.dinie.com.br:443/api/v3/customers", routeAbsolute},
		{"GET", "https://api.dinie.com.br:443/api/v3/customers", routeAbsolute},
		{"GET", "http://api.dinie.com.br:8443/api/v3/customers", refuseHost},
		{"GET", "http://api.dinie.com.br.evil.example/api/v3", refuseHost},
		{"GET", "http://evil.example/api/v3/customers", refuseHost},
		{"GET", "http://user:pw@api.dinie.com.br/api/v3", refuseHost},
		{"CONNECT", "api.dinie.com.br:443", refuseConnect},
	}
	for _, tt := range tests {
		r := &http.Request{Method: tt.method, URL: mustParseRequestURI(t, tt.method, tt.target)}
		if got := route(r, upstream); got != tt.want {
			t.Errorf("route(%s %s) = %d, want %d", tt.method, tt.target, got, tt.want)
		}
	}
}

func mustParseRequestURI(t *testing.T, method, target string) *url.URL {
	if method == "CONNECT" {
		return &url.URL{Host: target}
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// FuzzRoute checks the one property that matters most: the token only goes
// to the upstream. Whatever the request target, an absolute-form request is
// forwarded only when its host is the upstream's.
func FuzzRoute(f *testing.F) {
	for _, seed := range []string{
		"/customers?limit=10", "http://api.dinie.com.br/api/v3/x", "http://api.dinie.com.br:80/x",
		"http://evil.example/x", "http://api.dinie.com.br@evil.example/x", "http://[::1]:80/x",
		"http://api.dinie.com.br%2eevil.example/x", "//api.dinie.com.br/x", "*",
	} {
		f.Add("GET", seed)
	}
	f.Add("CONNECT", "api.dinie.com.br:443")
	upstream, _ := url.Parse("https://api.dinie.com.br/api/v3")
	f.Fuzz(func(t *testing.T, method, target string) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		r := &http.Request{Method: method, URL: u}
		switch route(r, upstream) {
		case routeAbsolute:
			if !strings.EqualFold(u.Hostname(), "api.dinie.com.br") || u.User != nil {
				t.Errorf("forwarded %q to the upstream", target)
			}
		case routeBaseURL:
			if u.IsAbs() {
				t.Errorf("treated absolute %q as base-URL", target)
			}
			path, _ := upstreamPath("/api/v3", "/api/v3", u)
			if !strings.HasPrefix(path, "/api/v3") {
				t.Errorf("path %q of %q escaped the prefix", path, target)
			}
		}
		if method == http.MethodConnect && route(r, upstream) != refuseConnect {
			t.Error("CONNECT not refused")
		}
	})
}
