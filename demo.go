package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The demo's credentials: fake, and known to the built-in mock only.
const (
	demoClientID     = "demo-client-id"
	demoClientSecret = "demo-client-secret"
	// demoTokenLifetime is short so that a curious user sees a background
	// refresh in the logs within a couple of minutes.
	demoTokenLifetime = 120
)

// mockDinie is a tiny stand-in for the Dinie API: POST /api/v3/auth/token
// as Dinie documents it, the session exchange of its SDKs' session mode
// (a dinie_bsc_ code for a customer token, demo_st_...), and every other
// path echoes what it received.
func mockDinie() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v3/auth/token", func(w http.ResponseWriter, r *http.Request) {
		id, secret, ok := r.BasicAuth()
		if !ok || id != demoClientID || secret != demoClientSecret || r.FormValue("grant_type") != "client_credentials" {
			unauthorized(w, "invalid client credentials", "invalid_client")
			return
		}
		b := make([]byte, 12)
		rand.Read(b)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"access_token": "demo_at_" + hex.EncodeToString(b), "token_type": "bearer", "expires_in": demoTokenLifetime,
		})
	})
	mux.HandleFunc("POST /api/v3/biometrics/session-exchange", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Code string }
		if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer demo_at_") {
			unauthorized(w, "missing or invalid access token", "token_expired")
			return
		}
		if json.NewDecoder(r.Body).Decode(&req) != nil || !strings.HasPrefix(req.Code, "dinie_bsc_") {
			unauthorized(w, "the code is not a dinie_bsc_ code", "invalid_code")
			return
		}
		b := make([]byte, 12)
		rand.Read(b)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"access_token": "demo_st_" + hex.EncodeToString(b), "token_type": "bearer", "expires_in": 900, "customer_id": "cus_demo",
		})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if auth := r.Header.Get("Authorization"); !strings.HasPrefix(auth, "Bearer demo_at_") && !strings.HasPrefix(auth, "Bearer demo_st_") {
			unauthorized(w, "missing or invalid access token", "token_expired")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-RateLimit-Limit", "1000")
		w.Header().Set("X-RateLimit-Remaining", "999")
		w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(time.Now().Add(time.Minute).Unix(), 10))
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(map[string]any{
			"echo":          "this is the demo's mock of the Dinie API",
			"method":        r.Method,
			"path":          r.URL.Path,
			"query":         r.URL.RawQuery,
			"authorization": shorten(r.Header.Get("Authorization")),
			"request_id":    r.Header.Get("X-Request-Id"),
			// An empty page, so that a Dinie SDK's list calls work against the
			// demo too.
			"data":     []any{},
			"has_more": false,
		})
	})
	return mux
}

// unauthorized answers 401 as Dinie does, with a problem document.
func unauthorized(w http.ResponseWriter, detail, code string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(http.StatusUnauthorized)
	json.NewEncoder(w).Encode(map[string]any{
		"type": "about:blank", "title": "Unauthorized", "status": http.StatusUnauthorized,
		"detail": detail, "code": code,
	})
}

// shorten keeps enough of a demo token to see that it changes on refresh.
func shorten(auth string) string {
	if len(auth) <= len("Bearer demo_at_")+6 {
		return auth
	}
	return auth[:len("Bearer demo_at_")+6] + "…"
}
