package h1_test

import (
	"io"
	"net/http"
	"testing"
)

// The handler's Connection is the server's to write, but its close is
// honoured; its Date goes out instead of the server's, and only once.
func TestH1ServerHonoursTheHandlersCloseAndDate(t *testing.T) {
	const date = "Sun, 06 Dec 2026 11:00:00 GMT"
	_, addr := startH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/close":
			w.Header()["Connection"] = []string{"keep-alive, Close"}
		case "/date":
			w.Header()["Date"] = []string{date}
		}
		io.WriteString(w, "ok")
	}))
	tests := []struct {
		path      string
		wantClose bool
		wantDate  string // "" for the server's own
	}{
		{"/close", true, ""},
		{"/date", false, date},
		{"/", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			c := dial(t, addr)
			c.send(t, "GET "+tt.path+" HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, body := c.read(t, "GET")
			if body != "ok" {
				t.Errorf("body %q, want ok", body)
			}
			if resp.Close != tt.wantClose {
				t.Errorf("close %v, want %v", resp.Close, tt.wantClose)
			}
			if tt.wantClose && !c.closed() {
				t.Error("the connection stayed open")
			}
			dates := resp.Header["Date"]
			if len(dates) != 1 {
				t.Fatalf("Date %q, want one", dates)
			}
			if tt.wantDate != "" && dates[0] != tt.wantDate {
				t.Errorf("Date %q, want the handler's %q", dates[0], tt.wantDate)
			}
			if _, err := http.ParseTime(dates[0]); err != nil {
				t.Errorf("Date %q: %v", dates[0], err)
			}
		})
	}
}
