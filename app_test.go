package main

import (
	"net/http"
	"testing"

	"github.com/dinie/dinie-auth-proxy/internal/config"
	"github.com/dinie/dinie-auth-proxy/internal/h1"
	"go.uber.org/zap"
)

// The app's server reads each request into the space of the one before
// only behind h1's transport, which keeps nothing of a request once it
// has answered; net/http's may still be writing the request then, and
// would read values the server is already emptying.
func TestProxyServerRecyclesRequestsOnlyBehindH1Transport(t *testing.T) {
	for _, tc := range []struct {
		transport config.Implementation
		want      bool
	}{{config.HTTP1, true}, {config.Standard, false}} {
		a := &app{cfg: &config.Settings{ProxyServer: config.HTTP1, Transport: tc.transport}, log: zap.NewNop()}
		srv, ok := a.proxyServer(http.NotFoundHandler()).(*h1.Server)
		if !ok {
			t.Fatalf("upstream.transport %v: the proxy server is not h1's", tc.transport)
		}
		if srv.RecycleRequests != tc.want {
			t.Errorf("upstream.transport %v: RecycleRequests %v, want %v", tc.transport, srv.RecycleRequests, tc.want)
		}
	}
}
