package proxy

import (
	"net/http"
	"strconv"
	"testing"
)

func TestExchangeResetKeepsOnlyASmallHeaderMap(t *testing.T) {
	for _, n := range []int{3, maxRecycledHeaders, maxRecycledHeaders + 1, 5000} {
		x := &exchange{header: http.Header{}}
		for i := range n {
			x.header["X-H"+strconv.Itoa(i)] = []string{"v"}
		}
		x.out.Method = http.MethodPost
		x.reset()
		if kept := x.header != nil; kept != (n <= maxRecycledHeaders) || len(x.header) != 0 || x.out.Method != "" {
			t.Errorf("after %d headers: map kept %v with %d entries, method %q; want kept only up to %d, empty",
				n, kept, len(x.header), x.out.Method, maxRecycledHeaders)
		}
	}
}
