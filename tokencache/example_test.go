package tokencache_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/dinie/dinie-auth-proxy/tokencache"
)

func ExampleCache() {
	// A stand-in for Dinie's POST /auth/token.
	dinie := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"access_token":"fake-token","token_type":"bearer","expires_in":3600}`)
	}))
	defer dinie.Close()

	cache, err := tokencache.New(tokencache.Config{
		TokenURL:     dinie.URL + "/auth/token",
		ClientID:     "fake-client-id",
		ClientSecret: "fake-client-secret",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go cache.Run(ctx) // fetches now, then refreshes before expiry

	token, err := cache.Token(ctx)
	fmt.Println(token != "", err)
	// Output: true <nil>
}
