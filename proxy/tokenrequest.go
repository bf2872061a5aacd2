package proxy

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// StandInToken is what the proxy gives an app that asks for a token: a
// fixed, non-secret string. The real token never leaves the proxy except
// towards the upstream, and the stand-in, sent back as the app's
// Authorization, is replaced like any other.
const StandInToken = "dinie-auth-proxy-stand-in-token"

// standInTokenBody is the token endpoint's answer to the app. An hour, as
// Dinie's: a Dinie SDK refreshes five minutes before expiry, and would fail
// on a token that lived less.
var standInTokenBody = []byte(`{"access_token":"` + StandInToken + `","token_type":"bearer","expires_in":3600}` + "\n")

// maxTokenRequestBody bounds what is read of an app's token request: the
// SDKs' are a few dozen bytes.
const maxTokenRequestBody = 64 << 10

// answerTokenRequest answers the app's own token request (a Dinie SDK's
// first call) without forwarding it: whatever credentials the app sent, it
// needs none (docs/modes-and-clients.md, "With a Dinie SDK"). Only the client
// credentials grant gets the stand-in: a stand-in for any other (an
// authorization code, a token exchange) would silently give the app the
// partner's scope instead of the one it asked for.
func (h *Handler) answerTokenRequest(w http.ResponseWriter, r *http.Request) {
	grant, err := grantType(r)
	switch {
	case err != nil:
		writeProblem(w, http.StatusBadRequest, CodeBadRequestBody, "the token request's body could not be read: "+err.Error())
		return
	case grant != "" && grant != "client_credentials":
		writeProblem(w, http.StatusBadRequest, CodeUnsupportedGrantType,
			"this proxy answers token requests for the client_credentials grant only, not "+quoteGrant(grant))
		return
	}
	hdr := w.Header()
	hdr["Content-Type"] = []string{"application/json"}
	hdr["Cache-Control"] = []string{"no-store"}
	w.WriteHeader(http.StatusOK)
	w.Write(standInTokenBody)
}

// grantType reads the grant_type of a token request: from its body, a form
// as RFC 6749 and the JS SDK send it, or JSON as the Python SDK does (a
// body that opens with "{" is read as JSON whatever its Content-Type
// says), and from its query. Empty means none was named. Every grant_type
// named must name the same grant: a request that hides another grant
// where the proxy does not look must not get the stand-in.
func grantType(r *http.Request) (string, error) {
	grants := r.URL.Query()["grant_type"]
	body, err := readTokenRequest(r)
	if err != nil {
		return "", err
	}
	if trimmed := strings.TrimSpace(string(body)); strings.HasPrefix(trimmed, "{") || isJSON(r.Header["Content-Type"]) && trimmed != "" {
		var req struct {
			GrantType *json.RawMessage `json:"grant_type"`
		}
		if err := json.Unmarshal(body, &req); err != nil {
			return "", errors.New("it is not a JSON object")
		}
		if req.GrantType != nil {
			var grant string
			if err := json.Unmarshal(*req.GrantType, &grant); err != nil {
				return "", errors.New("its grant_type is not a string")
			}
			grants = append(grants, grant)
		}
	} else if trimmed != "" {
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return "", errors.New("it is not a form")
		}
		grants = append(grants, form["grant_type"]...)
	}
	for _, g := range grants[min(len(grants), 1):] {
		if g != grants[0] {
			return "", errors.New("it names two grant types")
		}
	}
	if len(grants) == 0 {
		return "", nil
	}
	return grants[0], nil
}

// readTokenRequest reads a token request's body, up to 64 KiB. A
// compressed one is refused: the grant it names could not be checked.
func readTokenRequest(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	if ce := r.Header["Content-Encoding"]; len(ce) > 0 && !strings.EqualFold(ce[0], "identity") {
		return nil, errors.New("it is compressed")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxTokenRequestBody+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxTokenRequestBody {
		return nil, errors.New("it is over 64 KiB")
	}
	return body, nil
}

// isJSON reports whether a Content-Type is JSON (application/json, or a
// +json type).
func isJSON(contentType []string) bool {
	if len(contentType) == 0 {
		return false
	}
	mt, _, err := mime.ParseMediaType(contentType[0])
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

// quoteGrant names an app's grant type in a problem's detail, cut short
// so that a long one does not bloat the answer.
func quoteGrant(g string) string {
	if len(g) > 64 {
		g = g[:64] + "..."
	}
	b, _ := json.Marshal(g)
	return string(b)
}
