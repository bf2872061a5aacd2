package tokencache

import "time"

// Expiry is when the token held now expires, as the endpoint said; zero
// when none is held. It is for reports (dinie-auth-proxy --check), never
// for deciding whether to use the token: Token decides that.
func (c *Cache) Expiry() time.Time {
	if t := c.current.Load(); t != nil {
		return t.expiry
	}
	return time.Time{}
}
