package proxy

import (
	"sync"
	"time"
)

// The retry budget (docs/operations.md, "Retries"): retries started in the last
// budgetWindow seconds may be at most budgetPercent of the requests
// received in that time, or budgetMin if that is more. Envoy bounds its
// retries the same way: without a budget, a failing upstream receives
// every request retries+1 times, just when it can least take them.
const (
	budgetWindow  = 10 // seconds, one slot each
	budgetPercent = 20
	budgetMin     = 3
)

// retryBudget counts the requests and retries of the last budgetWindow
// seconds, by second of the clock. A request takes the lock for a few
// additions; the sums are made only when a retry is asked for.
type retryBudget struct {
	clock Clock

	mu    sync.Mutex
	slots [budgetWindow]budgetSlot
}

// budgetSlot is one second's count; second tells whether it is stale.
type budgetSlot struct {
	second            int64
	requests, retries int
}

func newRetryBudget(clock Clock) *retryBudget { return &retryBudget{clock: clock} }

// slot returns the current second's slot, emptied if it held an older
// second. b.mu is held.
func (b *retryBudget) slot(now int64) *budgetSlot {
	s := &b.slots[(now%budgetWindow+budgetWindow)%budgetWindow] // a clock before 1970 too
	if s.second != now {
		*s = budgetSlot{second: now}
	}
	return s
}

// request counts a request received at now: the caller's clock reading,
// which it keeps as the request's arrival, so that a request reads the
// clock once.
func (b *retryBudget) request(now time.Time) {
	sec := now.Unix()
	b.mu.Lock()
	b.slot(sec).requests++
	b.mu.Unlock()
}

// take counts a retry and reports true when the budget has room for it,
// or reports false and counts nothing.
func (b *retryBudget) take() bool {
	now := b.clock.Now().Unix()
	b.mu.Lock()
	defer b.mu.Unlock()
	var requests, retries int
	for _, s := range b.slots {
		if s.second > now-budgetWindow && s.second <= now {
			requests += s.requests
			retries += s.retries
		}
	}
	if retries >= max(budgetMin, requests*budgetPercent/100) {
		return false
	}
	b.slot(now).retries++
	return true
}
