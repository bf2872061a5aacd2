package tunnel

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

func newGauge(reg prometheus.Registerer) (*prometheus.GaugeVec, error) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "dinie_proxy_tunnels_open",
		Help: "Tunnels open now, by kind: plain, intercepted, passthrough (limits.max_tunnels bounds them together).",
	}, []string{"kind"})
	if reg == nil {
		return g, nil
	}
	if err := reg.Register(g); err != nil {
		return nil, fmt.Errorf("tunnel: register metrics: %w", err)
	}
	return g, nil
}
