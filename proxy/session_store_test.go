package proxy

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// handClock is a clock that the test moves by hand.
type handClock struct{ now time.Time }

func (c *handClock) Now() time.Time                                   { return c.now }
func (c *handClock) Sleep(ctx context.Context, _ time.Duration) error { return ctx.Err() }

func newStore(max int) (*sessionTokens, *handClock, prometheus.Gauge) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "fake_session_tokens"})
	c := &handClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	return newSessionTokens(max, c, g), c, g
}

func TestSessionTokensAreForgottenWhenTheyExpire(t *testing.T) {
	s, clock, gauge := newStore(10)
	s.remember("fake-customer-token-a", clock.now.Add(time.Minute))
	s.remember("fake-customer-token-b", clock.now.Add(2*time.Minute))
	if !s.has("fake-customer-token-a") || !s.has("fake-customer-token-b") || s.has("fake-customer-token-c") {
		t.Fatal("remembered tokens not found, or another one found")
	}
	clock.now = clock.now.Add(time.Minute)
	if s.has("fake-customer-token-a") || !s.has("fake-customer-token-b") {
		t.Error("at a's expiry: want a forgotten, b still there")
	}
	if v := testutil.ToFloat64(gauge); v != 1 {
		t.Errorf("gauge = %v, want 1", v)
	}
}

// At most max are held; the soonest to expire goes first, whatever the
// order they came in.
func TestSessionTokensBeyondTheBoundDropTheSoonestToExpire(t *testing.T) {
	s, clock, gauge := newStore(3)
	for i, minutes := range []int{30, 10, 20} {
		s.remember(fmt.Sprintf("fake-customer-token-%d", i), clock.now.Add(time.Duration(minutes)*time.Minute))
	}
	s.remember("fake-customer-token-3", clock.now.Add(40*time.Minute))
	for i, want := range []bool{true, false, true, true} {
		if got := s.has(fmt.Sprintf("fake-customer-token-%d", i)); got != want {
			t.Errorf("token %d held %v, want %v", i, got, want)
		}
	}
	if v := testutil.ToFloat64(gauge); v != 3 {
		t.Errorf("gauge = %v, want 3", v)
	}
	// Many more: the bound holds.
	for i := range 1000 {
		s.remember(fmt.Sprintf("fake-many-%d", i), clock.now.Add(time.Duration(i+1)*time.Second))
	}
	if len(s.byHash) != 3 || len(s.expiry) != 3 || testutil.ToFloat64(gauge) != 3 {
		t.Errorf("%d tokens held, %d in the heap, want 3", len(s.byHash), len(s.expiry))
	}
	if !s.has("fake-many-999") || s.has("fake-many-996") {
		t.Error("the latest to expire were not the ones kept")
	}
}

// The same token issued again keeps one entry, with the later expiry.
func TestSessionTokenRememberedTwiceIsOneEntry(t *testing.T) {
	s, clock, _ := newStore(10)
	s.remember("fake-customer-token", clock.now.Add(time.Minute))
	s.remember("fake-customer-token", clock.now.Add(time.Hour))
	clock.now = clock.now.Add(2 * time.Minute)
	if !s.has("fake-customer-token") || len(s.byHash) != 1 {
		t.Errorf("held %v with %d entries, want held with 1", s.has("fake-customer-token"), len(s.byHash))
	}
}

// Only hashes are kept: no token in the store's memory.
func TestSessionTokensKeepNoToken(t *testing.T) {
	s, clock, _ := newStore(10)
	s.remember("fake-customer-token-secretish", clock.now.Add(time.Minute))
	if dump := fmt.Sprintf("%+v %+v", s.byHash, s.expiry); strings.Contains(dump, "secretish") {
		t.Error("the store holds the token itself")
	}
}
