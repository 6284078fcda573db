package ingress

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the proxy's counters, label values resolved once so that
// counting a request costs no map lookup.
type metrics struct {
	requests  *prometheus.CounterVec
	responses *prometheus.CounterVec
	retries   prometheus.Counter
	warnings  prometheus.Gauge

	proxied, redirected, notFound, noEndpoint, badGateway, refused prometheus.Counter
	// class holds the counters of endpoint answers by status class
	// (index 1 for 1xx ... 5 for 5xx, 0 for anything else).
	class [6]prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "berth", Subsystem: "ingress", Name: "requests_total",
			Help: "Requests taken, by what became of them: proxied (an endpoint answered), redirect (to HTTPS), " +
				"not_found (no route), no_endpoint (503: the backend has no ready endpoint), " +
				"bad_gateway (502: no endpoint could be reached), refused (405: CONNECT).",
		}, []string{"result"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "berth", Subsystem: "ingress", Name: "endpoint_responses_total",
			Help: "Responses of endpoints, by status class (2xx, 3xx, 4xx, 5xx, 1xx, other).",
		}, []string{"class"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "berth", Subsystem: "ingress", Name: "retries_total",
			Help: "Requests sent to another endpoint after one could not be reached.",
		}),
		warnings: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "berth", Subsystem: "ingress", Name: "warnings",
			Help: "Problems of the Ingress being served (conflicting rules, certificates that do not parse, ...).",
		}),
	}
	m.proxied = m.requests.WithLabelValues("proxied")
	m.redirected = m.requests.WithLabelValues("redirect")
	m.notFound = m.requests.WithLabelValues("not_found")
	m.noEndpoint = m.requests.WithLabelValues("no_endpoint")
	m.badGateway = m.requests.WithLabelValues("bad_gateway")
	m.refused = m.requests.WithLabelValues("refused")
	for i, name := range []string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"} {
		m.class[i] = m.responses.WithLabelValues(name)
	}
	return m
}

// response counts an endpoint's answer.
func (m *metrics) response(res *http.Response) error {
	m.proxied.Inc()
	c := res.StatusCode / 100
	if c < 1 || c >= len(m.class) {
		c = 0
	}
	m.class[c].Inc()
	return nil
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.responses, m.retries, m.warnings}
}
